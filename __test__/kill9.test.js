'use strict'
// Guarantee 4 (crash safety): `kill -9` at any moment loses nothing that
// `upsert` returned. Three peers run as child processes (fixtures/peer.js)
// over WebSockets on 127.0.0.1, heartbeatMs 50. Peer 1 writes as fast as it
// can and prints each token after `upsert` returned; peer 2 writes slowly;
// peer 3 only listens. Peer 1 is SIGKILLed mid-stream three times and restarted
// on the same file (the peer id comes from the file); peer 3 is killed and
// restarted once too, while frames pour in. After everything
// converges, the files are opened read-only and every token any peer
// reported must be in every peer's `t_patches` and base table.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')
const { fork } = require('node:child_process')
const Database = require('./helpers/sqlite.js')

const FIXTURE = path.join(__dirname, 'fixtures', 'peer.js')
const HEARTBEAT_MS = 50
const KILLS = 3
const children = new Set()

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function until (what, fn, timeoutMs, everyMs = 50) {
  const end = Date.now() + timeoutMs
  let last
  while (Date.now() < end) {
    last = await fn()
    if (last && last.ok) return last
    await sleep(everyMs)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${JSON.stringify(last && last.why)}`)
}

/** Start a peer; resolves once it printed READY. */
function spawnPeer ({ file, peerId, gen }) {
  const child = fork(FIXTURE, [], {
    env: { ...process.env, QUILT_PEER: JSON.stringify({ path: file, peerId, heartbeatMs: HEARTBEAT_MS, gen }) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc']
  })
  children.add(child)
  const p = { child, file, gen, tokens: [], stderr: '', info: null, exited: null, pending: new Map() }
  p.exited = new Promise((resolve) => child.on('exit', (code, signal) => { children.delete(child); resolve({ code, signal }) }))
  // 'close' fires once stdout and stderr are drained: every line is read.
  p.drained = new Promise((resolve) => child.on('close', resolve))
  child.stderr.on('data', (d) => { p.stderr += d })
  child.on('message', (m) => {
    const waiter = p.pending.get(m.type)
    if (waiter) { p.pending.delete(m.type); waiter(m) }
  })
  const ready = new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout })
    rl.on('line', (line) => {
      if (line.startsWith('TOKEN ')) {
        const [, token, v] = line.split(' ')
        const [peer, seq] = token.split('.').map(Number)
        p.tokens.push({ token, peer, seq, v })
      } else if (line.startsWith('READY ')) {
        p.info = JSON.parse(line.slice(6))
        resolve(p)
      }
    })
    child.on('exit', (code, signal) => { if (!p.info) reject(new Error(`peer exited before READY (${code} ${signal}): ${p.stderr}`)) })
  })
  return ready
}

function ask (p, msg, replyType, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { p.pending.delete(replyType); reject(new Error(`no ${replyType} reply from peer ${p.info && p.info.peerId}`)) }, timeoutMs)
    p.pending.set(replyType, (m) => { clearTimeout(timer); resolve(m) })
    p.child.send(msg)
  })
}

test.after(async () => {
  for (const c of children) c.kill('SIGKILL')
})

test('kill -9 of a writer loses no write whose upsert returned', { timeout: 40000 }, async (t) => {
  const t0 = Date.now()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-kill9-'))
  const files = [1, 2, 3].map((i) => path.join(dir, `peer${i}.db`))
  const peers = await Promise.all([1, 2, 3].map((id) => spawnPeer({ file: files[id - 1], peerId: id, gen: 0 })))
  const announce = () => {
    const list = peers.map((p) => ({ id: p.info.peerId, port: p.info.port }))
    for (const p of peers) if (p.child.connected) p.child.send({ type: 'peers', peers: list })
  }
  announce()
  const status = (p) => ask(p, { type: 'status' }, 'status')
  await until('all links up', async () => {
    const ss = await Promise.all(peers.map(status))
    const ok = ss.every((s) => s.status.peers.filter((x) => x.connected).length === 2)
    return { ok, why: ss.map((s) => s.status.peers.map((x) => [x.peerId, x.connected])) }
  }, 10000)

  peers[0].child.send({ type: 'start', everyMs: 0, burst: 1 })
  peers[1].child.send({ type: 'start', everyMs: 20, burst: 1 })

  // All tokens of peer 1 over its lives, and what each life reported.
  const lives = []
  for (let k = 0; k < KILLS; k++) {
    const w = peers[0]
    const want = 300 + Math.floor(Math.random() * 300)
    await until(`${want} tokens from writer gen ${w.gen}`, () => ({ ok: w.tokens.length >= want, why: w.tokens.length }), 10000, 5)
    await sleep(Math.floor(Math.random() * 40)) // a random moment of the stream
    w.child.kill('SIGKILL')
    const { signal } = await w.exited
    await w.drained
    assert.equal(signal, 'SIGKILL')
    const maxReported = w.tokens.length ? w.tokens[w.tokens.length - 1].seq : 0
    lives.push({ gen: w.gen, tokens: w.tokens, maxReported })

    // Restart on the same file, without a peer id: it must come from the file.
    const next = await spawnPeer({ file: files[0], peerId: undefined, gen: w.gen + 1 })
    assert.equal(next.info.peerId, 1, 'the restarted peer keeps its stored peer id')
    assert.ok(next.info.seq >= maxReported, `restarted at seq ${next.info.seq}, but seq ${maxReported} was reported before the kill`)
    peers[0] = next
    announce()
    next.child.send({ type: 'start', everyMs: 0, burst: 1 })

    if (k === 0) {
      // The listener too, while frames pour in (kill -9 inside applyPatches).
      await sleep(100 + Math.floor(Math.random() * 100))
      peers[2].child.kill('SIGKILL')
      await peers[2].exited
      const p3 = await spawnPeer({ file: files[2], peerId: undefined, gen: 1 })
      assert.equal(p3.info.peerId, 3, 'the restarted listener keeps its stored peer id')
      peers[2] = p3
      announce()
    }
  }
  // The last life writes a little, then every writer stops.
  const last = peers[0]
  await until('tokens after the last restart', () => ({ ok: last.tokens.length >= 200, why: last.tokens.length }), 10000, 5)
  const stops = await Promise.all([ask(peers[0], { type: 'stop' }, 'stopped'), ask(peers[1], { type: 'stop' }, 'stopped')])
  lives.push({ gen: last.gen, tokens: last.tokens, maxReported: stops[0].seq })

  // Token seqs of peer 1 strictly increase across lives (no seq reused).
  const all1 = lives.flatMap((l) => l.tokens)
  for (let i = 1; i < all1.length; i++) assert.ok(all1[i].seq > all1[i - 1].seq, `token ${all1[i].token} after ${all1[i - 1].token}`)

  // Converge: same rows everywhere, and every vector holds both writers' last seq.
  const finalSeq = { 1: stops[0].seq, 2: stops[1].seq }
  await until('convergence', async () => {
    const ss = await Promise.all(peers.map(status))
    const why = []
    for (const s of ss) {
      for (const [origin, seq] of Object.entries(finalSeq)) {
        if (Number(origin) === s.status.peerId) continue
        const o = s.status.peers.find((x) => x.peerId === Number(origin))
        if (!o || o.contiguousSeq < seq) why.push(`peer ${s.status.peerId} holds ${origin}.${o ? o.contiguousSeq : 0} < ${seq}`)
      }
      if (s.digest !== ss[0].digest) why.push(`peer ${s.status.peerId} rows differ (${s.rows} vs ${ss[0].rows})`)
      if (s.applyErrors.length) why.push(`peer ${s.status.peerId} applyPatches threw: ${s.applyErrors[0]}`)
    }
    return { ok: why.length === 0, why }
  }, 15000, 100)

  await Promise.all(peers.map(async (p) => { p.child.send({ type: 'close' }); return p.exited }))

  const reported = [...lives.flatMap((l) => l.tokens), ...peers[1].tokens]
  for (const file of files) {
    const db = new Database(file, { readonly: true, fileMustExist: true })
    try {
      const patch = db.prepare('SELECT v, n FROM t_patches WHERE _peerId = ? AND _sequenceId = ?')
      const row = db.prepare('SELECT v, n FROM t WHERE id = ?')
      const lost = []
      for (const w of reported) {
        const p = patch.get(w.peer, w.seq)
        const r = row.get(w.peer * 1e6 + w.seq)
        if (!p || p.v !== w.v || !r || r.v !== w.v) lost.push(`${w.token} (${w.v}): patch ${JSON.stringify(p)} row ${JSON.stringify(r)}`)
      }
      assert.deepEqual(lost.slice(0, 10), [], `${lost.length} of ${reported.length} reported writes missing in ${path.basename(file)}`)
    } finally {
      db.close()
    }
  }
  fs.rmSync(dir, { recursive: true, force: true })
  t.diagnostic(`kills=${KILLS} reported=${reported.length} (peer 1 lives: ${lives.map((l) => `gen${l.gen}:${l.tokens.length} up to ${l.maxReported}`).join(', ')}) ms=${Date.now() - t0}`)
})
