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

// Calls inside transaction(fn) run without a savepoint each (txn.rs, light
// units). A failed call that left nothing behind keeps the transaction
// going, as in better-sqlite3; one that left rows behind rolls back all.
test('a failed statement or upsert that changed nothing keeps the transaction going', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    a.prepare("INSERT INTO todo (id, tenantId, title) VALUES (1, 1, 'first')").run()
    a.flush(); c.deliver()
    const insert = a.prepare('INSERT INTO todo (id, tenantId, title) VALUES (?, ?, ?)')
    a.transaction(() => {
      insert.run(2, 1, 'two')
      // One row, already there: SQLite refuses before writing.
      assert.throws(() => insert.run(1, 1, 'dup'), (e) => e.code === 'E_SQLITE' && /UNIQUE/.test(e.message))
      // Several rows, the second collides: SQLite undoes the first.
      assert.throws(() => a.prepare("INSERT INTO todo (id, tenantId, title) VALUES (3, 1, 'x'), (1, 1, 'y')").run(), /UNIQUE/)
      // A value of the wrong type for a STRICT column.
      assert.throws(() => a.upsert('t', { id: 1, b: 'not a number' }), TypeError)
      // A bad argument.
      assert.throws(() => a.upsert('t', { id: 1, nope: 1 }), { code: 'E_SCHEMA' })
      a.upsert('t', { id: 1, a: 'kept' })
      insert.run(4, 1, 'four')
      assert.equal(a.inTransaction, true)
    })()
    assert.equal(a.inTransaction, false)
    // Seqs 2, 3, 4: no seq was spent on a failed call.
    assert.equal(a.status().seq, 4)
    assert.deepEqual(a.all('SELECT id, title FROM todo ORDER BY id'), [{ id: 1, title: 'first' }, { id: 2, title: 'two' }, { id: 4, title: 'four' }])
    assert.equal(a.get('SELECT count(*) AS n FROM todo_patches').n, 3)
    a.flush(); c.deliver()
    assert.equal(await b.waitFor('1.4', 1000), true)
    assert.deepEqual(b.all('SELECT id, title FROM todo ORDER BY id'), a.all('SELECT id, title FROM todo ORDER BY id'))
    assert.deepEqual(b.all('SELECT id, a FROM t'), [{ id: 1, a: 'kept' }])
  } finally {
    await c.close()
  }
})

test('a failed statement that left rows behind rolls the whole transaction back, loudly', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    a.prepare("INSERT INTO todo (id, tenantId, title) VALUES (1, 1, 'first')").run()
    a.flush(); c.deliver()
    for (const conflict of ['OR FAIL', 'OR ROLLBACK']) {
      const seq = a.status().seq
      let later
      const nested = a.transaction(() => a.upsert('t', { id: 99 }))
      const tx = a.transaction(() => {
        a.upsert('t', { id: 1, a: 'lost' })
        // OR FAIL keeps row 5 and stops at the duplicate; OR ROLLBACK ends
        // the transaction in SQLite itself.
        assert.throws(() => a.prepare(`INSERT ${conflict} INTO todo (id, tenantId, title) VALUES (5, 1, 'x'), (1, 1, 'y')`).run(), /UNIQUE/)
        assert.equal(a.inTransaction, true, 'still inside fn')
        // Every later write of this fn fails, nothing autocommits.
        assert.throws(() => a.upsert('t', { id: 2, a: 'after' }), { code: 'E_SQLITE' })
        assert.throws(() => a.exec("INSERT INTO todo (id, tenantId, title) VALUES (6, 1, 'z')"), { code: 'E_SQLITE' })
        assert.throws(() => nested(), { code: 'E_SQLITE' })
        later = a.all('SELECT id FROM todo ORDER BY id')
      })
      // fn returned normally: its commit says the transaction is gone.
      assert.throws(() => tx(), { code: 'E_SQLITE' })
      assert.equal(a.inTransaction, false, conflict)
      assert.deepEqual(later, [{ id: 1 }], `${conflict}: reads inside see the rollback`)
      assert.deepEqual(a.all('SELECT id FROM todo ORDER BY id'), [{ id: 1 }])
      assert.deepEqual(a.all('SELECT id FROM t'), [])
      assert.equal(a.status().seq, seq, `${conflict}: no seq spent`)
      a.flush()
      assert.equal(c.take(2).filter((f) => b.applyPatches(f.frame).applied > 0).length, 0, 'nothing shipped')
    }
    // The replicator goes on: the next writes reuse the seqs and arrive.
    a.transaction(() => { a.upsert('t', { id: 3, a: 'next' }); a.upsert('t', { id: 4, a: 'next' }) })()
    a.flush(); c.deliver()
    assert.equal(await b.waitFor('1.3', 1000), true)
    assert.deepEqual(b.all('SELECT id, a FROM t ORDER BY id'), [{ id: 3, a: 'next' }, { id: 4, a: 'next' }])
    assert.deepEqual(b.all('SELECT id FROM todo ORDER BY id'), [{ id: 1 }])
  } finally {
    await c.close()
  }
})

