'use strict'
// Captured SQL and transaction(fn) across two processes: each peer is a
// child process with its own file; frames travel through the parent. A
// transaction on one side arrives on the other as one 'change' event, and
// both converge on the same rows. Bounded: 30 s; temp dir removed.
const test = require('node:test')
const assert = require('node:assert/strict')
const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const PEER = path.join(__dirname, 'fixtures', 'sql-peer.js')

function start (id, dir, peers) {
  const child = fork(PEER, [], { env: { ...process.env, PEER_ID: String(id), DB: path.join(dir, `p${id}.db`) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const inbox = []
  let waiter = null // { type, resolve }: one wait at a time per peer
  const deliver = () => {
    if (!waiter) return
    const i = inbox.findIndex((m) => m.type === waiter.type)
    if (i < 0) return
    const w = waiter
    waiter = null
    w.resolve(inbox.splice(i, 1)[0])
  }
  child.on('message', (m) => {
    if (m.type === 'out') { const p = peers.get(m.to); if (p) p.child.send({ type: 'frame', frame: m.frame }); return }
    inbox.push(m)
    deliver()
  })
  const next = (type, timeoutMs = 10000) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => { waiter = null; reject(new Error(`peer ${id}: no ${type}`)) }, timeoutMs)
    waiter = { type, resolve: (m) => { clearTimeout(timer); resolve(m) } }
    deliver()
  })
  const p = { id, child, inbox, next }
  peers.set(id, p)
  return p
}

test('a transaction in one process arrives whole in another, as one change event', { timeout: 30000 }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-sql-children-'))
  const peers = new Map()
  const a = start(1, dir, peers)
  const b = start(2, dir, peers)
  try {
    await a.next('ready')
    await b.next('ready')
    a.child.send({ type: 'peer', id: 2 })
    b.child.send({ type: 'peer', id: 1 })
    a.child.send({ type: 'tx', rows: [[1, 'one'], [2, 'two'], [3, 'three']] })
    await a.next('done')
    // b sees the transaction's 7 patches (3 inserts, 3 updates, 1 upsert) in one event.
    let ev
    do ev = await b.next('change'); while (!ev.changes.some((c) => c.origin === 1))
    assert.deepEqual(ev.changes.map((c) => c.key.id).sort((x, y) => x - y), [1, 1, 2, 2, 3, 3, 1003])
    b.child.send({ type: 'sql', sql: 'UPDATE t SET a = ? WHERE id = ?', params: ['changed-by-2', 2] })
    const done = await b.next('done')
    assert.equal(done.res.changes, 1)
    assert.match(done.res.token, /^2\.1$/)
    let dumps
    for (let i = 0; i < 100; i++) {
      a.child.send({ type: 'dump' })
      b.child.send({ type: 'dump' })
      dumps = [await a.next('dump'), await b.next('dump')]
      if (JSON.stringify(dumps[0].rows) === JSON.stringify(dumps[1].rows) && dumps[0].rows.length === 4 && dumps[0].rows[1].a === 'changed-by-2') break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    assert.deepEqual(dumps[0].rows, dumps[1].rows)
    assert.deepEqual(dumps[0].rows.map((r) => [r.id, r.a, r.b]), [[1, 'one', 10], [2, 'changed-by-2', 20], [3, 'three', 30], [1003, 'marker', null]])
  } finally {
    for (const p of peers.values()) { p.child.send({ type: 'close' }); }
    await Promise.all([...peers.values()].map((p) => new Promise((resolve) => { if (p.child.exitCode !== null) resolve(); else p.child.on('exit', resolve) })))
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
