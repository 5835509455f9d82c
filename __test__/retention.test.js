'use strict'
// Retention (purge, "gone" answers, E_GONE), the snapshot cover, and clock drift.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const SCHEMA = [{
  up: `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);`
}]
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-ret-'))

function net () {
  const q = []
  return {
    link (a, b) {
      a.addPeer(b.peerId, (f) => q.push([b, f]))
      b.addPeer(a.peerId, (f) => q.push([a, f]))
    },
    pump (reps, rounds = 10) {
      for (let i = 0; i < rounds; i++) {
        for (const r of reps) r.tick()
        while (q.length) { const [to, f] = q.shift(); to.applyPatches(f) }
      }
    }
  }
}

test('purged ranges are answered gone; the receiver reports E_GONE once and stops asking', async () => {
  const dir = tmp()
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0, retentionMs: 0 })
  a.migrate(SCHEMA)
  for (let i = 0; i < 10; i++) a.upsert('t', { id: i, v: String(i) })
  await new Promise((resolve) => setTimeout(resolve, 5))
  a.tick()
  assert.equal(a.get('SELECT count(*) AS n FROM t_patches').n, 0, 'old patches purged')
  assert.equal(a.all('SELECT * FROM t').length, 10, 'rows stay')

  const c = new Replicator({ path: path.join(dir, 'c.db'), peerId: 3, heartbeatMs: 0 })
  c.migrate(SCHEMA)
  const errors = []
  c.on('error', (e) => errors.push(e))
  const n = net()
  n.link(a, c)
  n.pump([a, c], 5)
  assert.equal(errors.length, 1)
  assert.equal(errors[0].code, 'E_GONE')
  assert.match(errors[0].message, /snapshot/)
  const asked = Number(/quilt_retransmissions_total\{kind="requested"\} (\d+)/.exec(c.metrics())[1])
  n.pump([a, c], 10)
  assert.equal(Number(/quilt_retransmissions_total\{kind="requested"\} (\d+)/.exec(c.metrics())[1]), asked, 'no more requests')
  assert.equal(errors.length, 1)
  await a.close({ timeoutMs: 0 })
  await c.close({ timeoutMs: 0 })
})

test('retention never purges what the last snapshot does not cover, nor what is not contiguous', async () => {
  const dir = tmp()
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0, retentionMs: 0, snapshot: { url: `file://${path.join(dir, 'store')}` } })
  a.migrate(SCHEMA)
  for (let i = 0; i < 5; i++) a.upsert('t', { id: i, v: String(i) })
  await a.snapshot()
  for (let i = 5; i < 8; i++) a.upsert('t', { id: i, v: String(i) })
  await new Promise((resolve) => setTimeout(resolve, 5))
  a.tick()
  assert.deepEqual(a.all('SELECT _sequenceId AS s FROM t_patches ORDER BY s').map((r) => r.s), [6, 7, 8])
  // A restarted peer still counts purged seqs as held.
  await a.close({ timeoutMs: 0 })
  const again = new Replicator({ path: path.join(dir, 'a.db'), heartbeatMs: 0 })
  assert.equal(again.status().seq, 8)
  assert.equal(again.upsert('t', { id: 9, v: 'x' }), '1.9')
  await again.close({ timeoutMs: 0 })
})

/** Rewrite the first 64-bit stamp (msgpack 0xcf) equal to `at` in a frame without MAC. */
function shiftStamp (frame, at, by) {
  const buf = Buffer.from(frame)
  for (let i = 9; i + 9 <= buf.length; i++) {
    if (buf[i] === 0xcf && buf.readBigUInt64BE(i + 1) === BigInt(at)) {
      buf.writeBigUInt64BE(BigInt(at) + BigInt(by), i + 1)
      return buf
    }
  }
  throw new Error('stamp not found in frame')
}

test('frames stamped beyond maxDriftMs are refused with E_DRIFT, counted, and fetched again later', async () => {
  const dir = tmp()
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0 })
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0, maxDriftMs: 1000 })
  a.migrate(SCHEMA)
  b.migrate(SCHEMA)
  const sent = []
  a.addPeer(2, (f) => sent.push(f))
  a.upsert('t', { id: 1, v: 'one' })
  a.flush()
  const at = a.get('SELECT _patchedAt AS at FROM t_patches').at
  const frame = sent.find((f) => { try { shiftStamp(f, at, 0); return true } catch { return false } })
  const future = shiftStamp(frame, at, 10 * 60 * 1000 * 8192)
  const before = JSON.stringify(b.all('SELECT * FROM t'))
  assert.throws(() => b.applyPatches(future), { code: 'E_DRIFT' })
  assert.equal(JSON.stringify(b.all('SELECT * FROM t')), before)
  assert.match(b.metrics(), /quilt_rejected_frames_total\{reason="E_DRIFT"\} 1/)
  // The refused seq is known to exist: the gap protocol asks for it again.
  const asked = []
  b.addPeer(1, (f) => asked.push(f))
  b.tick()
  b.tick()
  for (const f of asked) a.applyPatches(f)
  for (const f of sent.splice(0)) { try { b.applyPatches(f) } catch (e) { if (e.code !== 'E_DRIFT') throw e } }
  assert.deepEqual(b.all('SELECT * FROM t'), [{ id: 1, v: 'one' }])
  // The local clock was not dragged into the future.
  b.upsert('t', { id: 2, v: 'b' })
  const bAt = b.get('SELECT _patchedAt AS at FROM t_patches WHERE _peerId = 2').at
  assert.ok(bAt < at + 5 * 60 * 1000 * 8192)
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})
