'use strict'
// Snapshots against file:// and a real S3 server (moto on 127.0.0.1).
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { Replicator } = require('..')
const moto = require('./helpers/moto.js')

const SCHEMA = [{
  up: `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);`
}]

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-snap-'))
const sha = (file) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')

function writer (dir, peerId, n, snapshot) {
  const r = new Replicator({ path: path.join(dir, `w${peerId}.db`), peerId, heartbeatMs: 0, snapshot })
  r.migrate(SCHEMA)
  const rows = []
  for (let i = 0; i < n; i++) rows.push({ id: i, v: `value-${i}-${'x'.repeat(40)}` })
  r.upsertMany('t', rows)
  return r
}

async function backends () {
  const dir = tmp()
  const list = [{ name: 'file', url: `file://${path.join(dir, 'store')}`, options: undefined }]
  const s3 = await moto.s3()
  if (s3.endpoint) {
    const bucket = `quilt-${crypto.randomBytes(4).toString('hex')}`
    await moto.createBucket(s3.endpoint, bucket)
    list.push({ name: 's3', url: `s3://${bucket}/snaps`, options: moto.s3Options(s3.endpoint) })
  } else if (process.env.CI) {
    throw new Error(`CI needs a real S3 server: ${s3.reason}`)
  } else {
    test.diagnostic(`S3 cases skipped: ${s3.reason}`)
  }
  return list
}

test.after(() => moto.stop())

test('snapshot, list, restore, overwrite refusal, corruption, pruning', async (t) => {
  for (const b of await backends()) {
    await t.test(b.name, async () => {
      const dir = tmp()
      const w = writer(dir, 1, 5000, { url: b.url, options: b.options, keep: 2 })
      const events = []
      w.on('snapshot', (i) => events.push(i))
      const info = await w.snapshot()
      assert.equal(events.length, 1)
      assert.match(info.sha256, /^[0-9a-f]{64}$/)
      assert.ok(info.bytes > 0)
      assert.equal(info.schemaVersion, 1)
      assert.deepEqual(info.seqVector, { 1: 5000 })
      assert.equal(typeof info.createdAt, 'number')
      assert.ok(info.url.startsWith(b.url))

      const dest = path.join(dir, 'restored.db')
      const r = await Replicator.restore({ from: b.url, path: dest, options: b.options })
      assert.equal(r.sha256, info.sha256)
      assert.notEqual(r.peerId, 1)
      const restored = new Replicator({ path: dest, heartbeatMs: 0 })
      assert.notEqual(restored.peerId, 1, 'a restored database takes a new peer id')
      assert.equal(restored.get('SELECT count(*) AS n FROM t').n, 5000)
      assert.equal(restored.status().peers.find((p) => p.peerId === 1).contiguousSeq, 5000)
      await restored.close()

      // Refuses to overwrite without overwrite: true; the file is untouched.
      const before = sha(dest)
      await assert.rejects(Replicator.restore({ from: b.url, path: dest, options: b.options }), { code: 'E_SNAPSHOT' })
      assert.equal(sha(dest), before)

      // Pruning keeps the newest 2.
      w.upsert('t', { id: 1, v: 'changed' })
      await new Promise((resolve) => setTimeout(resolve, 5))
      await w.snapshot()
      await new Promise((resolve) => setTimeout(resolve, 5))
      const last = await w.snapshot()
      const { list } = require('../lib/snapshot.js')
      const all = await list(b.url, b.options)
      assert.equal(all.length, 2)
      assert.equal(all[all.length - 1].id, last.id)

      // overwrite: true replaces the file with the latest snapshot.
      await Replicator.restore({ from: b.url, path: dest, options: b.options, overwrite: true })
      const again = new Replicator({ path: dest, heartbeatMs: 0 })
      assert.equal(again.get('SELECT v FROM t WHERE id = 1').v, 'changed')
      await again.close()
      await w.close({ timeoutMs: 0 })
    })
  }
})

test('a corrupt download gives E_SNAPSHOT and leaves the existing file untouched', async () => {
  const dir = tmp()
  const store = path.join(dir, 'store')
  const w = writer(dir, 3, 2000, { url: `file://${store}` })
  await w.snapshot()
  await w.close({ timeoutMs: 0 })
  const obj = fs.readdirSync(path.join(store, 'snapshots')).find((f) => f.endsWith('.db.zst'))
  const file = path.join(store, 'snapshots', obj)
  const bytes = fs.readFileSync(file)
  bytes[Math.floor(bytes.length / 2)] ^= 0xff
  fs.writeFileSync(file, bytes)
  const dest = path.join(dir, 'existing.db')
  fs.writeFileSync(dest, 'keep me')
  await assert.rejects(Replicator.restore({ from: `file://${store}`, path: dest, overwrite: true }), { code: 'E_SNAPSHOT' })
  assert.equal(fs.readFileSync(dest, 'utf8'), 'keep me')
  // Truncated object
  fs.writeFileSync(file, bytes.subarray(0, 100))
  await assert.rejects(Replicator.restore({ from: `file://${store}`, path: path.join(dir, 'new.db') }), { code: 'E_SNAPSHOT' })
  assert.equal(fs.readdirSync(dir).filter((f) => f.startsWith('new.db')).length, 0)
})

