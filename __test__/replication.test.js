'use strict'
// Replication between replicators in one process (API.md Transport, Cluster,
// Guarantees 1 and 2): frames exchanged through addPeer/applyPatches with
// shuffled, duplicated, dropped and failing delivery; convergence, gap and
// lost-tail repair, hub-and-spoke, waitFor/readYourWrites across peers,
// status(), isLeader(), 'synced'. All with heartbeatMs: 0 and explicit
// tick()/flush(), bounded in rounds.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-repl-'))
let fileNo = 0
const opened = []

const T = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER, c REAL, d BLOB, deletedAt INTEGER) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, a TEXT, b INTEGER, c REAL, d BLOB, deletedAt INTEGER) STRICT;
       CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, done INTEGER, deletedAt INTEGER,
         PRIMARY KEY (id, tenantId)) STRICT;
       CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, tenantId INTEGER, title TEXT, done INTEGER, deletedAt INTEGER) STRICT;`,
  down: 'DROP TABLE t_patches; DROP TABLE t; DROP TABLE todo_patches; DROP TABLE todo;'
}

function open (peerId, opts = {}) {
  const r = new Replicator({ path: path.join(TMP, `r-${fileNo++}.db`), peerId, heartbeatMs: 0, ...opts })
  opened.push(r)
  r.migrate([T])
  return r
}

test.after(async () => {
  for (const r of opened) await r.close({ timeoutMs: 0 }).catch(() => {})
  fs.rmSync(TMP, { recursive: true, force: true })
})

const dump = (r) => ({
  t: r.all('SELECT * FROM t ORDER BY id'),
  todo: r.all('SELECT * FROM todo ORDER BY id, tenantId')
})

/** Deterministic PRNG. */
function rng (seed) {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13; s >>>= 0
    s ^= s >>> 17
    s ^= s << 5; s >>>= 0
    return s / 0x100000000
  }
}

/** An in-process network: frames are queued and delivered on demand. */
class Net {
  constructor () {
    this.q = []
    this.filter = null // (msg) => false drops the message
    this.sent = 0
  }

  /** `a` sends to `b`. */
  link (a, b) {
    a.addPeer(b.peerId, (frame) => {
      this.sent++
      this.q.push({ from: a, to: b, frame: Buffer.from(frame) })
    })
  }

  both (a, b) {
    this.link(a, b)
    this.link(b, a)
  }

  deliver (max = 20000) {
    let n = 0
    while (this.q.length > 0) {
      assert.ok(n++ < max, 'delivery loop bounded')
      const m = this.q.shift()
      if (this.filter && !this.filter(m)) continue
      m.to.applyPatches(m.frame)
    }
  }

  /** Flush, deliver, tick, deliver: `rounds` times or until `done()`. */
  settle (reps, { rounds = 40, done = null } = {}) {
    const deadline = Date.now() + 20000
    for (let i = 0; i < rounds; i++) {
      assert.ok(Date.now() < deadline, 'settle within time')
      for (const r of reps) r.flush()
      this.deliver()
      for (const r of reps) r.tick()
      this.deliver()
      if (done && done()) return i + 1
    }
    return rounds
  }
}

function converged (reps) {
  const first = JSON.stringify(dump(reps[0]))
  return reps.every((r) => JSON.stringify(dump(r)) === first)
}

function caughtUp (reps) {
  return reps.every((r) => r.status().peers.every((p) => p.missing === 0 && p.contiguousSeq === p.lastSeq))
}

// ----------------------------------------------------------------------------

test('applyPatches returns {applied, stored, duplicates, requested}; a repeat is all duplicates', () => {
  const a = open(101)
  const b = open(102)
  const frames = []
  a.addPeer(102, (f) => frames.push(Buffer.from(f)))
  const hello = frames.length
  a.upsert('t', { id: 1, a: 'x' })
  a.upsertMany('t', [{ id: 2, a: 'y' }, { id: 3, a: 'z' }])
  a.flush()
  const data = frames.slice(hello)
  assert.equal(data.length, 1, 'three small patches batched in one frame')
  const r1 = b.applyPatches(data[0])
  assert.deepEqual(Object.keys(r1).sort(), ['applied', 'duplicates', 'requested', 'stored'])
  assert.deepEqual(r1, { applied: 3, stored: 3, duplicates: 0, requested: 0 })
  const r2 = b.applyPatches(data[0])
  assert.deepEqual(r2, { applied: 0, stored: 0, duplicates: 3, requested: 0 })
  assert.deepEqual(dump(b), dump(a))
  // A hello/ping frame carries no patches.
  const p = b.applyPatches(frames[0])
  assert.equal(p.applied, 0)
  assert.equal(p.stored, 0)
})

test('values, explicit NULL and omitted columns replicate faithfully', () => {
  const a = open(111)
  const b = open(112)
  const net = new Net()
  net.both(a, b)
  const blob = Buffer.from([1, 2, 3, 0, 255])
  a.upsert('t', { id: 1, a: 'héllo ✓', b: Number.MAX_SAFE_INTEGER, c: -0.25, d: blob })
  a.upsert('t', { id: 2, a: 'two', b: 2 })
  net.settle([a, b], { rounds: 3 })
  assert.deepEqual(b.get('SELECT * FROM t WHERE id = 1'), { id: 1, a: 'héllo ✓', b: Number.MAX_SAFE_INTEGER, c: -0.25, d: blob, deletedAt: null })
  // Explicit null: becomes NULL on the peer; the omitted column stays.
  a.upsert('t', { id: 2, a: null })
  net.settle([a, b], { rounds: 3 })
  assert.deepEqual(b.get('SELECT id, a, b FROM t WHERE id = 2'), { id: 2, a: null, b: 2 })
  // The other way, touching only b.
  b.upsert('t', { id: 2, b: 7 })
  net.settle([a, b], { rounds: 3 })
  assert.deepEqual(a.get('SELECT id, a, b FROM t WHERE id = 2'), { id: 2, a: null, b: 7 })
  // A row first created remotely with an explicit null.
  a.upsert('t', { id: 3, a: null, b: 3 })
  net.settle([a, b], { rounds: 3 })
  assert.deepEqual(b.get('SELECT id, a, b, c FROM t WHERE id = 3'), { id: 3, a: null, b: 3, c: null })
  assert.deepEqual(dump(a), dump(b))
})

test('a NULL written later beats an earlier value, on every peer, whatever the order', () => {
  const a = open(121)
  const b = open(122)
  const frames = []
  a.addPeer(122, (f) => frames.push(Buffer.from(f)))
  const hello = frames.length
  a.upsert('t', { id: 1, a: 'value', b: 1 })
  a.flush()
  a.upsert('t', { id: 1, a: null })
  a.flush()
  const data = frames.slice(hello)
  assert.equal(data.length, 2)
  b.applyPatches(data[1]) // the NULL first
  b.applyPatches(data[0]) // then the older value
  assert.deepEqual(b.get('SELECT id, a, b FROM t WHERE id = 1'), { id: 1, a: null, b: 1 })
  assert.deepEqual(dump(b), dump(a))
})

test('tombstones replicate: deletedAt set on the peer, the row stays', () => {
  const a = open(131)
  const b = open(132)
  const net = new Net()
  net.both(a, b)
  a.upsert('todo', { id: 1, tenantId: 1, title: 't1' })
  net.settle([a, b], { rounds: 2 })
  const before = Date.now()
  b.delete('todo', { id: 1, tenantId: 1 })
  net.settle([a, b], { rounds: 2 })
  const row = a.get('SELECT * FROM todo WHERE id = 1 AND tenantId = 1')
  assert.ok(row, 'row kept')
  assert.equal(row.title, 't1')
  assert.ok(row.deletedAt >= before - 5 && row.deletedAt <= Date.now() + 5)
  assert.deepEqual(dump(a), dump(b))
})

test('last writer wins per column; concurrent writes to different columns both survive', () => {
  const a = open(141)
  const b = open(142)
  const net = new Net()
  net.both(a, b)
  a.upsert('t', { id: 1, a: 'A1', b: 1 })
  net.settle([a, b], { rounds: 2 })
  // b has seen a's write, so its stamp is later: b wins column a.
  b.upsert('t', { id: 1, a: 'B1' })
  net.settle([a, b], { rounds: 2 })
  assert.equal(a.get('SELECT a FROM t WHERE id = 1').a, 'B1')
  const sa = a.get('SELECT max(_patchedAt) AS m FROM t_patches WHERE _peerId = 141').m
  const sb = b.get('SELECT max(_patchedAt) AS m FROM t_patches WHERE _peerId = 142').m
  assert.ok(sb > sa, 'the HLC of b moved past the stamp it received')
  // Concurrent edits of different columns, exchanged afterwards.
  a.upsert('t', { id: 1, b: 100 })
  b.upsert('t', { id: 1, c: 9.5 })
  net.settle([a, b], { rounds: 3 })
  assert.deepEqual(a.get('SELECT id, a, b, c FROM t WHERE id = 1'), { id: 1, a: 'B1', b: 100, c: 9.5 })
  assert.deepEqual(dump(a), dump(b))
})

test('concurrent conflicting writes: the winner follows (_patchedAt, _peerId, _sequenceId) on both sides', () => {
  const a = open(151)
  const b = open(152)
  const net = new Net()
  net.both(a, b)
  net.deliver()
  for (let i = 0; i < 20; i++) {
    a.upsert('t', { id: i % 5, a: `a${i}`, b: i })
    b.upsert('t', { id: i % 5, a: `b${i}` })
  }
  net.settle([a, b], { rounds: 4, done: () => converged([a, b]) })
  assert.ok(converged([a, b]), 'converged')
  // Recompute the expected winner of column a per row from the patch log.
  for (let id = 0; id < 5; id++) {
    const rows = a.all('SELECT _patchedAt AS at, _peerId AS p, _sequenceId AS s, a FROM t_patches WHERE id = ? AND a IS NOT NULL', [id])
    rows.sort((x, y) => (x.at - y.at) || (x.p - y.p) || (x.s - y.s))
    assert.equal(a.get('SELECT a FROM t WHERE id = ?', [id]).a, rows[rows.length - 1].a, `row ${id}`)
  }
})

test('shuffled, duplicated and re-batched delivery converges (3 peers)', () => {
  const reps = [open(161, { maxFrameBytes: 400 }), open(162, { maxFrameBytes: 400 }), open(163, { maxFrameBytes: 400 })]
  // Capture every frame of the write phase without delivering it.
  const held = []
  for (const x of reps) {
    for (const y of reps) {
      if (x !== y) x.addPeer(y.peerId, (f) => held.push({ to: y, frame: Buffer.from(f) }))
    }
  }
  const rand = rng(7)
  for (let i = 0; i < 120; i++) {
    const w = reps[Math.floor(rand() * 3)]
    const id = Math.floor(rand() * 15)
    const k = rand()
    if (k < 0.1) w.delete('t', { id })
    else if (k < 0.3) w.upsertMany('t', [{ id, a: `m${i}` }, { id: (id + 1) % 15, b: i, c: i / 4 }])
    else if (k < 0.4) w.upsert('t', { id, a: null })
    else w.upsert('t', { id, a: `w${i}-${w.peerId}`, b: i })
    if (rand() < 0.2) w.flush()
    if (rand() < 0.1) w.upsert('todo', { id, tenantId: i % 3, title: `todo${i}` })
  }
  for (const r of reps) r.flush()
  assert.ok(held.length > 20, `many frames (${held.length})`)
  // Shuffle with duplicates and deliver.
  const msgs = held.splice(0)
  for (let i = 0; i < msgs.length / 3; i++) msgs.push(msgs[Math.floor(rand() * msgs.length)])
  for (let i = msgs.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [msgs[i], msgs[j]] = [msgs[j], msgs[i]]
  }
  let dups = 0
  for (const m of msgs) {
    const res = m.to.applyPatches(m.frame)
    dups += res.duplicates
  }
  assert.ok(dups > 0, 'duplicates were seen and counted')
  // Then let repair traffic (requests and answers) flow, shuffled too.
  for (let round = 0; round < 30; round++) {
    for (const r of reps) r.flush()
    for (const r of reps) r.tick()
    const batch = held.splice(0)
    for (let i = batch.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [batch[i], batch[j]] = [batch[j], batch[i]]
    }
    for (const m of batch) m.to.applyPatches(m.frame)
    if (held.length === 0 && converged(reps) && caughtUp(reps)) break
  }
  assert.ok(converged(reps), 'all three hold the same rows')
  assert.ok(caughtUp(reps), 'no peer reports missing patches')
  const n = reps[0].get('SELECT count(*) AS n FROM t_patches').n
  for (const r of reps) assert.equal(r.get('SELECT count(*) AS n FROM t_patches').n, n, 'same patch log size')
})

test('lost tail: the last frames of a burst are dropped, ticks repair it', () => {
  const a = open(171, { maxFrameBytes: 300 })
  const b = open(172, { maxFrameBytes: 300 })
  const net = new Net()
  net.both(a, b)
  net.settle([a, b], { rounds: 1 })
  for (let i = 0; i < 30; i++) a.upsert('t', { id: i, a: 'payload '.repeat(4) + i })
  a.flush()
  const burst = net.q.filter((m) => m.from === a)
  net.q = net.q.filter((m) => m.from !== a)
  assert.ok(burst.length >= 4, `the burst spans several frames (${burst.length})`)
  // Deliver all but the last two.
  for (const m of burst.slice(0, -2)) b.applyPatches(m.frame)
  assert.ok(b.get('SELECT count(*) AS n FROM t').n < 30, 'tail missing before repair')
  const rounds = net.settle([a, b], { rounds: 15, done: () => converged([a, b]) })
  assert.ok(converged([a, b]), 'lost tail repaired')
  assert.ok(rounds <= 10, `repaired within a few ticks (${rounds})`)
  assert.equal(b.get('SELECT count(*) AS n FROM t').n, 30)
  const pa = b.status().peers.find((p) => p.peerId === 171)
  assert.equal(pa.contiguousSeq, 30)
  assert.equal(pa.missing, 0)
})

test('gap: a middle frame is dropped; detected and repaired', () => {
  const a = open(181, { maxFrameBytes: 300 })
  const b = open(182, { maxFrameBytes: 300 })
  const net = new Net()
  net.both(a, b)
  net.settle([a, b], { rounds: 1 })
  let seen = 0
  const dropped = []
  net.filter = (m) => {
    if (m.from === a && m.to === b && m.frame.length > 100) {
      seen++
      if (seen === 2) { dropped.push(m); return false }
    }
    return true
  }
  for (let i = 0; i < 30; i++) a.upsert('t', { id: i, a: 'payload '.repeat(4) + i })
  a.flush()
  // Deliver only the write burst (no ticks): the middle frame is lost, the
  // frames after it reveal the gap.
  const burst = net.q.filter((m) => m.from === a)
  net.q = net.q.filter((m) => m.from !== a)
  let requested = 0
  for (const m of burst) {
    if (!net.filter(m)) continue
    requested += b.applyPatches(m.frame).requested
  }
  net.filter = null
  assert.equal(dropped.length, 1, 'one frame dropped')
  const st = b.status().peers.find((p) => p.peerId === 181)
  assert.ok(st.missing > 0, 'status shows the gap')
  assert.ok(st.contiguousSeq < st.lastSeq)
  assert.ok(requested > 0, 'the gap was requested at once')
  const rounds = net.settle([a, b], { rounds: 15, done: () => converged([a, b]) })
  assert.ok(converged([a, b]), 'gap repaired')
  assert.ok(rounds <= 10, `within a few ticks (${rounds})`)
  const st2 = b.status().peers.find((p) => p.peerId === 181)
  assert.equal(st2.missing, 0)
  assert.equal(st2.contiguousSeq, 30)
})

test('an unanswered request is repeated within a few ticks', () => {
  const a = open(191, { maxFrameBytes: 300 })
  const b = open(192, { maxFrameBytes: 300 })
  const net = new Net()
  net.both(a, b)
  net.settle([a, b], { rounds: 1 })
  for (let i = 0; i < 10; i++) a.upsert('t', { id: i, a: 'payload '.repeat(4) + i })
  a.flush()
  // Lose everything a sends for a while: pings and answers.
  net.filter = (m) => m.from !== a || m.frame.length < 60
  net.settle([a, b], { rounds: 2 })
  net.filter = (m) => m.from !== a
  net.settle([a, b], { rounds: 6 })
  assert.equal(b.get('SELECT count(*) AS n FROM t').n, 0, 'nothing got through yet')
  net.filter = null
  net.settle([a, b], { rounds: 12, done: () => converged([a, b]) })
  assert.ok(converged([a, b]), 'repaired once the link came back')
})

test('a send callback that throws is not fatal; the data arrives after ticks', () => {
  const a = open(201)
  const b = open(202)
  const q = []
  let failing = true
  let threw = 0
  a.addPeer(202, (f) => {
    if (failing) { threw++; throw new Error('socket closed') }
    q.push(Buffer.from(f))
  })
  b.addPeer(201, (f) => a.applyPatches(Buffer.from(f)))
  const tok = a.upsert('t', { id: 1, a: 'survives' })
  a.upsert('t', { id: 2, a: 'too' })
  assert.doesNotThrow(() => a.flush())
  assert.doesNotThrow(() => a.tick())
  assert.ok(threw >= 1, 'send was called and threw')
  const failLine = a.metrics().split('\n').find((l) => /^quilt_send_failures/.test(l) || (/fail/i.test(l) && !l.startsWith('#')))
  if (failLine) assert.ok(Number(failLine.split(' ').pop()) >= 1, 'failures counted')
  failing = false
  for (let i = 0; i < 10 && !b.get('SELECT 1 AS x FROM t WHERE id = 2'); i++) {
    a.tick()
    b.tick()
    let n = 0
    while (q.length && n++ < 1000) b.applyPatches(q.shift())
  }
  assert.deepEqual(b.all('SELECT id, a FROM t ORDER BY id'), [{ id: 1, a: 'survives' }, { id: 2, a: 'too' }])
  assert.equal(b._native.has(201, Number(tok.split('.')[1])), true)
})

test('hub-and-spoke: spokes only talk to the hub and converge', () => {
  const hub = open(211)
  const s1 = open(212)
  const s2 = open(213)
  const s3 = open(214)
  const net = new Net()
  net.both(hub, s1)
  net.both(hub, s2)
  net.both(hub, s3)
  const reps = [hub, s1, s2, s3]
  s1.upsert('t', { id: 1, a: 's1' })
  s2.upsert('t', { id: 2, a: 's2' })
  s3.upsertMany('t', [{ id: 3, a: 's3' }, { id: 1, b: 33 }])
  hub.upsert('t', { id: 4, a: 'hub' })
  net.settle(reps, { rounds: 25, done: () => converged(reps) && caughtUp(reps) })
  assert.ok(converged(reps), 'all four hold the same rows')
  assert.deepEqual(s2.all('SELECT id, a, b FROM t ORDER BY id'), [
    { id: 1, a: 's1', b: 33 }, { id: 2, a: 's2', b: null }, { id: 3, a: 's3', b: null }, { id: 4, a: 'hub', b: null }
  ])
  // No spoke ever received a frame from another spoke.
  assert.ok(caughtUp(reps))
})

test('chain a - b - c converges', () => {
  const a = open(221)
  const b = open(222)
  const c = open(223)
  const net = new Net()
  net.both(a, b)
  net.both(b, c)
  for (let i = 0; i < 10; i++) {
    a.upsert('t', { id: i, a: `a${i}` })
    c.upsert('t', { id: 100 + i, a: `c${i}` })
  }
  net.settle([a, b, c], { rounds: 25, done: () => converged([a, b, c]) })
  assert.ok(converged([a, b, c]))
  assert.equal(a.get('SELECT count(*) AS n FROM t').n, 20)
})

test('waitFor resolves true once the frame arrives; false on timeout', async () => {
  const a = open(231)
  const b = open(232)
  const frames = []
  a.addPeer(232, (f) => frames.push(Buffer.from(f)))
  const tok = a.upsert('t', { id: 1, a: 'x' })
  a.flush()
  assert.equal(await b.waitFor(tok, 20), false, 'not yet here: false after the timeout')
  const p = b.waitFor(tok, 3000)
  let settled = false
  p.then(() => { settled = true })
  await new Promise((resolve) => setImmediate(resolve))
  assert.equal(settled, false, 'still waiting')
  setTimeout(() => { for (const f of frames) b.applyPatches(f) }, 20)
  const t0 = Date.now()
  assert.equal(await p, true)
  assert.ok(Date.now() - t0 < 2000, 'resolved on arrival, not on timeout')
  assert.equal(await b.waitFor(tok, 0), true, 'already applied')
})

test('readYourWrites waits for a remote token, then calls next()', async () => {
  const a = open(241)
  const b = open(242)
  const frames = []
  a.addPeer(242, (f) => frames.push(Buffer.from(f)))
  const tok = a.upsert('t', { id: 1, a: 'x' })
  a.flush()
  const mw = b.readYourWrites({ timeoutMs: 3000 })
  const done = new Promise((resolve) => mw({ headers: { 'x-quilt-token': tok } }, {}, resolve))
  let called = false
  done.then(() => { called = true })
  await new Promise((resolve) => setTimeout(resolve, 20))
  assert.equal(called, false, 'next() waits for the token')
  for (const f of frames) b.applyPatches(f)
  const err = await done
  assert.equal(err, undefined, 'next() without error')
  assert.equal(b.get('SELECT a FROM t WHERE id = 1').a, 'x', 'the write is visible to the handler')
  const stale = await new Promise((resolve) => b.readYourWrites({ timeoutMs: 20 })({ headers: { 'x-quilt-token': `241.${Number(tok.split('.')[1]) + 5}` } }, {}, resolve))
  assert.equal(stale.code, 'E_STALE')
  assert.equal(stale.status, 503)
})

test('status(): peers with connected, lastSeq, contiguousSeq, missing, lastSeenMs', () => {
  const a = open(251)
  const b = open(252)
  const net = new Net()
  net.both(a, b)
  for (let i = 0; i < 5; i++) a.upsert('t', { id: i })
  const t0 = Date.now()
  net.settle([a, b], { rounds: 3 })
  const s = b.status()
  assert.equal(s.peerId, 252)
  assert.equal(s.schemaVersion, 1)
  assert.equal(s.seq, 0)
  assert.equal(s.pending, 0)
  assert.equal(s.peers.length, 1)
  const p = s.peers[0]
  assert.deepEqual(Object.keys(p).sort(), ['connected', 'contiguousSeq', 'lastSeenMs', 'lastSeq', 'missing', 'peerId'])
  assert.equal(p.peerId, 251)
  assert.equal(p.connected, true)
  assert.equal(p.lastSeq, 5)
  assert.equal(p.contiguousSeq, 5)
  assert.equal(p.missing, 0)
  assert.equal(typeof p.lastSeenMs, 'number')
  assert.ok(p.lastSeenMs >= t0 - 1000 && p.lastSeenMs <= Date.now() + 1000, `lastSeenMs ${p.lastSeenMs} is a recent time`)
  assert.equal(a.status().seq, 5)
  b.removePeer(251)
  const after = b.status().peers.find((x) => x.peerId === 251)
  if (after) assert.equal(after.connected, false, 'a removed peer is not connected')
})

test('isLeader: the lowest live id leads; a silent lower peer stops leading', () => {
  const lo = open(261)
  const hi = open(262)
  assert.equal(lo.isLeader(), true)
  assert.equal(hi.isLeader(), true, 'alone, each leads')
  const net = new Net()
  net.both(lo, hi)
  net.settle([lo, hi], { rounds: 2 })
  assert.equal(lo.isLeader(), true)
  assert.equal(hi.isLeader(), false, 'a lower live peer leads')
  assert.equal(hi.status().isLeader, false)
  assert.equal(lo.status().isLeader, true)
  // lo goes silent: after some heartbeats hi leads.
  net.filter = (m) => m.from !== lo
  net.settle([lo, hi], { rounds: 8 })
  assert.equal(hi.isLeader(), true, 'the silent lower peer is no longer live')
  net.filter = null
  net.settle([lo, hi], { rounds: 2 })
  assert.equal(hi.isLeader(), false, 'lo is back')
})

test("'synced' fires once when a newly added peer is caught up", () => {
  const a = open(271, { maxFrameBytes: 400 })
  for (let i = 0; i < 40; i++) a.upsert('t', { id: i, a: 'row ' + i })
  const b = open(272, { maxFrameBytes: 400 })
  const events = []
  b.on('synced', (peerId) => {
    events.push({ peerId, rows: b.get('SELECT count(*) AS n FROM t').n })
  })
  const net = new Net()
  net.both(a, b)
  net.settle([a, b], { rounds: 20, done: () => events.length > 0 && converged([a, b]) })
  assert.ok(events.length >= 1, "'synced' fired")
  assert.equal(events[0].peerId, 271)
  assert.equal(events[0].rows, 40, 'all rows were there when synced fired')
  net.settle([a, b], { rounds: 5 })
  assert.equal(events.filter((e) => e.peerId === 271).length, 1, 'once per addPeer')
})

test('removePeer stops sending; addPeer again replaces the send callback', () => {
  const a = open(281)
  const oldFrames = []
  const newFrames = []
  a.addPeer(282, (f) => oldFrames.push(f))
  a.upsert('t', { id: 1 })
  a.flush()
  assert.ok(oldFrames.length > 0)
  a.removePeer(282)
  const n = oldFrames.length
  a.upsert('t', { id: 2 })
  a.flush()
  a.tick()
  assert.equal(oldFrames.length, n, 'nothing sent to a removed peer')
  a.addPeer(282, (f) => oldFrames.push(f))
  a.addPeer(282, (f) => newFrames.push(f))
  const m = oldFrames.length
  a.upsert('t', { id: 3 })
  a.flush()
  a.tick()
  assert.equal(oldFrames.length, m, 'the replaced callback is not called')
  assert.ok(newFrames.length > 0, 'the new callback is')
})

test('addPeer/removePeer argument checks', () => {
  const a = open(291)
  assert.throws(() => a.addPeer('x', () => {}), (e) => e instanceof TypeError && e.code === 'E_ARG')
  assert.throws(() => a.addPeer(5, 'not a function'), (e) => e instanceof TypeError && e.code === 'E_ARG')
  assert.throws(() => a.addPeer(0, () => {}), (e) => e instanceof RangeError && e.code === 'E_ARG')
  assert.throws(() => a.addPeer(2 ** 32, () => {}), (e) => e instanceof RangeError && e.code === 'E_ARG')
  assert.throws(() => a.removePeer('x'), (e) => e instanceof TypeError && e.code === 'E_ARG')
})

test('flush() sends queued writes now; without flush they go on the next event-loop turn', async () => {
  const a = open(301)
  const frames = []
  a.addPeer(302, (f) => frames.push(f))
  const hello = frames.length
  a.upsert('t', { id: 1 })
  assert.equal(frames.length, hello, 'not sent synchronously by upsert')
  await new Promise((resolve) => setTimeout(resolve, 20))
  assert.ok(frames.length > hello, 'sent on a later turn')
  const n = frames.length
  a.upsert('t', { id: 2 })
  a.flush()
  assert.ok(frames.length > n, 'flush sent it now')
})

test('metrics count frames in and out after an exchange', () => {
  const a = open(311)
  const b = open(312)
  const net = new Net()
  net.both(a, b)
  a.upsert('t', { id: 1 })
  net.settle([a, b], { rounds: 2 })
  const sample = (r, re) => {
    const l = r.metrics().split('\n').find((x) => !x.startsWith('#') && re.test(x))
    assert.ok(l, `sample ${re}`)
    return Number(l.split(' ').pop())
  }
  assert.ok(sample(a, /frames.*out/) > 0)
  assert.ok(sample(b, /frames.*in/) > 0)
  assert.ok(sample(b, /bytes.*in/) > 0)
  assert.match(b.metrics(), /# EOF/)
})
