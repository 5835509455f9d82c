import type { Replicator } from './index'

/** The statement shape Kysely's SqliteDialect drives. */
export interface KyselySqliteStatement {
  readonly reader: boolean
  all (parameters: ReadonlyArray<unknown>): unknown[]
  run (parameters: ReadonlyArray<unknown>): { changes: number | bigint, lastInsertRowid: number | bigint }
  iterate (parameters: ReadonlyArray<unknown>): IterableIterator<unknown>
}

/** A Kysely `SqliteDatabase` backed by a replicator. */
export interface KyselySqliteDatabase {
  prepare (sql: string): KyselySqliteStatement
  close (): void
}

/**
 * Use with `new Kysely({ dialect: new SqliteDialect({ database: kyselyDatabase(replicator) }) })`:
 * reads and captured writes go through quilt.
 */
export function kyselyDatabase (replicator: Replicator): KyselySqliteDatabase
