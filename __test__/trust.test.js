'use strict'
// Issue 10, through the public API: one history per identity (a file
// restored from an older copy, two files with one peerId), retention that
// waits for known peers, and control messages that cannot break a peer.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')
const { controlFrame } = require('./helpers/frames.js')

const SCHEMA = [{
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT) STRICT;`
}]

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-trust-'))
const open = (file, opts = {}) => {
  const r = new Replicator({ path: file, heartbeatMs: 0, ...opts })
  r.migrate(SCHEMA)
  return r
}
const rows = (r) => r.all('SELECT id, v FROM t ORDER BY id')

/** An in-process network: queued frames, delivered by `settle`. */
function mesh (nodes, links) {
  const queue = []
  const sends = new Map()
  for (const [a, b] of links) {
    // Two files with one id: a send to that id reaches them in turn.
    const key = `${a}->${nodes[b].status().peerId}`
    if (!sends.has(key)) {
      const targets = []
      let seed = 7
      const pick = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return targets[seed % targets.length] }
      sends.set(key, targets)
      nodes[a].addPeer(nodes[b].status().peerId, (f) => queue.push([pick(), f]))
    }
    sends.get(key).push(b)
  }
  return function settle (rounds = 6, onStep) {
    for (const n of nodes) n.flush()
    for (let r = 0; r < rounds; r++) {
      for (const n of nodes) n.tick()
      let steps = 0
      while (queue.length && steps++ < 100000) {
        const [to, f] = queue.shift()
        try { nodes[to].applyPatches(f) } catch {}
        if (onStep) onStep()
      }
    }
  }
}

function errorsOf (r) {
  const seen = []
  r.on('error', (e) => seen.push(e))
  return seen
}

test('a file restored from an older copy: both histories survive, every peer converges', async () => {
  const dir = tmp()
  const fa = path.join(dir, 'a.db')
  let a = open(fa, { peerId: 30 })
  a.upsert('t', { id: 1, v: 'one' })
  a.upsert('t', { id: 2, v: 'two' })
  await a.close({ timeoutMs: 0 })
  fs.copyFileSync(fa, path.join(dir, 'backup.db'))
  a = open(fa)
  const b = open(path.join(dir, 'b.db'), { peerId: 2 })
  const first = mesh([a, b], [[0, 1], [1, 0]])
  first(3)
  for (let i = 3; i <= 5; i++) a.upsert('t', { id: i, v: 'acknowledged by b' })
  first(2)
  assert.equal(rows(b).length, 5, 'b received 3..5')
  await a.close({ timeoutMs: 0 })
  // The disk goes back: restore the backup over the file.
  for (const ext of ['', '-wal', '-shm']) fs.rmSync(fa + ext, { force: true })
  fs.copyFileSync(path.join(dir, 'backup.db'), fa)
  a = open(fa)
  assert.equal(a.status().peerId, 30)
  const errors = errorsOf(a).concat()
  const bErrors = errorsOf(b)
  const token = a.upsert('t', { id: 9, v: 'written after the restore' })
  assert.equal(token, '30.3', 'the restored file reuses seq 3 (it cannot know)')
  b.removePeer(30)
  const settle = mesh([a, b], [[0, 1], [1, 0]])
  settle(10)
  assert.deepEqual(rows(a).map((r) => r.id), [1, 2, 3, 4, 5, 9])
  assert.deepEqual(rows(a), rows(b))
  assert.equal(await b.waitFor(token, 10), true)
  assert.ok(a.status().reissued + b.status().reissued >= 1, 'the clash shows in status()')
  const codes = [...errors, ...bErrors].map((e) => e.code)
  assert.ok(codes.includes('E_SEQ'), `an E_SEQ event: ${codes}`)
  // Writes go on past everything the cluster holds, and replicate.
  assert.equal(a.upsert('t', { id: 10, v: 'next' }), '30.6')
  settle(3)
  assert.deepEqual(rows(a), rows(b))
  assert.equal(b.status().peers.find((p) => p.peerId === 30).missing, 0)
  for (const r of [a, b]) await r.close({ timeoutMs: 0 })
})

test('two files with one peerId write different rows: every peer ends with the union', async () => {
  const dir = tmp()
  const fa = path.join(dir, 'a.db')
  const a0 = open(fa, { peerId: 30 })
  a0.upsert('t', { id: 1, v: 'base' })
  await a0.close({ timeoutMs: 0 })
  fs.copyFileSync(fa, path.join(dir, 'clone.db'))
  const a = open(fa)
  const c = open(path.join(dir, 'clone.db'))
  const hub = open(path.join(dir, 'hub.db'), { peerId: 7 })
  const other = open(path.join(dir, 'other.db'), { peerId: 8 })
  for (let i = 0; i < 20; i++) {
    a.upsert('t', { id: 100 + i, v: 'a' })
    c.upsert('t', { id: 200 + i, v: 'clone' })
  }
  // hub talks to both files (one id, two links), other only to the hub.
  const nodes = [a, c, hub, other]
  const settle = mesh(nodes, [[0, 2], [2, 0], [1, 2], [2, 1], [3, 2], [2, 3]])
  settle(60)
  const want = [1, ...Array.from({ length: 20 }, (_, i) => 100 + i), ...Array.from({ length: 20 }, (_, i) => 200 + i)]
  for (const n of [hub, other, a]) assert.deepEqual(rows(n).map((r) => r.id), want)
  assert.deepEqual(rows(hub), rows(other))
  assert.deepEqual(rows(hub), rows(a))
  for (const r of nodes) await r.close({ timeoutMs: 0 })
})

test('retention shorter than a partition purges nothing a known peer lacks; removePeer releases it', async () => {
  const dir = tmp()
  const a = open(path.join(dir, 'a.db'), { peerId: 1, retentionMs: 0 })
  const b = open(path.join(dir, 'b.db'), { peerId: 2, retentionMs: 0 })
  const bErrors = errorsOf(b)
  const settle = mesh([a, b], [[0, 1], [1, 0]])
  settle(2)
  // Partition: a writes and ticks long past retentionMs; b hears nothing.
  a.removePeer(2)
  a.addPeer(2, () => {})
  for (let i = 0; i < 30; i++) a.upsert('t', { id: i, v: 'during the partition' })
  await new Promise((resolve) => setTimeout(resolve, 20))
  for (let i = 0; i < 10; i++) a.tick()
  assert.equal(a.get('SELECT count(*) AS n FROM t_patches').n, 30, 'nothing purged while peer 2 lacks it')
  // Heal.
  a.removePeer(2)
  const heal = mesh([a, b], [[0, 1], [1, 0]])
  heal(6)
  assert.equal(rows(b).length, 30)
  assert.ok(!bErrors.some((e) => e.code === 'E_GONE'))
  for (let i = 0; i < 3; i++) a.tick()
  assert.equal(a.get('SELECT count(*) AS n FROM t_patches WHERE _peerId = 1').n, 0, 'purged once acknowledged')
  // maxRetentionMs purges anyway, with an event naming the peer.
  const c = open(path.join(dir, 'c.db'), { peerId: 3, retentionMs: 0, maxRetentionMs: 0 })
  const cErrors = errorsOf(c)
  c.addPeer(4, () => {})
  c.upsert('t', { id: 1, v: 'x' })
  await new Promise((resolve) => setTimeout(resolve, 5))
  c.tick()
  assert.equal(c.get('SELECT count(*) AS n FROM t_patches').n, 0)
  const ev = cErrors.find((e) => e.code === 'E_RETENTION')
  assert.ok(ev && /\b4\b/.test(ev.message), 'E_RETENTION names peer 4')
  for (const r of [a, b, c]) await r.close({ timeoutMs: 0 })
})

test('one forged ping cannot move our seq, and out-of-range claims are refused', async () => {
  const dir = tmp()
  const a = open(path.join(dir, 'a.db'), { peerId: 5 })
  a.addPeer(9, () => {})
  a.upsert('t', { id: 1, v: 'x' })
  for (const claim of [2n ** 63n - 1n, 2n ** 64n - 1n, 2n ** 53n + 1n]) {
    assert.throws(() => a.applyPatches(controlFrame(9, { ping: { vector: [[5, 0, claim]] } })), { code: 'E_FRAME' })
  }
  assert.throws(() => a.applyPatches(controlFrame(9, { ping: { vector: [[0, 1, 1]] } })), { code: 'E_FRAME' }, 'origin 0')
  assert.throws(() => a.applyPatches(controlFrame(9, { ping: { vector: [[5, 3, 2]] } })), { code: 'E_FRAME' }, 'contiguous above max')
  // In range, but nothing backs it: the seq stays, writes go on.
  a.applyPatches(controlFrame(9, { ping: { vector: [[5, 0, 2n ** 53n]] } }))
  for (let i = 0; i < 30; i++) a.tick()
  assert.equal(a.status().seq, 1)
  assert.equal(a.upsert('t', { id: 2, v: 'y' }), '5.2')
  await a.close({ timeoutMs: 0 })
  const again = open(path.join(dir, 'a.db'))
  assert.equal(again.status().seq, 2, 'nothing persisted from the claim')
  await again.close({ timeoutMs: 0 })
})

test('control messages are bounded: made-up origins, gone from strangers, replayed requests', async () => {
  const dir = tmp()
  const a = open(path.join(dir, 'a.db'), { peerId: 5 })
  const sent = []
  a.addPeer(9, (f) => sent.push(f))
  a.addPeer(8, (f) => sent.push(f))
  for (let i = 0; i < 2000; i++) a.upsert('t', { id: i, v: 'x'.repeat(500) })
  a.flush()
  sent.length = 0
  // "gone" from a peer that was not asked changes nothing.
  const errors = errorsOf(a)
  a.applyPatches(controlFrame(9, { ping: { vector: [[77, 50, 50]] } }))
  a.applyPatches(controlFrame(8, { gone: [{ origin: 77, ranges: [[1, 50]] }] }))
  assert.ok(!errors.some((e) => e.code === 'E_GONE'))
  assert.equal(a.status().peers.find((p) => p.peerId === 77).missing, 50)
  // 60,000 made-up origins in pings: learned only up to a cap, cheap ticks.
  const before = process.memoryUsage().rss
  for (let k = 0; k < 10; k++) {
    const vector = Array.from({ length: 6000 }, (_, i) => [1000 + k * 6000 + i, 1, 1])
    a.applyPatches(controlFrame(9, { ping: { vector } }))
  }
  const t0 = process.hrtime.bigint()
  a.tick()
  const tickMs = Number(process.hrtime.bigint() - t0) / 1e6
  assert.ok(a.status().peers.length <= 16384 + 10, `origins learned: ${a.status().peers.length}`)
  assert.ok(process.memoryUsage().rss - before < 150 * 1024 * 1024, 'memory stays bounded')
  assert.ok(tickMs < 2000, `tick took ${tickMs} ms`)
  // A replayed request is served within a byte budget per heartbeat.
  sent.length = 0
  const req = controlFrame(9, { requests: [{ origin: 5, ranges: [[1, 2000]] }] })
  let bytes = 0
  for (let i = 0; i < 20; i++) {
    a.applyPatches(req)
  }
  for (const f of sent) bytes += f.length
  assert.ok(bytes <= 4.5 * 1024 * 1024, `served ${bytes} bytes in one heartbeat`)
  await a.close({ timeoutMs: 0 })
})

test('a keyed frame is refused by a peer without a key (E_AUTH)', async () => {
  const dir = tmp()
  const a = open(path.join(dir, 'a.db'), { peerId: 5 })
  assert.throws(() => a.applyPatches(controlFrame(9, { ping: { vector: [[9, 1, 1]] } }, 'k')), { code: 'E_AUTH' })
  await a.close({ timeoutMs: 0 })
})

test('kept patches are capped: past maxKeptBytes an E_LIMIT event, nothing held, all fetched after migrate()', async () => {
  const dir = tmp()
  const V2 = [...SCHEMA, { up: 'ALTER TABLE t ADD COLUMN extra TEXT; ALTER TABLE t_patches ADD COLUMN extra TEXT;' }]
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0 })
  a.migrate(V2)
  const b = open(path.join(dir, 'b.db'), { peerId: 2, maxKeptBytes: 4000 })
  const errors = errorsOf(b)
  const settle = mesh([a, b], [[0, 1], [1, 0]])
  for (let i = 0; i < 20; i++) a.upsert('t', { id: i, v: 'v', extra: 'x'.repeat(200) })
  settle(4)
  assert.ok(errors.some((e) => e.code === 'E_LIMIT'), 'E_LIMIT raised')
  const kept = b.status().pending
  assert.ok(kept > 0 && kept < 20, `some kept (${kept}), not all`)
  assert.ok(b.status().peers.find((p) => p.peerId === 1).missing > 0, 'the rest is not held')
  assert.ok(rows(b).length < 20)
  b.migrate(V2)
  settle(8)
  assert.deepEqual(b.all('SELECT id, v, extra FROM t ORDER BY id'), a.all('SELECT id, v, extra FROM t ORDER BY id'))
  assert.equal(b.status().pending, 0)
  for (const r of [a, b]) await r.close({ timeoutMs: 0 })
})
