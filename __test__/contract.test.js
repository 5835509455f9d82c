'use strict'
// The API.md contract, method by method: arguments, tokens, partial and NULL
// writes, reads, errors with codes, persistence across reopen, and two
// replicators exchanging frames with shuffled and duplicated delivery.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const SCHEMA = [{
  up: `CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, done INTEGER, deletedAt INTEGER, PRIMARY KEY (id, tenantId)) STRICT;
       CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, tenantId INTEGER, title TEXT, done INTEGER, deletedAt INTEGER) STRICT;
       CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT);
       CREATE TABLE note_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, body TEXT);`,
  down: 'DROP TABLE todo; DROP TABLE todo_patches; DROP TABLE note; DROP TABLE note_patches;'
}]
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-contract-'))
const open = (opts = {}) => {
  const r = new Replicator({ path: ':memory:', heartbeatMs: 0, ...opts })
  r.migrate(SCHEMA)
  return r
}
const EPOCH = 1735689600000

test('constructor checks its options', () => {
  assert.throws(() => new Replicator(), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => new Replicator({}), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => new Replicator({ path: 42 }), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => new Replicator({ path: ':memory:', peerId: 0 }), { name: 'RangeError', code: 'E_ARG' })
  assert.throws(() => new Replicator({ path: ':memory:', peerId: 2 ** 32 }), { name: 'RangeError', code: 'E_ARG' })
  assert.throws(() => new Replicator({ path: ':memory:', peerId: 1.5 }), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => new Replicator({ path: ':memory:', heartbeatMs: -1 }), { name: 'RangeError', code: 'E_ARG' })
  assert.throws(() => new Replicator({ path: ':memory:', maxFrameBytes: 10 }), { name: 'RangeError', code: 'E_ARG' })
  assert.throws(() => new Replicator({ path: ':memory:', clusterKey: 5 }), { name: 'TypeError', code: 'E_ARG' })
  const r = new Replicator({ path: ':memory:', peerId: 2 ** 32 - 1, heartbeatMs: 0 })
  assert.equal(r.peerId, 2 ** 32 - 1)
  r.close()
})

test('upsert, upsertMany and delete: tokens, partial writes, explicit NULL, tombstones', async () => {
  const r = open({ peerId: 7 })
  assert.equal(r.upsert('todo', { id: 1, tenantId: 1, title: 'a', done: 0 }), '7.1')
  assert.equal(r.upsert('todo', { id: 1, tenantId: 1, done: 1 }), '7.2')
  assert.deepEqual(r.get('SELECT * FROM todo'), { id: 1, tenantId: 1, title: 'a', done: 1, deletedAt: null })
  assert.equal(r.upsert('todo', { id: 1, tenantId: 1, title: null, done: undefined }), '7.3')
  assert.deepEqual(r.get('SELECT title, done FROM todo'), { title: null, done: 1 })
  assert.equal(r.upsertMany('todo', [{ id: 2, tenantId: 1 }, { id: 3, tenantId: 1, title: 'c' }]), '7.5')
  assert.equal(r.upsertMany('todo', []), '7.5')
  const before = Date.now()
  assert.equal(r.delete('todo', { id: 2, tenantId: 1 }), '7.6')
  const del = r.get('SELECT deletedAt FROM todo WHERE id = 2').deletedAt
  assert.ok(del >= before - 5 && del <= Date.now() + 5)
  assert.throws(() => r.delete('note', { id: 1 }), { code: 'E_SCHEMA' })
  // Patch rows: one per write, HLC stamps growing, in the documented encoding.
  const patches = r.all('SELECT _patchedAt AS at, _sequenceId AS seq, _peerId AS peer FROM todo_patches ORDER BY seq')
  assert.deepEqual(patches.map((p) => p.seq), [1, 2, 3, 4, 5, 6])
  for (let i = 1; i < patches.length; i++) assert.ok(patches[i].at > patches[i - 1].at)
  const ms = Math.floor(patches[0].at / 8192) + EPOCH
  assert.ok(Math.abs(ms - before) < 60000, 'HLC = (unix_ms - 1735689600000) * 8192 + counter')
  // Bad arguments
  assert.throws(() => r.upsert('todo', null), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => r.upsert('todo', [1]), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => r.upsert(5, {}), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => r.upsert('todo', { id: 1 }), { name: 'TypeError', code: 'E_ARG' }) // missing key column
  assert.throws(() => r.upsert('todo', { id: 1, tenantId: 1, title: {} }), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => r.upsert('todo', { id: 1, tenantId: 1, done: NaN }), { name: 'RangeError', code: 'E_ARG' })
  assert.throws(() => r.upsertMany('todo', {}), { name: 'TypeError', code: 'E_ARG' })
  assert.throws(() => r.upsert('nope', { id: 1 }), { code: 'E_SCHEMA' })
  assert.throws(() => r.upsert('todo', { id: 1, tenantId: 1, nope: 1 }), { code: 'E_SCHEMA', message: /nope/ })
  // A failed write uses no seq.
  assert.equal(r.upsert('note', { id: 1, body: 'x' }), '7.7')
  await r.close()
})

