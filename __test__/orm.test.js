'use strict'
// An ORM on top (issue 12): Kysely, through the SqliteDialect adapter quilt
// exports (`quilt-sqlite/kysely`). Inserts, updates, upserts, deletes and
// selects written with Kysely on one peer are captured, replicated and read
// back on the other.
const test = require('node:test')
const assert = require('node:assert/strict')
const { Kysely, SqliteDialect, sql } = require('kysely')
const { kyselyDatabase } = require('../lib/kysely.js')
const { cluster } = require('./helpers/pair.js')

test('Kysely reads and writes through quilt, and its writes replicate', async () => {
  const c = cluster()
  const a = c.open(1)
  const b = c.open(2)
  c.connect()
  const sync = () => c.sync()
  const db = new Kysely({ dialect: new SqliteDialect({ database: kyselyDatabase(a) }) })
  const dbB = new Kysely({ dialect: new SqliteDialect({ database: kyselyDatabase(b) }) })
  try {
    await db.insertInto('todo').values([
      { id: 1, tenantId: 7, title: 'buy milk', done: 0 },
      { id: 2, tenantId: 7, title: 'walk dog', done: 0 },
      { id: 3, tenantId: 8, title: 'other tenant', done: 0 }
    ]).execute()
    const upd = await db.updateTable('todo').set({ done: 1 }).where('tenantId', '=', 7).where('id', '=', 1).executeTakeFirst()
    assert.equal(Number(upd.numUpdatedRows), 1)
    await db.insertInto('todo').values({ id: 2, tenantId: 7, title: 'walk the dog', done: 0 })
      .onConflict((oc) => oc.columns(['id', 'tenantId']).doUpdateSet({ title: (eb) => eb.ref('excluded.title') }))
      .execute()
    await db.deleteFrom('todo').where('tenantId', '=', 8).execute()
    sync()
    const rows = (k) => k.selectFrom('todo').select(['id', 'tenantId', 'title', 'done']).orderBy('id').execute()
    const want = [
      { id: 1, tenantId: 7, title: 'buy milk', done: 1 },
      { id: 2, tenantId: 7, title: 'walk the dog', done: 0 }
    ]
    assert.deepEqual(await rows(db), want)
    assert.deepEqual(await rows(dbB), want)
    // Every Kysely write became patches of what changed (3 inserts, the
    // update's `done`, the upsert's `title`, one row deletion).
    const patches = a.all('SELECT _sequenceId AS seq FROM todo_patches ORDER BY _sequenceId')
    assert.equal(patches.length, 6)
    // Raw SQL through Kysely works too, and aggregates read as reads.
    const n = await sql`SELECT count(*) AS n FROM todo WHERE tenantId = ${7}`.execute(dbB)
    assert.deepEqual(n.rows, [{ n: 2 }])
    // quilt's rules hold through the ORM: writing a patches table is refused.
    await assert.rejects(db.deleteFrom('todo_patches').execute(), { code: 'E_READONLY' })
    // Kysely's own transactions send BEGIN, which quilt refuses (E_ARG).
    await assert.rejects(db.transaction().execute(async (trx) => trx.deleteFrom('todo').execute()), { code: 'E_ARG' })
    assert.equal((await rows(db)).length, 2)
  } finally {
    await db.destroy()
    await dbB.destroy()
    await c.close()
  }
})
