'use strict'
// all()/get() run behind a read-only fence (issue 10, part 6): ATTACH,
// DETACH, transaction statements, PRAGMAs that set something and every
// write are refused with E_READONLY, and nothing they could do survives:
// writes, replication and migrations keep working after the attempt.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-readonly-'))
const SCHEMA = [{
  up: `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);`
}]

// Each of these was accepted by all()/get() before the fence (BEGIN left a
// transaction open that broke every later upsert; ATTACH opened any file).
const REFUSED = [
  'BEGIN',
  'BEGIN IMMEDIATE',
  'COMMIT',
  'ROLLBACK',
  'SAVEPOINT s1',
  'RELEASE s1',
  `ATTACH DATABASE '${path.join(TMP, 'attached.db')}' AS other`,
  "ATTACH DATABASE ':memory:' AS other",
  'DETACH DATABASE other',
  'PRAGMA query_only = 1',
  'PRAGMA foreign_keys = OFF',
  'PRAGMA foreign_keys = ON',
  'PRAGMA synchronous = OFF',
  'PRAGMA user_version = 7',
  'PRAGMA journal_mode = DELETE',
  'PRAGMA optimize',
  'VACUUM',
  `VACUUM INTO '${path.join(TMP, 'copy.db')}'`,
  "INSERT INTO t (id, v) VALUES (100, 'sql')",
  'CREATE TEMP TABLE x (a)'
]

function open (p, peerId) {
  const r = new Replicator({ path: p, peerId, heartbeatMs: 0 })
  r.migrate(SCHEMA)
  return r
}

for (const where of ['file', 'memory']) {
  test(`all()/get() refuse transactions, ATTACH and PRAGMA writes with E_READONLY; writes keep working (${where})`, async () => {
    const file = where === 'file' ? path.join(TMP, 'r.db') : ':memory:'
    const r = open(file, 1)
    r.upsert('t', { id: 1, v: 'first' })
    const fk = r.get('PRAGMA foreign_keys').foreign_keys
    let id = 1
    for (const sql of REFUSED) {
      for (const call of ['all', 'get']) {
        assert.throws(() => r[call](sql), (e) => {
          assert.equal(e.code, 'E_READONLY', `${call}(${sql}): ${e.message}`)
          assert.match(e.message, /read-only/)
          return true
        })
        id++
        const token = r.upsert('t', { id, v: `after ${call}(${sql})` })
        assert.equal(token, `1.${id}`)
        assert.equal(r.get('SELECT count(*) AS n FROM t').n, id, `a write after ${call}(${sql})`)
      }
    }
    assert.deepEqual(r.all('PRAGMA database_list').map((d) => d.name), ['main'], 'nothing attached')
    assert.equal(r.get('PRAGMA user_version').user_version, 0)
    assert.equal(r.get('PRAGMA foreign_keys').foreign_keys, fk, 'foreign_keys unchanged')
    assert.equal(fs.existsSync(path.join(TMP, 'attached.db')), false, 'ATTACH created no file')
    assert.equal(fs.existsSync(path.join(TMP, 'copy.db')), false, 'VACUUM INTO wrote no file')
    await r.close()
    if (where === 'file') {
      // Every write made after a refusal was committed.
      const again = new Replicator({ path: file, heartbeatMs: 0 })
      assert.equal(again.get('SELECT count(*) AS n FROM t').n, id)
      await again.close()
    }
  })
}

test('read-only PRAGMAs and pragma functions stay allowed', async () => {
  const r = open(':memory:', 2)
  r.upsert('t', { id: 1, v: 'x' })
  assert.deepEqual(r.all('PRAGMA table_info(t)').map((c) => c.name), ['id', 'v'])
  assert.deepEqual(r.all("SELECT name FROM pragma_table_info('t') ORDER BY cid").map((c) => c.name), ['id', 'v'])
  assert.ok(r.all('PRAGMA index_list(_quilt_meta)').length >= 1)
  assert.equal(r.get('PRAGMA integrity_check').integrity_check, 'ok')
  assert.equal(typeof r.get('PRAGMA user_version').user_version, 'number')
  assert.deepEqual(r.all('SELECT id, v FROM t'), [{ id: 1, v: 'x' }])
  await r.close()
})

test('after a refused BEGIN, writes still replicate and migrate() still runs', async () => {
  const a = open(':memory:', 11)
  const b = open(':memory:', 12)
  a.addPeer(12, (f) => b.applyPatches(f))
  b.addPeer(11, (f) => a.applyPatches(f))
  assert.throws(() => a.all('BEGIN'), { code: 'E_READONLY' })
  assert.throws(() => b.get('SAVEPOINT x'), { code: 'E_READONLY' })
  const token = a.upsert('t', { id: 1, v: 'replicated' })
  a.flush()
  assert.equal(await b.waitFor(token, 5000), true)
  assert.deepEqual(b.get('SELECT v FROM t WHERE id = 1'), { v: 'replicated' })
  const step2 = { up: 'ALTER TABLE t ADD COLUMN w INTEGER; ALTER TABLE t_patches ADD COLUMN w INTEGER;' }
  assert.deepEqual(a.migrate([...SCHEMA, step2]), { from: 1, to: 2 })
  a.upsert('t', { id: 2, w: 5 })
  assert.equal(a.get('SELECT w FROM t WHERE id = 2').w, 5)
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})
