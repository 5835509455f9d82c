'use strict'
// transaction(fn) (issue 12): upsert/upsertMany/delete and captured SQL
// across tables commit together and leave in one frame; a throw rolls back
// and nothing is shipped; nested calls are savepoints.
const test = require('node:test')
const assert = require('node:assert/strict')
const { cluster } = require('./helpers/pair.js')

test('mixed upsert and SQL across two tables commit together, in one frame', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    const addTodo = a.prepare('INSERT INTO todo (id, tenantId, title) VALUES (?, ?, ?)')
    const tx = a.transaction((n) => {
      a.upsert('t', { id: 1, a: 'x' })
      addTodo.run(1, 7, 'one')
      a.exec("UPDATE t SET b = 5 WHERE id = 1; INSERT INTO todo (id, tenantId, title) VALUES (2, 7, 'two')")
      a.upsertMany('t', [{ id: 2, a: 'y' }, { id: 3, a: 'z' }])
      a.delete('todo', { id: 2, tenantId: 7 })
      assert.equal(a.inTransaction, true)
      return n * 2
    })
    assert.equal(tx(21), 42)
    assert.equal(a.inTransaction, false)
    assert.equal(a.status().seq, 7)
    a.flush()
    const frames = c.take(2)
    assert.equal(frames.length, 1, 'every patch of the transaction in one frame')
    const r = b.applyPatches(frames[0].frame)
    assert.equal(r.applied, 7)
    assert.deepEqual(b.all('SELECT id, a, b FROM t ORDER BY id'), [{ id: 1, a: 'x', b: 5 }, { id: 2, a: 'y', b: null }, { id: 3, a: 'z', b: null }])
    const todos = b.all('SELECT id, title, deletedAt IS NOT NULL AS gone FROM todo ORDER BY id')
    assert.deepEqual(todos, [{ id: 1, title: 'one', gone: 0 }, { id: 2, title: 'two', gone: 1 }])
  } finally {
    await c.close()
  }
})

test('a throw rolls everything back and nothing is shipped', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    a.upsert('t', { id: 1, a: 'kept' })
    a.flush(); c.deliver()
    const boom = new Error('boom')
    const tx = a.transaction(() => {
      a.upsert('t', { id: 1, a: 'lost' })
      a.exec("INSERT INTO todo (id, tenantId, title) VALUES (1, 1, 'lost')")
      a.flush() // nothing of an open transaction leaves
      throw boom
    })
    assert.throws(() => tx(), (e) => e === boom)
    assert.equal(a.inTransaction, false)
    assert.equal(a.status().seq, 1)
    assert.deepEqual(a.all('SELECT a FROM t'), [{ a: 'kept' }])
    assert.deepEqual(a.all('SELECT * FROM todo'), [])
    assert.equal(a.all('SELECT count(*) AS n FROM t_patches')[0].n, 1)
    a.flush()
    assert.equal(c.take(2).length, 0, 'no frame leaves for a rolled-back transaction')
    // The next write reuses the seq and reaches the peer.
    assert.equal(a.upsert('t', { id: 2, a: 'next' }), '1.2')
    a.flush(); c.deliver()
    assert.deepEqual(b.all('SELECT id, a FROM t ORDER BY id'), [{ id: 1, a: 'kept' }, { id: 2, a: 'next' }])
    // An async fn is refused and rolled back.
    assert.throws(() => a.transaction(async () => { a.upsert('t', { id: 9 }) })(), TypeError)
    assert.equal(a.status().seq, 2)
    // Calls that must not run inside a transaction.
    assert.throws(() => a.transaction(() => a.tick())(), { code: 'E_ARG' })
    assert.throws(() => a.transaction(() => a.migrate([]))(), { code: 'E_ARG' })
    assert.throws(() => a.transaction('nope'), TypeError)
  } finally {
    await c.close()
  }
})

test('a nested transaction that throws rolls back its savepoint only', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    const inner = a.transaction(() => {
      a.upsert('t', { id: 2, a: 'inner' })
      a.exec("UPDATE t SET a = 'inner-changed' WHERE id = 1")
      throw new Error('inner fails')
    })
    const outer = a.transaction(() => {
      a.upsert('t', { id: 1, a: 'outer' })
      assert.throws(() => inner(), /inner fails/)
      a.prepare("INSERT INTO todo (id, tenantId, title) VALUES (1, 1, 'after')").run()
      // A nested transaction that succeeds is part of the outer one.
      a.transaction(() => a.upsert('t', { id: 3, a: 'nested-ok' }))()
    })
    outer()
    assert.equal(a.status().seq, 3)
    a.flush()
    const frames = c.take(2)
    assert.equal(frames.length, 1)
    b.applyPatches(frames[0].frame)
    assert.deepEqual(b.all('SELECT id, a FROM t ORDER BY id'), [{ id: 1, a: 'outer' }, { id: 3, a: 'nested-ok' }])
    assert.deepEqual(b.all('SELECT title FROM todo'), [{ title: 'after' }])
    assert.equal(await b.waitFor('1.3', 0), true)
  } finally {
    await c.close()
  }
})

test('a receiving peer gets all patches of a transaction in one frame, across tables', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    a.transaction(() => {
      for (let i = 1; i <= 20; i++) {
        a.upsert('t', { id: i, a: `row ${i}` })
        a.prepare('INSERT INTO todo (id, tenantId, title) VALUES (?, 1, ?)').run(i, `todo ${i}`)
      }
    })()
    a.flush()
    const frames = c.take(2)
    assert.equal(frames.length, 1)
    const r = b.applyPatches(frames[0].frame)
    assert.equal(r.applied, 40)
    assert.equal(b.get('SELECT count(*) AS n FROM todo').n, 20)
  } finally {
    await c.close()
  }
})
