'use strict'
// Kysely on quilt: `new Kysely({ dialect: new SqliteDialect({ database:
// kyselyDatabase(replicator) }) })`. Kysely's SqliteDialect drives a
// better-sqlite3-shaped database (`prepare(sql)` -> `{ reader, all, run,
// iterate }`), which is what `replicator.prepare()` returns, so every query
// Kysely compiles runs through quilt: reads as reads, writes captured as
// patches and replicated (docs: README, "Using an ORM").
//
// Kysely's own transactions (`db.transaction()`) send BEGIN/COMMIT as SQL,
// which quilt refuses (E_ARG): wrap Kysely calls in `replicator.transaction`
// only with synchronous work; see the README for the pattern.

/**
 * A Kysely `SqliteDatabase` backed by a replicator.
 * @param {import('..').Replicator} replicator
 */
function kyselyDatabase (replicator) {
  if (!replicator || typeof replicator.prepare !== 'function') {
    throw new TypeError('kyselyDatabase(replicator): expected a quilt-sqlite Replicator')
  }
  return {
    prepare (sql) {
      const st = replicator.prepare(sql)
      return {
        reader: st.reader,
        all: (params) => st.all(params ?? []),
        run: (params) => {
          const r = st.run(params ?? [])
          return { changes: r.changes, lastInsertRowid: r.lastInsertRowid }
        },
        iterate: (params) => st.iterate(params ?? [])
      }
    },
    // The replicator outlives the Kysely instance: closing Kysely does not
    // close it (call replicator.close() yourself).
    close () {}
  }
}

module.exports = { kyselyDatabase }
