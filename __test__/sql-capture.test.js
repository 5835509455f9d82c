'use strict'
// Captured SQL (issue 12): exec()/prepare() writes to replicated tables
// become patches of the changed columns, stamped like upsert() and shipped
// to peers; writes to quilt's tables and DDL on replicated tables are
// refused and change nothing; tables without a _patches twin stay local.
const test = require('node:test')
const assert = require('node:assert/strict')
const { cluster, SCHEMA } = require('./helpers/pair.js')

const patches = (r, table = 't') => r.all(`SELECT _sequenceId AS seq, * FROM ${table}_patches ORDER BY _sequenceId`)

test('INSERT, UPDATE and UPSERT become patches of what changed, and replicate', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    const ins = a.prepare('INSERT INTO t (id, a, b) VALUES (?, ?, ?)')
    assert.deepEqual(ins.run(1, 'x', 10), { changes: 1, lastInsertRowid: 1, token: '1.1' })
    ins.run([2, 'y', 20])
    // INSERT: the whole new row (deletedAt NULL included).
    const p1 = patches(a)[0]
    assert.deepEqual([p1.id, p1.a, p1.b], [1, 'x', 10])
    // UPDATE: the key and the changed column only.
    const up = a.prepare('UPDATE t SET b = b + @inc WHERE id = @id').run({ id: 1, inc: 5 })
    assert.equal(up.changes, 1)
    assert.equal(up.token, '1.3')
    let p = patches(a)
    assert.deepEqual([p[2].id, p[2].a, p[2].b], [1, null, 15])
    // UPSERT hitting an existing row: only the column whose value changed.
    a.prepare('INSERT INTO t (id, a, b) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET a = excluded.a, b = excluded.b').run(2, 'z', 20)
    p = patches(a)
    assert.equal(p.length, 4)
    assert.deepEqual([p[3].id, p[3].a, p[3].b], [2, 'z', null])
    // An UPDATE that changes no value writes no patch and keeps the token.
    const same = a.prepare('UPDATE t SET a = a').run()
    assert.equal(same.changes, 2)
    assert.equal(same.token, '1.4')
    assert.equal(patches(a).length, 4)
    // Multi-row exec in one transaction.
    a.exec("INSERT INTO todo (id, tenantId, title) VALUES (1, 7, 'one'), (2, 7, 'two'); UPDATE todo SET done = 1 WHERE id = 2")
    assert.equal(a.status().seq, 6)
    a.flush()
    c.deliver()
    assert.deepEqual(b.all('SELECT id, a, b FROM t ORDER BY id'), [{ id: 1, a: 'x', b: 15 }, { id: 2, a: 'z', b: 20 }])
    assert.deepEqual(b.all('SELECT id, tenantId, title, done FROM todo ORDER BY id'), [
      { id: 1, tenantId: 7, title: 'one', done: null },
      { id: 2, tenantId: 7, title: 'two', done: 1 }
    ])
    assert.equal(await b.waitFor('1.6', 0), true)
    // Converges with a concurrent upsert on the other side, column by column.
    b.upsert('t', { id: 1, a: 'from-b' })
    a.prepare('UPDATE t SET b = 99 WHERE id = 1').run()
    a.flush(); b.flush(); c.deliver()
    assert.deepEqual(a.get('SELECT a, b FROM t WHERE id = 1'), { a: 'from-b', b: 99 })
    assert.deepEqual(b.get('SELECT a, b FROM t WHERE id = 1'), { a: 'from-b', b: 99 })
  } finally {
    await c.close()
  }
})

test('writes to _patches and _quilt_ tables are refused with E_READONLY; nothing changes', async () => {
  const c = cluster()
  const a = c.open(1)
  try {
    a.upsert('t', { id: 1, a: 'x' })
    const before = patches(a)
    for (const sql of [
      'INSERT INTO t_patches (_patchedAt, _sequenceId, _peerId, id) VALUES (1, 99, 1, 5)',
      'UPDATE t_patches SET a = NULL',
      'DELETE FROM t_patches',
      'UPDATE _quilt_state SET seq = 0',
      'DELETE FROM _quilt_clock_t'
    ]) {
      assert.throws(() => a.exec(sql), { code: 'E_READONLY' }, sql)
      assert.throws(() => a.prepare(sql), { code: 'E_READONLY' }, sql)
    }
    assert.deepEqual(patches(a), before)
    assert.equal(a.status().seq, 1)
  } finally {
    await c.close()
  }
})