test('all/get: rows, positional and named params, read-only only', async () => {
  const r = open()
  r.upsertMany('note', [{ id: 1, body: 'one' }, { id: 2, body: 'two' }, { id: 3, body: Buffer.from([1, 2]) }])
  assert.deepEqual(r.all('SELECT id FROM note WHERE id > ? ORDER BY id', [1]), [{ id: 2 }, { id: 3 }])
  assert.deepEqual(r.get('SELECT body FROM note WHERE id = @id', { id: 2 }), { body: 'two' })
  assert.deepEqual(r.get('SELECT body FROM note WHERE id = :id', { id: 3 }).body, Buffer.from([1, 2]))
  assert.equal(r.get('SELECT * FROM note WHERE id = 99'), undefined)
  for (const sql of ['DELETE FROM note', "INSERT INTO note VALUES (9, 'x')", 'UPDATE note SET body = 1', 'DROP TABLE note', 'CREATE TABLE x (a)']) {
    assert.throws(() => r.all(sql), { code: 'E_READONLY' })
    assert.throws(() => r.get(sql), { code: 'E_READONLY' })
  }
  assert.equal(r.all('SELECT count(*) AS n FROM note')[0].n, 3)
  assert.throws(() => r.all('SELECT * FROM nowhere'), { code: 'E_SQLITE' })
  assert.throws(() => r.all('SELECT ?', []), { name: 'RangeError', code: 'E_ARG' })
  await r.close()
})

test('close is idempotent and every later call throws E_CLOSED', async () => {
  const r = open()
  const p1 = r.close()
  const p2 = r.close()
  await Promise.all([p1, p2])
  await r.close()
  const calls = [
    () => r.migrate(SCHEMA), () => r.upsert('note', { id: 1 }), () => r.upsertMany('note', [{ id: 1 }]),
    () => r.delete('todo', { id: 1, tenantId: 1 }), () => r.addPeer(2, () => {}), () => r.removePeer(2),
    () => r.applyPatches(Buffer.alloc(10)), () => r.tick(), () => r.flush(), () => r.all('SELECT 1'),
    () => r.get('SELECT 1'), () => r.status(), () => r.isLeader(), () => r.metrics()
  ]
  for (const c of calls) assert.throws(c, { code: 'E_CLOSED' })
  await assert.rejects(r.waitFor('1.1'), { code: 'E_CLOSED' })
  await assert.rejects(r.snapshot(), { code: 'E_CLOSED' })
  await r[Symbol.asyncDispose]()
})

test('peer id, seq, schema and rows survive a reopen; a fresh id is random and kept', async () => {
  const dir = tmp()
  const file = path.join(dir, 'a.db')
  let r = new Replicator({ path: file, heartbeatMs: 0 })
  const id = r.peerId
  assert.ok(Number.isInteger(id) && id > 0 && id <= 2 ** 32 - 1)
  r.migrate(SCHEMA)
  r.upsert('note', { id: 1, body: 'x' })
  const last = r.upsert('note', { id: 2, body: 'y' })
  const at = r.get('SELECT max(_patchedAt) AS at FROM note_patches').at
  await r.close()
  r = new Replicator({ path: file, heartbeatMs: 0 })
  assert.equal(r.peerId, id)
  assert.equal(last, `${id}.2`)
  assert.equal(r.status().seq, 2)
  assert.equal(r.status().schemaVersion, 1)
  assert.equal(r.upsert('note', { id: 3 }), `${id}.3`)
  assert.ok(r.get('SELECT max(_patchedAt) AS at FROM note_patches').at > at, 'the clock continues above the last value')
  assert.equal(r.all('SELECT * FROM note').length, 3)
  await r.close()
  const other = new Replicator({ path: path.join(dir, 'b.db'), heartbeatMs: 0 })
  assert.notEqual(other.peerId, id)
  await other.close()
})

