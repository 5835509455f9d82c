'use strict'
// The 'change' event (issue 12): once per committed local transaction and
// once per applied frame that changed rows, with { table, key, columns,
// origin, deleted }; nothing is collected while nobody listens.
const test = require('node:test')
const assert = require('node:assert/strict')
const { cluster } = require('./helpers/pair.js')

test('local writes: one event per commit, with the changed columns', async () => {
  const c = cluster()
  const a = c.open(1)
  try {
    const events = []
    a.on('change', (changes) => events.push(changes))
    a.upsert('t', { id: 1, a: 'x', b: 1 })
    assert.deepEqual(events.pop(), [{ table: 't', key: { id: 1 }, columns: ['a', 'b'], origin: 1, deleted: false }])
    a.upsertMany('t', [{ id: 2, a: 'y' }, { id: 3, b: 3 }])
    assert.deepEqual(events.pop().map((e) => [e.key.id, e.columns]), [[2, ['a']], [3, ['b']]])
    a.delete('t', { id: 3 })
    assert.deepEqual(events.pop(), [{ table: 't', key: { id: 3 }, columns: ['deletedAt'], origin: 1, deleted: true }])
    a.prepare('UPDATE t SET b = 7 WHERE id = ?').run(1)
    assert.deepEqual(events.pop(), [{ table: 't', key: { id: 1 }, columns: ['b'], origin: 1, deleted: false }])
    a.exec("INSERT INTO todo (id, tenantId, title) VALUES (1, 2, 'x')")
    assert.deepEqual(events.pop(), [{ table: 'todo', key: { id: 1, tenantId: 2 }, columns: ['title', 'done', 'deletedAt'], origin: 1, deleted: false }])
    // A whole transaction: one event.
    a.transaction(() => {
      a.upsert('t', { id: 4, a: 'w' })
      a.exec("UPDATE todo SET done = 1; INSERT INTO notes (body) VALUES ('local')")
      assert.equal(events.length, 0, 'no event before the commit')
    })()
    assert.equal(events.length, 1)
    assert.deepEqual(events.pop().map((e) => `${e.table}:${e.columns}`), ['t:a', 'todo:done'])
    // No change, no event; a rolled-back transaction, no event.
    a.exec('UPDATE t SET a = a')
    assert.throws(() => a.transaction(() => { a.upsert('t', { id: 5 }); throw new Error('x') })())
    assert.equal(events.length, 0)
  } finally {
    await c.close()
  }
})

test('remote frames: one event per applied frame, with the columns that won', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    const seen = []
    b.on('change', (changes) => seen.push(changes))
    a.transaction(() => {
      a.upsert('t', { id: 1, a: 'x', b: 1 })
      a.upsert('todo', { id: 1, tenantId: 1, title: 't' })
    })()
    a.flush(); c.deliver()
    assert.equal(seen.length, 1)
    assert.deepEqual(seen[0], [
      { table: 't', key: { id: 1 }, columns: ['a', 'b'], origin: 1, deleted: false },
      { table: 'todo', key: { id: 1, tenantId: 1 }, columns: ['title'], origin: 1, deleted: false }
    ])
    // b writes column a later: a's older-stamped write to a loses there.
    const older = { id: 1, a: 'older', b: 2 }
    a.upsert('t', older)
    // Same process, same wall clock: a few ms later, b's stamp is higher.
    await new Promise((resolve) => setTimeout(resolve, 5))
    b.upsert('t', { id: 1, a: 'newer' })
    seen.length = 0
    a.flush(); c.deliver()
    const remote = seen.flat().filter((ch) => ch.origin === 1)
    assert.equal(remote.length, 1)
    assert.deepEqual(remote[0].columns, ['b'], 'only the column that won is reported')
    // A duplicate frame changes nothing: no event.
    seen.length = 0
    a.delete('t', { id: 1 })
    a.flush()
    const frames = c.take(2)
    for (const f of frames) b.applyPatches(f.frame)
    for (const f of frames) b.applyPatches(f.frame)
    assert.equal(seen.length, 1)
    assert.equal(seen[0][0].deleted, true)
  } finally {
    await c.close()
  }
})

test('nothing is collected while nobody listens', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    a.upsert('t', { id: 1, a: 'x' })
    a.flush(); c.deliver()
    assert.deepEqual(a._native.takeChanges(), [], 'no records without a listener')
    assert.deepEqual(b._native.takeChanges(), [])
    const events = []
    const listener = (ch) => events.push(ch)
    b.on('change', listener)
    a.upsert('t', { id: 2, a: 'y' })
    a.flush(); c.deliver()
    assert.equal(events.length, 1)
    b.off('change', listener)
    a.upsert('t', { id: 3, a: 'z' })
    a.flush(); c.deliver()
    assert.equal(events.length, 1)
    assert.deepEqual(b._native.takeChanges(), [], 'collection stops with the last listener')
    b.once('change', listener)
    a.upsert('t', { id: 4, a: 'w' })
    a.flush(); c.deliver()
    assert.equal(events.length, 2)
    assert.equal(b.listenerCount('change'), 0)
  } finally {
    await c.close()
  }
})

test('migrate(): kept patches the new schema can apply are one change event', async () => {
  const fs = require('node:fs')
  const os = require('node:os')
  const path = require('node:path')
  const { Replicator } = require('..')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-change-migrate-'))
  const v1 = {
    up: `CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT);
         CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, a TEXT);`
  }
  const v2 = { up: 'ALTER TABLE t ADD COLUMN b INTEGER; ALTER TABLE t_patches ADD COLUMN b INTEGER;', down: 'ALTER TABLE t DROP COLUMN b; ALTER TABLE t_patches DROP COLUMN b;' }
  const newer = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0 })
  const older = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0 })
  try {
    newer.migrate([v1, v2])
    older.migrate([v1])
    const frames = []
    newer.addPeer(2, (f) => frames.push(Buffer.from(f)))
    older.addPeer(1, () => {})
    newer.flush(); frames.length = 0
    newer.upsert('t', { id: 1, a: 'x', b: 5 })
    newer.upsert('t', { id: 2, b: 6 })
    newer.flush()
    const seen = []
    older.on('change', (changes) => seen.push(changes))
    for (const f of frames) older.applyPatches(f)
    // The older schema holds what it has columns for (row 2: its key);
    // column b of both patches is kept for later.
    assert.deepEqual(seen.flat().map((c) => [c.key.id, c.columns]), [[1, ['a']]])
    assert.deepEqual(older.all('SELECT * FROM t ORDER BY id'), [{ id: 1, a: 'x' }, { id: 2, a: null }])
    seen.length = 0
    older.migrate([v1, v2])
    assert.equal(seen.length, 1, 'one event for the migrate')
    // Each kept patch is merged again whole: it reports every column it
    // holds the winning stamp of (row 1: a, already shown, and b).
    assert.deepEqual(seen[0].map((c) => [c.key.id, c.columns.sort(), c.origin]).sort(), [[1, ['a', 'b'], 1], [2, ['b'], 1]])
    assert.deepEqual(older.all('SELECT id, a, b FROM t ORDER BY id'), [{ id: 1, a: 'x', b: 5 }, { id: 2, a: null, b: 6 }])
    // Nothing left to apply: the next migrate() says nothing.
    older.migrate([v1, v2])
    assert.equal(seen.length, 1)
  } finally {
    await newer.close({ timeoutMs: 0 })
    await older.close({ timeoutMs: 0 })
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