test('DDL on replicated tables is refused with E_SCHEMA; local DDL works', async () => {
  const c = cluster()
  const a = c.open(1)
  try {
    for (const sql of [
      'ALTER TABLE t ADD COLUMN c TEXT',
      'DROP TABLE t',
      'DROP TABLE t_patches',
      'CREATE INDEX t_a ON t (a)',
      'CREATE TRIGGER t_tr AFTER INSERT ON t BEGIN SELECT 1; END',
      'CREATE TABLE extra_patches (x)'
    ]) {
      assert.throws(() => a.exec(sql), { code: 'E_SCHEMA' }, sql)
    }
    assert.deepEqual(a.all("SELECT name FROM pragma_table_info('t') ORDER BY cid").map((r) => r.name), ['id', 'a', 'b', 'deletedAt'])
    a.exec('CREATE TABLE scratch (x INTEGER); CREATE INDEX scratch_x ON scratch (x); INSERT INTO scratch VALUES (1)')
    assert.deepEqual(a.all('SELECT x FROM scratch'), [{ x: 1 }])
  } finally {
    await c.close()
  }
})

test('SQL DELETE replicates as a row deletion; a key change is a deletion plus an insert', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  const sync = () => c.sync()
  try {
    a.exec("INSERT INTO t (id, a) VALUES (1, 'x'), (2, 'y'), (3, 'z')")
    sync()
    const seen = []
    b.on('change', (changes) => seen.push(...changes))
    const r = a.prepare('DELETE FROM t WHERE id = ?').run(1)
    assert.equal(r.changes, 1)
    assert.equal(r.token, '1.4')
    a.prepare('UPDATE t SET id = 4 WHERE id = 2').run()
    sync()
    const rows = (x) => x.all('SELECT id, a FROM t ORDER BY id')
    assert.deepEqual(rows(a), [{ id: 3, a: 'z' }, { id: 4, a: 'y' }])
    assert.deepEqual(rows(b), rows(a))
    assert.ok(seen.some((ch) => ch.table === 't' && ch.key.id === 1 && ch.deleted === true && ch.origin === 1), JSON.stringify(seen))
    // An older write arriving after the deletion does not bring the row
    // back; a newer one does, with only what it sets.
    b.exec("UPDATE t SET a = 'late' WHERE id = 3")
    b.flush()
    const late = c.take(1)
    await new Promise((resolve) => setTimeout(resolve, 3))
    a.exec('DELETE FROM t WHERE id = 3')
    for (const { frame } of late) a.applyPatches(frame)
    sync()
    assert.deepEqual(rows(a), [{ id: 4, a: 'y' }])
    assert.deepEqual(rows(b), rows(a))
    await new Promise((resolve) => setTimeout(resolve, 3))
    b.exec('INSERT INTO t (id, b) VALUES (3, 7)')
    sync()
    assert.deepEqual(a.all('SELECT id, a, b FROM t WHERE id = 3'), [{ id: 3, a: null, b: 7 }])
    assert.deepEqual(b.all('SELECT id, a, b FROM t WHERE id = 3'), [{ id: 3, a: null, b: 7 }])
    // A DELETE that matches nothing deletes nothing and writes no patch.
    const before = a.status().seq
    assert.equal(a.prepare('DELETE FROM t WHERE id = 42').run().changes, 0)
    assert.equal(a.status().seq, before)
  } finally {
    await c.close()
  }
})

test('tables without a _patches twin stay local', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    const r = a.prepare('INSERT INTO notes (body) VALUES (?)').run('local only')
    assert.equal(r.changes, 1)
    assert.equal(r.lastInsertRowid, 1)
    assert.equal(r.token, '1.0')
    a.exec("UPDATE notes SET body = 'still local'; DELETE FROM notes WHERE id = 9")
    assert.equal(a.status().seq, 0)
    a.flush(); c.deliver()
    assert.deepEqual(b.all('SELECT * FROM notes'), [])
  } finally {
    await c.close()
  }
})

test('a failing statement rolls back its captured patches and the engine state', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    // The second row breaks the STRICT type of b: the whole exec rolls back.
    assert.throws(() => a.exec("INSERT INTO t (id, b) VALUES (1, 1); INSERT INTO t (id, b) VALUES (2, 'not a number')"))
    assert.equal(a.status().seq, 0)
    assert.deepEqual(a.all('SELECT * FROM t'), [])
    assert.deepEqual(patches(a), [])
    a.flush()
    assert.equal(c.take(2).length, 0)
    // The next write takes seq 1.
    assert.equal(a.prepare('INSERT INTO t (id) VALUES (5)').run().token, '1.1')
  } finally {
    await c.close()
  }
})

