'use strict'
// Persistence (API.md): a fresh random peer id is kept in the database, the
// seq and HLC survive a reopen, migrate is idempotent on reopen and runs
// stored downs, writes are durable (committed) on return, and replicated
// state (what a peer holds of others) survives a restart.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')
const Database = require('./helpers/sqlite.js')

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-persist-'))
let fileNo = 0
const opened = []

const V1 = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER, deletedAt INTEGER) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, a TEXT, b INTEGER, deletedAt INTEGER) STRICT;`,
  down: 'DROP TABLE t_patches; DROP TABLE t;'
}
const V2 = {
  up: 'ALTER TABLE t ADD COLUMN note TEXT; ALTER TABLE t_patches ADD COLUMN note TEXT;',
  down: 'ALTER TABLE t DROP COLUMN note; ALTER TABLE t_patches DROP COLUMN note;'
}

function file () {
  return path.join(TMP, `p-${fileNo++}.db`)
}

function open (p, opts = {}) {
  const r = new Replicator({ path: p, heartbeatMs: 0, ...opts })
  opened.push(r)
  return r
}

test.after(async () => {
  for (const r of opened) await r.close({ timeoutMs: 0 }).catch(() => {})
  fs.rmSync(TMP, { recursive: true, force: true })
})

test('a fresh random peer id is kept in the database across reopens', async () => {
  const p = file()
  const r1 = open(p)
  const id = r1.status().peerId
  assert.ok(Number.isInteger(id) && id > 0 && id <= 0xffffffff)
  assert.equal(r1.peerId ?? id, id)
  await r1.close({ timeoutMs: 0 })
  const r2 = open(p)
  assert.equal(r2.status().peerId, id, 'same id after reopen')
  await r2.close({ timeoutMs: 0 })
  const r3 = open(p)
  r3.migrate([V1])
  assert.match(r3.upsert('t', { id: 1 }), new RegExp(`^${id}\\.1$`))
  await r3.close({ timeoutMs: 0 })
  const other = open(file())
  assert.notEqual(other.status().peerId, id, 'another database draws another id')
  await other.close({ timeoutMs: 0 })
})

test('an explicit peerId is stored: a later open without one keeps it', async () => {
  const p = file()
  const r1 = open(p, { peerId: 424242 })
  r1.migrate([V1])
  r1.upsert('t', { id: 1 })
  await r1.close({ timeoutMs: 0 })
  const r2 = open(p)
  assert.equal(r2.status().peerId, 424242)
  assert.equal(r2.upsert('t', { id: 2 }), '424242.2')
  await r2.close({ timeoutMs: 0 })
})

test('seq survives reopen: tokens continue, never reused', async () => {
  const p = file()
  const r1 = open(p, { peerId: 55 })
  r1.migrate([V1])
  r1.upsert('t', { id: 1, a: 'one' })
  r1.upsertMany('t', [{ id: 2, a: 'two' }, { id: 3, a: 'three' }])
  assert.equal(r1.delete('t', { id: 3 }), '55.4')
  await r1.close({ timeoutMs: 0 })
  const r2 = open(p)
  assert.equal(r2.status().seq, 4)
  assert.equal(r2.upsert('t', { id: 4, a: 'four' }), '55.5')
  await r2.close({ timeoutMs: 0 })
  // Also when the replicator was never closed (the process died).
  const r3 = open(p)
  assert.equal(r3.upsert('t', { id: 5 }), '55.6')
  opened.splice(opened.indexOf(r3), 1) // leak it on purpose, closed at the end below
  const r4 = open(p)
  assert.equal(r4.status().seq, 6)
  assert.equal(r4.upsert('t', { id: 6 }), '55.7')
  await r4.close({ timeoutMs: 0 })
  await r3.close({ timeoutMs: 0 })
  const r5 = open(p)
  assert.deepEqual(r5.all('SELECT _sequenceId AS s FROM t_patches WHERE _peerId = 55 ORDER BY s').map((x) => x.s), [1, 2, 3, 4, 5, 6, 7])
  assert.deepEqual(r5.all('SELECT id, a FROM t ORDER BY id').map((x) => x.id), [1, 2, 3, 4, 5, 6])
  await r5.close({ timeoutMs: 0 })
})

test('HLC stamps keep growing across a reopen', async () => {
  const p = file()
  const r1 = open(p, { peerId: 66 })
  r1.migrate([V1])
  for (let i = 0; i < 20; i++) r1.upsert('t', { id: i })
  const last = r1.get('SELECT max(_patchedAt) AS m FROM t_patches').m
  await r1.close({ timeoutMs: 0 })
  const r2 = open(p)
  r2.upsert('t', { id: 100 })
  const next = r2.get('SELECT _patchedAt AS at FROM t_patches WHERE id = 100').at
  assert.ok(next > last, 'stamp after reopen above every earlier stamp')
  await r2.close({ timeoutMs: 0 })
})

test('migrate on reopen is idempotent; {from, to}; data kept', async () => {
  const p = file()
  const r1 = open(p)
  assert.deepEqual(r1.migrate([V1, V2]), { from: 0, to: 2 })
  r1.upsert('t', { id: 1, a: 'x', note: 'n' })
  await r1.close({ timeoutMs: 0 })
  const r2 = open(p)
  assert.equal(r2.status().schemaVersion, 2, 'schema version stored')
  assert.deepEqual(r2.migrate([V1, V2]), { from: 2, to: 2 })
  assert.deepEqual(r2.get('SELECT id, a, note FROM t'), { id: 1, a: 'x', note: 'n' })
  await r2.close({ timeoutMs: 0 })
  // Down on a later open uses the down stored at version 2.
  const r3 = open(p)
  assert.deepEqual(r3.migrate([V1]), { from: 2, to: 1 })
  assert.equal(r3.all("SELECT name FROM pragma_table_info('t') WHERE name = 'note'").length, 0)
  assert.deepEqual(r3.get('SELECT id, a FROM t'), { id: 1, a: 'x' })
  await r3.close({ timeoutMs: 0 })
  const r4 = open(p)
  assert.equal(r4.status().schemaVersion, 1)
  assert.deepEqual(r4.migrate([V1]), { from: 1, to: 1 })
  await r4.close({ timeoutMs: 0 })
})

test('upsert is durable on return: another connection sees it before close', async () => {
  const p = file()
  const r = open(p, { peerId: 77 })
  r.migrate([V1])
  r.upsert('t', { id: 1, a: 'committed' })
  r.upsertMany('t', [{ id: 2, a: 'also' }, { id: 3, a: 'too' }])
  r.delete('t', { id: 2 })
  const db = new Database(p, { readonly: true })
  try {
    assert.deepEqual(db.prepare('SELECT id, a FROM t ORDER BY id').all(), [{ id: 1, a: 'committed' }, { id: 2, a: 'also' }, { id: 3, a: 'too' }])
    assert.ok(db.prepare('SELECT deletedAt FROM t WHERE id = 2').get().deletedAt > 0)
    assert.equal(db.prepare('SELECT count(*) AS n FROM t_patches WHERE _peerId = 77').get().n, 4)
    // Only the given columns are set in the patch row; an unset column is NULL there.
    const rows = db.prepare('SELECT _sequenceId AS s, a, b FROM t_patches ORDER BY _sequenceId').all()
    assert.deepEqual(rows.map((x) => x.s), [1, 2, 3, 4])
  } finally {
    db.close()
  }
  await r.close({ timeoutMs: 0 })
})

test('an explicit NULL keeps its meaning after a reopen and is served as NULL', async () => {
  const p = file()
  const a = open(p, { peerId: 81 })
  a.migrate([V1])
  a.upsert('t', { id: 1, a: 'value', b: 5 })
  a.upsert('t', { id: 1, a: null })
  await a.close({ timeoutMs: 0 })
  const a2 = open(p)
  assert.deepEqual(a2.get('SELECT id, a, b FROM t'), { id: 1, a: null, b: 5 })
  // A new peer fetches both patches from the reopened file (served from disk).
  const b = open(file(), { peerId: 82 })
  b.migrate([V1])
  const q = []
  a2.addPeer(82, (f) => q.push([b, Buffer.from(f)]))
  b.addPeer(81, (f) => q.push([a2, Buffer.from(f)]))
  for (let round = 0; round < 15; round++) {
    a2.flush(); b.flush(); a2.tick(); b.tick()
    let n = 0
    while (q.length && n++ < 1000) { const [to, f] = q.shift(); to.applyPatches(f) }
    if (b.get('SELECT 1 AS x FROM t')) {
      const st = b.status().peers.find((x) => x.peerId === 81)
      if (st && st.contiguousSeq === 2) break
    }
  }
  assert.deepEqual(b.get('SELECT id, a, b FROM t'), { id: 1, a: null, b: 5 })
  await a2.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})

test('what a peer received survives its restart (waitFor true at once, no refetch needed)', async () => {
  const pa = file()
  const pb = file()
  const a = open(pa, { peerId: 91 })
  a.migrate([V1])
  const b = open(pb, { peerId: 92 })
  b.migrate([V1])
  const frames = []
  a.addPeer(92, (f) => frames.push(Buffer.from(f)))
  let tok
  for (let i = 0; i < 5; i++) tok = a.upsert('t', { id: i, a: `r${i}` })
  a.flush()
  for (const f of frames) b.applyPatches(f)
  assert.equal(await b.waitFor(tok, 10), true)
  await b.close({ timeoutMs: 0 })
  const b2 = open(pb)
  assert.equal(await b2.waitFor(tok, 10), true, 'held patches are known after a reopen')
  assert.equal(b2.get('SELECT count(*) AS n FROM t').n, 5)
  const res = b2.applyPatches(frames[frames.length - 1])
  assert.equal(res.stored, 0, 'a replay after restart stores nothing')
  assert.ok(res.duplicates >= 1)
  const st = b2.status().peers.find((x) => x.peerId === 91)
  assert.ok(st, 'origin 91 is known after reopen')
  assert.equal(st.contiguousSeq, 5)
  await b2.close({ timeoutMs: 0 })
  await a.close({ timeoutMs: 0 })
})

test('close() with peers and a timeout returns within the bound', async () => {
  const a = open(file(), { peerId: 101 })
  a.migrate([V1])
  const sent = []
  a.addPeer(102, (f) => sent.push(f))
  a.tick()
  a.upsert('t', { id: 1, a: 'flushed-by-close' })
  const before = sent.length
  const t0 = Date.now()
  await a.close({ timeoutMs: 200 })
  assert.ok(Date.now() - t0 < 3000, 'bounded wait')
  assert.ok(sent.slice(before).some((f) => Buffer.from(f).includes('flushed-by-close')), 'close flushed the queued patch')
  assert.throws(() => a.status(), (e) => e.code === 'E_CLOSED')
})

test('a replic-sqlite file (NULL in _patches = not set) opens with its meaning intact', async () => {
  const p = file()
  const EPOCH = 1735689600000
  const at0 = (Date.now() - 60000 - EPOCH) * 8192
  const db = new Database(p)
  try {
    db.exec(V1.up)
    const ins = db.prepare('INSERT INTO t_patches (_patchedAt, _sequenceId, _peerId, id, a, b, deletedAt) VALUES (?, ?, ?, ?, ?, ?, ?)')
    ins.run(at0, 1, 5, 1, 'x', 5, null) // sets a and b
    ins.run(at0 + 8192, 2, 5, 1, null, 6, null) // sets only b (a not set)
    ins.run(at0 + 16384, 3, 5, 2, 'y', null, null) // row 2, only a
    db.exec("INSERT INTO t (id, a, b) VALUES (1, 'x', 6), (2, 'y', NULL)")
  } finally {
    db.close()
  }
  // The user adopts the existing tables with an idempotent first migration.
  const ADOPT = { up: V1.up.replace(/CREATE TABLE/g, 'CREATE TABLE IF NOT EXISTS'), down: V1.down }
  const old = open(p)
  assert.deepEqual(old.migrate([ADOPT]), { from: 0, to: 1 })
  assert.deepEqual(old.all('SELECT id, a, b FROM t ORDER BY id'), [{ id: 1, a: 'x', b: 6 }, { id: 2, a: 'y', b: null }])
  // A later local write of b only leaves a alone.
  old.upsert('t', { id: 1, b: 7 })
  assert.deepEqual(old.get('SELECT id, a, b FROM t WHERE id = 1'), { id: 1, a: 'x', b: 7 })
  // A fresh peer fetches origin 5's patches from this file and reads them as replic-sqlite meant.
  const fresh = open(file(), { peerId: 6 })
  fresh.migrate([ADOPT])
  const q = []
  old.addPeer(6, (f) => q.push([fresh, Buffer.from(f)]))
  fresh.addPeer(old.peerId, (f) => q.push([old, Buffer.from(f)]))
  for (let round = 0; round < 20; round++) {
    old.flush(); fresh.flush(); old.tick(); fresh.tick()
    let n = 0
    while (q.length && n++ < 1000) { const [to, f] = q.shift(); to.applyPatches(f) }
    const st = fresh.status().peers.find((x) => x.peerId === 5)
    if (st && st.contiguousSeq === 3 && fresh.get('SELECT b FROM t WHERE id = 1 AND b = 7')) break
  }
  assert.deepEqual(fresh.all('SELECT id, a, b FROM t ORDER BY id'), [{ id: 1, a: 'x', b: 7 }, { id: 2, a: 'y', b: null }])
  await old.close({ timeoutMs: 0 })
  await fresh.close({ timeoutMs: 0 })
})
