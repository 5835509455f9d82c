'use strict'
// waitForPeers, status().peers[].ackedSeq and readYourWrites({ quorum })
// (API.md Next; issue 13) over real `ws` sockets on 127.0.0.1: three
// replicators in this process, a full mesh, heartbeats of 50 ms. A partition
// drops every frame to and from a peer (the sockets stay open, as in a real
// network partition). Bounded: each wait has its own timeout.
const test = require('node:test')
const assert = require('node:assert/strict')
const http = require('node:http')
const { WebSocketServer, WebSocket } = require('ws')
const express = require('express')
const { Replicator } = require('..')

const T = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, v TEXT) STRICT;`
}
const IDS = [1, 2, 3]
const cut = new Set() // partitioned peer ids
const nodes = new Map()
const servers = []
const sockets = []

function link (from, to, ws) {
  const r = nodes.get(from)
  r.addPeer(to, (frame) => {
    if (cut.has(from) || cut.has(to) || ws.readyState !== WebSocket.OPEN) return
    ws.send(frame)
  })
  ws.on('message', (frame) => {
    if (cut.has(from) || cut.has(to)) return
    try { r.applyPatches(frame) } catch {}
  })
}

test.before(async () => {
  for (const id of IDS) {
    const r = new Replicator({ path: ':memory:', peerId: id, heartbeatMs: 50, clusterKey: 'k' })
    r.migrate([T])
    nodes.set(id, r)
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    await new Promise((resolve) => wss.once('listening', resolve))
    wss.on('connection', (ws, req) => {
      const other = Number(new URL(req.url, 'http://x').searchParams.get('peer'))
      sockets.push(ws)
      link(id, other, ws)
    })
    servers.push({ id, wss, port: wss.address().port })
  }
  const opens = []
  for (const s of servers) {
    for (const id of IDS) {
      if (id <= s.id) continue
      const ws = new WebSocket(`ws://127.0.0.1:${s.port}/?peer=${id}`)
      sockets.push(ws)
      opens.push(new Promise((resolve, reject) => {
        ws.once('open', () => { link(id, s.id, ws); resolve() })
        ws.once('error', reject)
      }))
    }
  }
  await Promise.all(opens)
})

test.after(async () => {
  for (const r of nodes.values()) await r.close({ timeoutMs: 0 }).catch(() => {})
  for (const ws of sockets) ws.terminate()
  for (const s of servers) s.wss.close()
})

const a = () => nodes.get(1)

test('quorum and all resolve once pings show the peers hold the write; ackedSeq follows', async () => {
  const token = a().upsert('t', { id: 1, v: 'x' })
  const seq = Number(token.split('.')[1])
  await a().waitForPeers(token, 'quorum')
  await a().waitForPeers(token, { level: 'all', timeoutMs: 3000 })
  await a().waitForPeers(token, { peers: [2, 3], timeoutMs: 3000 })
  await a().waitForPeers(token, 2)
  for (const p of a().status().peers) assert.ok(p.ackedSeq >= seq, JSON.stringify(p))
  // A token of another origin: peer 2 holds its own writes, peer 3 acks them.
  const t2 = nodes.get(2).upsert('t', { id: 2, v: 'y' })
  await a().waitForPeers(t2, { level: 'all', timeoutMs: 3000 })
})

test('while a peer is partitioned: all and that peer time out with E_TIMEOUT, quorum resolves', async () => {
  cut.add(3)
  try {
    const token = a().upsert('t', { id: 10, v: 'partitioned' })
    await a().waitForPeers(token, { level: 'quorum', timeoutMs: 3000 })
    const t0 = Date.now()
    await assert.rejects(a().waitForPeers(token, { level: 'all', timeoutMs: 300 }), (e) => {
      assert.equal(e.code, 'E_TIMEOUT')
      assert.ok(e instanceof Error)
      assert.match(e.message, /reached 1 of/)
      return true
    })
    assert.ok(Date.now() - t0 >= 290)
    await assert.rejects(a().waitForPeers(token, { peers: [3], timeoutMs: 200 }), { code: 'E_TIMEOUT' })
    await assert.rejects(a().waitForPeers(token, { count: 2, timeoutMs: 200 }), { code: 'E_TIMEOUT' })
    const seq = Number(token.split('.')[1])
    assert.ok(a().status().peers.find((p) => p.peerId === 3).ackedSeq < seq)
    // Two of three partitioned from 1: no quorum either.
    cut.add(2)
    const t2 = a().upsert('t', { id: 11, v: 'alone' })
    await assert.rejects(a().waitForPeers(t2, { timeoutMs: 300 }), { code: 'E_TIMEOUT' })
    cut.delete(2)
    cut.delete(3)
    // Healed: the same writes reach everyone (gap repair) and the waits resolve.
    await a().waitForPeers(t2, { level: 'all', timeoutMs: 5000 })
    assert.equal(nodes.get(3).get('SELECT v FROM t WHERE id = 11').v, 'alone')
  } finally {
    cut.clear()
  }
})

test('waitForPeers checks its arguments', async () => {
  await assert.rejects(a().waitForPeers('nope'), { name: 'TypeError', code: 'E_ARG' })
  await assert.rejects(a().waitForPeers('1.1', { level: 'most' }), { name: 'RangeError', code: 'E_ARG' })
  await assert.rejects(a().waitForPeers('1.1', { count: 1, level: 'all' }), { name: 'RangeError' })
  await assert.rejects(a().waitForPeers('1.1', { timeoutMs: -1 }), { name: 'RangeError' })
  await a().waitForPeers('1.0', { count: 0 })
})

test('readYourWrites({ quorum: true }) holds the response until a quorum holds the write, 503 E_TIMEOUT otherwise', async () => {
  const app = express()
  app.use(express.json())
  app.post('/t', a().readYourWrites({ quorum: true, waitForPeers: { level: 'quorum', timeoutMs: 400 } }), (req, res) => {
    const token = a().upsert('t', { id: req.body.id, v: req.body.v })
    res.set('x-quilt-token', token)
    res.status(201).json({ token })
  })
  const server = http.createServer(app)
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${server.address().port}/t`
  const post = (body) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  try {
    const ok = await post({ id: 20, v: 'quorum' })
    assert.equal(ok.status, 201)
    const { token } = await ok.json()
    // When the response came, a quorum (1 and at least one other) held it.
    const holders = [2, 3].filter((id) => nodes.get(id).get('SELECT v FROM t WHERE id = 20'))
    assert.ok(holders.length >= 1, `token ${token} held by ${holders}`)
    cut.add(2)
    cut.add(3)
    const late = await post({ id: 21, v: 'no quorum' })
    assert.equal(late.status, 503)
    const body = await late.json()
    assert.equal(body.error, 'E_TIMEOUT')
    assert.match(body.token, /^1\.\d+$/)
  } finally {
    cut.clear()
    server.close()
  }
})