test('statements: all/get/iterate, params, reader/readonly, errors', async () => {
  const c = cluster()
  const a = c.open(1)
  try {
    a.upsertMany('t', [{ id: 1, a: 'x', b: 1 }, { id: 2, a: 'y', b: 2 }, { id: 3, a: 'z', b: 3 }])
    const sel = a.prepare('SELECT id, a FROM t WHERE b >= ? ORDER BY id')
    assert.equal(sel.reader, true)
    assert.equal(sel.readonly, true)
    assert.equal(sel.source, 'SELECT id, a FROM t WHERE b >= ? ORDER BY id')
    assert.deepEqual(sel.all(2), [{ id: 2, a: 'y' }, { id: 3, a: 'z' }])
    assert.deepEqual(sel.get(3), { id: 3, a: 'z' })
    assert.equal(sel.get(9), undefined)
    assert.deepEqual([...sel.iterate(1)].map((r) => r.id), [1, 2, 3])
    const named = a.prepare('SELECT a FROM t WHERE id = :id')
    assert.deepEqual(named.get({ id: 2 }), { a: 'y' })
    assert.deepEqual(named.all({ id: 1 }), [{ a: 'x' }])
    const ins = a.prepare('INSERT INTO t (id, a) VALUES (@id, @a)')
    assert.equal(ins.reader, false)
    assert.equal(ins.readonly, false)
    assert.throws(() => ins.all({ id: 4, a: 'w' }), TypeError)
    ins.run({ id: 4, a: 'w' })
    // Named values go over as an array in binding order ($, :, @ alike,
    // a name used twice bound once); a missing or undefined one is an
    // error, as in better-sqlite3, and nothing is written.
    const mixed = a.prepare('INSERT INTO t (id, a, b) VALUES ($id, :a, @b + @b)')
    assert.deepEqual(mixed.run({ b: 2, a: 'm', id: 5, extra: 'ignored' }), { changes: 1, lastInsertRowid: 5, token: '1.5' })
    assert.deepEqual(a.get('SELECT a, b FROM t WHERE id = 5'), { a: 'm', b: 4 })
    assert.throws(() => mixed.run({ id: 6, a: 'n' }), RangeError)
    assert.throws(() => mixed.run({ id: 6, a: 'n', b: undefined }), RangeError)
    assert.equal(a.get('SELECT count(*) AS n FROM t WHERE id = 6').n, 0)
    // Numbered positional parameters take an array.
    a.prepare('UPDATE t SET a = ?2 WHERE id = ?1').run(5, 'numbered')
    assert.equal(a.get('SELECT a FROM t WHERE id = 5').a, 'numbered')
    a.prepare('DELETE FROM t WHERE id = 5').run()
    // RETURNING: rows and a captured write.
    const ret = a.prepare('UPDATE t SET b = b * 10 WHERE id <= ? RETURNING id, b')
    assert.deepEqual(ret.all(2).sort((x, y) => x.id - y.id), [{ id: 1, b: 10 }, { id: 2, b: 20 }])
    assert.equal(a.status().seq, 9)
    assert.throws(() => a.prepare('SELECT 1; SELECT 2'), RangeError)
    assert.throws(() => a.prepare('SELEC nope'), { code: 'E_SQLITE' })
    assert.throws(() => sel.all(1, 2), RangeError)
    assert.throws(() => a.exec('BEGIN'), { code: 'E_ARG' })
    assert.throws(() => a.exec('PRAGMA foreign_keys = OFF'), { code: 'E_ARG' })
    assert.equal(a.exec('SELECT 1'), a)
  } finally {
    await c.close()
  }
  assert.throws(() => a.exec('SELECT 1'), { code: 'E_CLOSED' })
})

test('a prepared statement keeps working across migrate(), and a prepared DDL statement is checked on every run', async () => {
  // prepare() keeps a native handle (the cache key, whether the statement
  // writes, whether it may be DDL), not a compiled statement: after a
  // migration changes the table, the next run recompiles and is captured.
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  const sync = () => c.sync()
  try {
    const ins = a.prepare('INSERT INTO t (id, a) VALUES (?, ?)')
    const read = a.prepare('SELECT id, a FROM t ORDER BY id')
    assert.equal(read.readonly, true)
    ins.run(1, 'before')
    const next = {
      up: 'ALTER TABLE t ADD COLUMN c TEXT; ALTER TABLE t_patches ADD COLUMN c TEXT;',
      down: 'ALTER TABLE t DROP COLUMN c; ALTER TABLE t_patches DROP COLUMN c;'
    }
    for (const r of [a, b]) r.migrate([SCHEMA, next])
    assert.equal(ins.run(2, 'after').token, '1.2')
    assert.deepEqual(read.all(), [{ id: 1, a: 'before' }, { id: 2, a: 'after' }])
    a.prepare('UPDATE t SET c = ? WHERE id = ?').run('new column', 2)
    sync()
    assert.deepEqual(b.all('SELECT id, a, c FROM t ORDER BY id'), [{ id: 1, a: 'before', c: null }, { id: 2, a: 'after', c: 'new column' }])

    // DDL through a prepared statement: refused on each run, nothing changed.
    const ddl = a.prepare('CREATE TABLE IF NOT EXISTS scratch (x INTEGER)')
    ddl.run()
    ddl.run()
    // notes has no _patches twin: this rename would make it replicated.
    const rename = a.prepare('ALTER TABLE scratch RENAME TO notes_patches')
    assert.throws(() => rename.run(), { code: 'E_SCHEMA' })
    assert.throws(() => rename.run(), { code: 'E_SCHEMA' })
    assert.deepEqual(a.all("SELECT name FROM sqlite_master WHERE name LIKE 'scratch%'"), [{ name: 'scratch' }])
  } finally {
    await c.close()
  }
})
