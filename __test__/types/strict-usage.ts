// Typed use of exec, prepare, transaction and 'change' (issue 12); checked
// by `tsc --noEmit --strict` (tsconfig.json) in __test__/types.test.js.
import { Replicator, type Change, type RunResult, type Statement } from '../../index'

function sqlUsage (r: Replicator): void {
  const self: Replicator = r.exec('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)')
  void self
  const ins: Statement = r.prepare('INSERT INTO t (id, v) VALUES (?, ?)')
  const res: RunResult = ins.run(1, 'x')
  const changes: number = res.changes
  const rowid: number | bigint = res.lastInsertRowid
  const token: string = res.token
  void [changes, rowid, token, ins.source, ins.reader, ins.readonly]
  ins.run([2, 'y'])
  r.prepare('UPDATE t SET v = @v WHERE id = @id').run({ id: 1, v: null })

  const sel = r.prepare<[number], { id: number, v: string | null }>('SELECT id, v FROM t WHERE id > ?')
  const rows: Array<{ id: number, v: string | null }> = sel.all(0)
  const one: { id: number, v: string | null } | undefined = sel.get(1)
  for (const row of sel.iterate(0)) void row.id
  void [rows, one]

  const move = r.transaction((from: number, to: number): string => {
    r.upsert('t', { id: to, v: 'moved' })
    r.prepare('UPDATE t SET v = NULL WHERE id = ?').run(from)
    return r.upsertMany('t', [{ id: from }])
  })
  const last: string = move(1, 2)
  const inTx: boolean = r.inTransaction
  void [last, inTx]

  const onChange = (list: Change[]): void => {
    for (const c of list) {
      const table: string = c.table
      const key: Record<string, unknown> = c.key
      const cols: string[] = c.columns
      const origin: number = c.origin
      const deleted: boolean = c.deleted
      void [table, key, cols, origin, deleted]
    }
  }
  r.on('change', onChange)
  r.once('change', (list) => { void list.length })
  r.off('change', onChange)
}

void sqlUsage

// The Kysely adapter (quilt-sqlite/kysely).
import { Kysely, SqliteDialect } from 'kysely'
import { kyselyDatabase, type KyselySqliteDatabase } from '../../kysely'

interface DB { todo: { id: number, tenantId: number, title: string | null, done: number | null } }

async function ormUsage (r: Replicator): Promise<void> {
  const database: KyselySqliteDatabase = kyselyDatabase(r)
  const db = new Kysely<DB>({ dialect: new SqliteDialect({ database }) })
  await db.insertInto('todo').values({ id: 1, tenantId: 7, title: 'x', done: 0 }).execute()
  const rows: Array<{ id: number, title: string | null }> = await db.selectFrom('todo').select(['id', 'title']).execute()
  void rows
  await db.destroy()
}
void ormUsage