function seeded (seed) {
  return () => {
    seed = (seed + 0x6D2B79F5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

test('two replicators converge under shuffled and duplicated delivery', async () => {
  for (const seed of [1, 2, 3]) {
    const rnd = seeded(seed)
    const a = open({ peerId: 1 })
    const b = open({ peerId: 2 })
    const toA = []
    const toB = []
    a.addPeer(2, (f) => toB.push(f))
    b.addPeer(1, (f) => toA.push(f))
    for (let i = 0; i < 300; i++) {
      const w = rnd() < 0.5 ? a : b
      const row = { id: Math.floor(rnd() * 10), tenantId: 1 }
      if (rnd() < 0.5) row.title = rnd() < 0.2 ? null : `t${i}`
      if (rnd() < 0.5) row.done = Math.floor(rnd() * 2)
      if (rnd() < 0.05) w.delete('todo', { id: row.id, tenantId: 1 })
      else w.upsert('todo', row)
      if (rnd() < 0.1) { a.flush(); b.flush() }
    }
    a.flush()
    b.flush()
    const deliver = (q, r) => {
      const frames = q.splice(0)
      for (const f of [...frames]) if (rnd() < 0.3) frames.push(f) // duplicates
      for (let i = frames.length - 1; i > 0; i--) { const j = Math.floor(rnd() * (i + 1)); [frames[i], frames[j]] = [frames[j], frames[i]] }
      let dups = 0
      for (const f of frames) dups += r.applyPatches(f).duplicates
      return dups
    }
    let dups = 0
    for (let round = 0; round < 10; round++) {
      dups += deliver(toA, a) + deliver(toB, b)
      a.tick(); b.tick()
    }
    const q = 'SELECT * FROM todo ORDER BY id, tenantId'
    assert.deepEqual(a.all(q), b.all(q), `seed ${seed}`)
    assert.ok(dups > 0)
    await a.close({ timeoutMs: 0 })
    await b.close({ timeoutMs: 0 })
  }
})

test('applyPatches result; waitFor; status; isLeader; synced; a throwing send is not fatal', async () => {
  const a = open({ peerId: 1 })
  const b = open({ peerId: 2 })
  const synced = []
  a.on('synced', (p) => synced.push(['a', p]))
  b.on('synced', (p) => synced.push(['b', p]))
  const toB = []
  let fail = true
  a.addPeer(2, (f) => { if (fail) throw new Error('socket down'); toB.push(f) })
  b.addPeer(1, (f) => a.applyPatches(f))
  const token = a.upsert('note', { id: 1, body: 'x' })
  const waiting = b.waitFor(token, 2000)
  a.flush() // throws inside send: counted, retried later
  assert.equal(await b.waitFor(token, 10), false)
  fail = false
  a.tick()
  let res = { applied: 0, stored: 0, duplicates: 0, requested: 0 }
  for (const f of toB.splice(0)) {
    const r = b.applyPatches(f)
    for (const k of Object.keys(res)) res[k] += r[k]
  }
  assert.deepEqual(Object.keys(res).sort(), ['applied', 'duplicates', 'requested', 'stored'])
  assert.equal(res.applied, 1)
  assert.equal(await waiting, true)
  assert.equal(await b.waitFor(token, 0), true)
  await assert.rejects(b.waitFor('not-a-token'), { name: 'TypeError', code: 'E_ARG' })
  for (let i = 0; i < 3; i++) { a.tick(); b.tick(); for (const f of toB.splice(0)) b.applyPatches(f) }
  assert.ok(synced.some(([w, p]) => w === 'b' && p === 1))
  assert.ok(synced.some(([w, p]) => w === 'a' && p === 2))
  assert.equal(synced.filter(([w]) => w === 'b').length, 1, "'synced' fires once per newly added peer")
  const s = b.status()
  assert.deepEqual(Object.keys(s).sort(), ['isLeader', 'peerId', 'peers', 'pending', 'schemaVersion', 'seq'])
  assert.equal(s.peerId, 2)
  const p = s.peers.find((x) => x.peerId === 1)
  assert.deepEqual(Object.keys(p).sort(), ['connected', 'contiguousSeq', 'lastSeenMs', 'lastSeq', 'missing', 'peerId'])
  assert.equal(typeof p.ackedSeq, 'number', 'ackedSeq is readable (non-enumerable: the documented shape stays)')
  assert.equal(p.connected, true)
  assert.equal(p.contiguousSeq, 1)
  assert.equal(p.missing, 0)
  assert.ok(p.lastSeenMs > 0)
  assert.equal(a.isLeader(), true)
  assert.equal(b.isLeader(), false)
  assert.match(a.metrics(), /quilt_send_failures_total [1-9]/)
  // a stops being heard: b leads after a few heartbeats
  for (let i = 0; i < 5; i++) b.tick()
  assert.equal(b.isLeader(), true)
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})

test('lost tail and a middle gap are repaired through pings and requests', async () => {
  const a = open({ peerId: 1, maxFrameBytes: 512 })
  const b = open({ peerId: 2, maxFrameBytes: 512 })
  const toB = []
  a.addPeer(2, (f) => toB.push(f))
  b.addPeer(1, (f) => a.applyPatches(f))
  for (let i = 0; i < 100; i++) a.upsert('note', { id: i, body: `body ${i} ${'x'.repeat(20)}` })
  a.flush()
  const frames = toB.splice(0)
  assert.ok(frames.length > 4)
  // Drop one middle frame and the last two (a lost tail).
  frames.forEach((f, i) => { if (i !== 1 && i < frames.length - 2) b.applyPatches(f) })
  assert.ok(b.all('SELECT * FROM note').length < 100)
  for (let i = 0; i < 6; i++) {
    a.tick(); b.tick()
    for (const f of toB.splice(0)) b.applyPatches(f)
  }
  assert.equal(b.all('SELECT * FROM note').length, 100)
  assert.equal(b.status().peers[0].missing, 0)
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})

test('readYourWrites middleware', async () => {
  const a = open({ peerId: 1 })
  const b = open({ peerId: 2 })
  const mw = b.readYourWrites({ timeoutMs: 50 })
  const run = (headers) => new Promise((resolve) => mw({ headers }, {}, (err) => resolve(err)))
  assert.equal(await run({}), undefined, 'no token: straight through')
  assert.equal(await run({ 'x-quilt-token': 'garbage' }), undefined)
  const token = a.upsert('note', { id: 1, body: 'x' })
  const err = await run({ 'x-quilt-token': token })
  assert.equal(err.code, 'E_STALE')
  assert.equal(err.status, 503)
  a.addPeer(2, (f) => b.applyPatches(f))
  b.addPeer(1, (f) => a.applyPatches(f))
  a.tick()
  b.tick()
  assert.equal(await run({ 'x-quilt-token': token }), undefined)
  const custom = b.readYourWrites({ header: 'X-Token', timeoutMs: 10 })
  assert.equal(await new Promise((resolve) => custom({ headers: { 'x-token': token } }, {}, resolve)), undefined)
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})

test('close() waits for peers to acknowledge, bounded by timeoutMs', async () => {
  const a = open({ peerId: 1 })
  const b = open({ peerId: 2 })
  a.addPeer(2, (f) => setImmediate(() => { if (!b._closed) b.applyPatches(f) }))
  b.addPeer(1, (f) => setImmediate(() => { if (!a._closed) a.applyPatches(f) }))
  a.upsert('note', { id: 1, body: 'x' })
  const t0 = Date.now()
  const closing = a.close({ timeoutMs: 3000 })
  // b acknowledges with its next ping
  setTimeout(() => b.tick(), 50)
  await closing
  assert.ok(Date.now() - t0 < 2500, 'closed once acknowledged, before the timeout')
  assert.equal(b.get('SELECT body FROM note').body, 'x')
  const c = open({ peerId: 3 })
  c.addPeer(4, () => {})
  c.upsert('note', { id: 1 })
  c.tick()
  const t1 = Date.now()
  await c.close({ timeoutMs: 100 })
  assert.ok(Date.now() - t1 < 1000, 'an unacknowledging peer only delays close by timeoutMs')
  await b.close({ timeoutMs: 0 })
})

test('a panic inside the native code becomes a JS error, not a crash', () => {
  const r = open()
  assert.throws(() => r._native.debugPanic(), Error)
  assert.equal(r.upsert('note', { id: 1 }).endsWith('.1'), true, 'the replicator still works')
  r.close()
})

test('ESM import works too', async () => {
  const mod = await import('../index.mjs')
  assert.equal(typeof mod.Replicator, 'function')
  assert.equal(mod.Replicator, Replicator)
})

test('DEBUG=quilt* logs frames and peers to stderr; off by default', () => {
  const { spawnSync } = require('node:child_process')
  const script = `const { Replicator } = require(${JSON.stringify(path.join(__dirname, '..'))});
    const a = new Replicator({ path: ':memory:', heartbeatMs: 0, peerId: 1 });
    const b = new Replicator({ path: ':memory:', heartbeatMs: 0, peerId: 2 });
    a.addPeer(2, (f) => b.applyPatches(f)); a.tick();`
  const on = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, DEBUG: 'quilt*' }, encoding: 'utf8' })
  assert.match(on.stderr, /quilt:replicator peer 1: add peer 2/)
  assert.match(on.stderr, /peer 2: frame of \d+ bytes: applied/)
  const off = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, DEBUG: '' }, encoding: 'utf8' })
  assert.equal(off.stderr, '')
})