test('a failed statement whose trigger left a replicated row behind rolls the transaction back', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  try {
    // A local table whose BEFORE trigger writes the replicated table t and
    // then stops the statement with RAISE(FAIL), which keeps what ran.
    a.exec(`CREATE TRIGGER notes_to_t BEFORE INSERT ON notes BEGIN
              INSERT INTO t (id, a) VALUES (NEW.id, 'from trigger');
              SELECT RAISE(FAIL, 'refused by trigger') WHERE NEW.body = 'fail';
            END`)
    const note = a.prepare('INSERT INTO notes (id, body) VALUES (?, ?)')
    // Outside a transaction the statement's own unit rolls back whole.
    assert.throws(() => note.run(1, 'fail'), /refused by trigger/)
    assert.deepEqual(a.all('SELECT id FROM t'), [])
    // Inside one: the trigger's row cannot be taken back alone.
    const tx = a.transaction(() => {
      a.upsert('t', { id: 5, a: 'before' })
      assert.throws(() => note.run(7, 'fail'), /refused by trigger/)
      assert.throws(() => a.upsert('t', { id: 6 }), { code: 'E_SQLITE' })
    })
    assert.throws(() => tx(), { code: 'E_SQLITE' })
    assert.deepEqual(a.all('SELECT id FROM t'), [], 'no row of t without its patch')
    assert.equal(a.status().seq, 0)
    // A statement that fails with nothing left behind keeps it going.
    a.transaction(() => {
      note.run(8, 'ok')
      assert.throws(() => note.run(8, 'dup'), /UNIQUE|refused/)
    })()
    a.flush(); c.deliver()
    assert.deepEqual(b.all('SELECT id, a FROM t'), [{ id: 8, a: 'from trigger' }])
    assert.deepEqual(a.all('SELECT id, a FROM t'), b.all('SELECT id, a FROM t'))
  } finally {
    await c.close()
  }
})

test('random transactions with failing calls: every peer converges, no row without its patch', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  // A seeded PRNG (mulberry32): the same run every time.
  let seed = 0x5eed
  const rnd = (n) => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return (((x ^ (x >>> 14)) >>> 0) % n)
  }
  try {
    a.exec(`CREATE TRIGGER notes_to_t BEFORE INSERT ON notes BEGIN
              INSERT OR REPLACE INTO t (id, a) VALUES (NEW.id, 'trigger');
              SELECT RAISE(FAIL, 'refused by trigger') WHERE NEW.body = 'fail';
            END`)
    const calls = [
      () => a.upsert('t', { id: 1 + rnd(20), a: `u${rnd(100)}`, b: rnd(5) }),
      () => a.upsert('t', { id: 1 + rnd(20), b: 'not a number' }), // TypeError: nothing written
      () => a.prepare('INSERT INTO t (id, a) VALUES (?, ?)').run(1 + rnd(20), 'ins'), // UNIQUE often
      () => a.prepare('INSERT INTO t (id, a) VALUES (?, ?), (?, ?)').run(100 + rnd(10), 'x', 1 + rnd(20), 'y'), // ABORT half-way
      () => a.prepare('INSERT OR FAIL INTO t (id, a) VALUES (?, ?), (?, ?)').run(200 + rnd(10), 'f', 1 + rnd(20), 'g'), // FAIL half-way
      () => a.prepare('UPDATE t SET b = ? WHERE id % 3 = ?').run(rnd(9), rnd(3)),
      () => a.prepare('DELETE FROM t WHERE id = ?').run(1 + rnd(20)),
      () => a.prepare('INSERT INTO notes (id, body) VALUES (?, ?)').run(300 + rnd(1000), rnd(3) === 0 ? 'fail' : 'ok'),
      () => a.exec(`UPDATE todo SET done = ${rnd(2)}; INSERT OR IGNORE INTO todo (id, tenantId, title) VALUES (${rnd(5)}, 1, 'td')`)
    ]
    let aborted = 0
    let committed = 0
    for (let round = 0; round < 60; round++) {
      const tx = a.transaction(() => {
        for (let k = 0, n = 1 + rnd(6); k < n; k++) {
          try { calls[rnd(calls.length)]() } catch (e) {
            assert.ok(e.code || e instanceof TypeError, `a typed error: ${e.message}`)
          }
        }
      })
      try { tx(); committed++ } catch (e) { assert.equal(e.code, 'E_SQLITE'); aborted++ }
      assert.equal(a.inTransaction, false)
      if (rnd(3) === 0) { a.flush(); c.deliver() }
      // Every row of t on a has a patch that set it (none written behind quilt's back).
      const orphan = a.get(`SELECT count(*) AS n FROM t WHERE NOT EXISTS (
        SELECT 1 FROM t_patches p WHERE p.id = t.id)`).n
      assert.equal(orphan, 0, `round ${round}: rows of t without a patch`)
    }
    a.flush(); c.deliver()
    assert.ok(committed > 10 && aborted > 0, `both kinds happened (${committed} committed, ${aborted} rolled back)`)
    const seq = a.status().seq
    assert.equal(await b.waitFor(`1.${seq}`, 2000), true)
    for (const q of ['SELECT id, a, b FROM t ORDER BY id', 'SELECT id, tenantId, title, done FROM todo ORDER BY id, tenantId']) {
      assert.deepEqual(b.all(q), a.all(q), q)
    }
  } finally {
    await c.close()
  }
})