test('a new peer restores from S3, joins, and needs only the frames written after the snapshot', async () => {
  const s3 = await moto.s3()
  let url, options
  if (s3.endpoint) {
    const bucket = `quilt-e2e-${crypto.randomBytes(4).toString('hex')}`
    await moto.createBucket(s3.endpoint, bucket)
    url = `s3://${bucket}/cluster`
    options = moto.s3Options(s3.endpoint)
  } else {
    if (process.env.CI) throw new Error(`CI needs a real S3 server: ${s3.reason}`)
    url = `file://${path.join(tmp(), 'store')}`
  }
  const dir = tmp()
  const peers = [1, 2, 3].map((id) => new Replicator({ path: path.join(dir, `p${id}.db`), peerId: id, heartbeatMs: 0, snapshot: { url, options } }))
  for (const p of peers) p.migrate(SCHEMA)
  const queue = []
  const link = (a, b) => a.addPeer(b.peerId, (f) => queue.push([b, f]))
  for (const a of peers) for (const b of peers) if (a !== b) link(a, b)
  const pump = (reps) => {
    for (let i = 0; i < 30; i++) {
      for (const r of reps) { r.flush(); r.tick() }
      if (!queue.length) break
      while (queue.length) { const [to, f] = queue.shift(); if (!to._closed) to.applyPatches(f) }
    }
  }
  for (let i = 0; i < 300; i++) peers[i % 3].upsert('t', { id: i % 50, v: `w${i}` })
  pump(peers)
  const leader = peers.find((p) => p.isLeader())
  assert.equal(leader.peerId, 1)
  const snap = await leader.snapshot()
  // writes after the snapshot
  for (let i = 0; i < 30; i++) peers[i % 3].upsert('t', { id: 100 + i, v: `after${i}` })
  pump(peers)

  const dest = path.join(dir, 'p4.db')
  const r = await Replicator.restore({ from: url, path: dest, options })
  const p4 = new Replicator({ path: dest, heartbeatMs: 0 })
  assert.equal(p4.peerId, r.peerId)
  let received = 0
  const synced = []
  p4.on('synced', (id) => synced.push(id))
  for (const p of peers) {
    p.addPeer(p4.peerId, (f) => queue.push([p4, f]))
    p4.addPeer(p.peerId, (f) => queue.push([p, f]))
  }
  const orig = p4.applyPatches.bind(p4)
  p4.applyPatches = (f) => { const res = orig(f); received += res.stored; return res }
  pump([...peers, p4])
  const want = peers[0].all('SELECT * FROM t ORDER BY id')
  assert.deepEqual(p4.all('SELECT * FROM t ORDER BY id'), want)
  // Only the 30 patches written after the snapshot crossed the wire.
  assert.equal(received, 30)
  assert.deepEqual(snap.seqVector, { 1: 100, 2: 100, 3: 100 })
  assert.deepEqual(synced.sort(), [1, 2, 3])
  for (const p of [...peers, p4]) await p.close({ timeoutMs: 0 })
})

test('scheduled snapshots: only the leader takes them, and leadership hands over when it goes quiet', async () => {
  const dir = tmp()
  const url = `file://${path.join(dir, 'store')}`
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0, snapshot: { url, intervalMs: 1 } })
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0, snapshot: { url, intervalMs: 1 } })
  a.migrate(SCHEMA)
  b.migrate(SCHEMA)
  const q = []
  a.addPeer(2, (f) => q.push([b, f]))
  b.addPeer(1, (f) => q.push([a, f]))
  const took = { 1: 0, 2: 0 }
  a.on('snapshot', () => took[1]++)
  b.on('snapshot', () => took[2]++)
  const round = async (reps) => {
    for (const r of reps) r.tick()
    while (q.length) { const [to, f] = q.shift(); if (reps.includes(to)) to.applyPatches(f) }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  for (let i = 0; i < 8; i++) await round([a, b])
  while (a._snapshotting || b._snapshotting) await new Promise((resolve) => setTimeout(resolve, 10))
  assert.ok(took[1] >= 1, 'the leader snapshots')
  assert.equal(took[2], 0, 'a follower does not')
  // a goes quiet: b takes over after a few heartbeats
  for (let i = 0; i < 8; i++) await round([b])
  while (b._snapshotting) await new Promise((resolve) => setTimeout(resolve, 10))
  assert.equal(b.isLeader(), true)
  assert.ok(took[2] >= 1, 'the new leader snapshots')
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})

test("'snapshot:progress' reports bytes done and total, ending at 100%; restore reports through onProgress", async () => {
  const dir = tmp()
  const url = `file://${path.join(dir, 'store')}`
  const w = writer(dir, 9, 20000, { url })
  const seen = []
  w.on('snapshot:progress', (p) => seen.push(p))
  const info = await w.snapshot()
  assert.ok(seen.length >= 1)
  for (const p of seen) assert.ok(p.bytesDone <= p.bytesTotal && p.bytesTotal > 0)
  assert.deepEqual(seen[seen.length - 1], { bytesDone: info.size, bytesTotal: info.size })
  const restored = []
  await Replicator.restore({ from: url, path: path.join(dir, 'r.db'), onProgress: (p) => restored.push(p) })
  assert.deepEqual(restored[restored.length - 1], { bytesDone: info.bytes, bytesTotal: info.bytes })
  await w.close({ timeoutMs: 0 })
})
