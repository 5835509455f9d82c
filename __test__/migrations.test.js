'use strict'
// Rolling upgrades (API.md guarantee 3): peers on different schema versions
// keep each other's patches whole and apply them when they migrate.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const V1 = {
  up: `CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, deletedAt INTEGER, PRIMARY KEY (id, tenantId));
       CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, tenantId INTEGER, title TEXT, deletedAt INTEGER);`,
  down: 'DROP TABLE todo; DROP TABLE todo_patches;'
}
const V2 = {
  up: `ALTER TABLE todo ADD COLUMN prio INTEGER DEFAULT 3; ALTER TABLE todo_patches ADD COLUMN prio INTEGER;`,
  down: `ALTER TABLE todo DROP COLUMN prio; ALTER TABLE todo_patches DROP COLUMN prio;`
}
const V3 = {
  up: `CREATE TABLE tag (id INTEGER PRIMARY KEY, name TEXT);
       CREATE TABLE tag_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, name TEXT);`,
  down: 'DROP TABLE tag; DROP TABLE tag_patches;'
}
const V4 = {
  up: `ALTER TABLE todo RENAME COLUMN title TO label; ALTER TABLE todo_patches RENAME COLUMN title TO label;`,
  down: `ALTER TABLE todo RENAME COLUMN label TO title; ALTER TABLE todo_patches RENAME COLUMN label TO title;`,
  renames: { todo: { title: 'label' } }
}

function tmp () {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-mig-'))
}

/** A lossless in-process link between replicators; frames flow on pump(). */
function cluster (reps) {
  const queue = []
  for (const a of reps) {
    for (const b of reps) {
      if (a !== b) a.addPeer(b.peerId, (f) => queue.push([b, f]))
    }
  }
  return function pump () {
    for (let round = 0; round < 50; round++) {
      for (const r of reps) r.flush()
      for (const r of reps) r.tick()
      if (queue.length === 0) return
      while (queue.length) {
        const [to, f] = queue.shift()
        to.applyPatches(f)
      }
    }
  }
}

const rows = (r, sql = 'SELECT * FROM todo ORDER BY id') => r.all(sql)

test('newer writer, older reader: unknown column kept and applied after migrate', async () => {
  const dir = tmp()
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0 })
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0 })
  a.migrate([V1, V2])
  b.migrate([V1])
  const pump = cluster([a, b])
  a.upsert('todo', { id: 1, tenantId: 1, title: 'one', prio: 9 })
  b.upsert('todo', { id: 2, tenantId: 1, title: 'two' })
  pump()
  assert.deepEqual(rows(b), [
    { id: 1, tenantId: 1, title: 'one', deletedAt: null },
    { id: 2, tenantId: 1, title: 'two', deletedAt: null }
  ])
  assert.equal(b.status().pending, 1)
  // Older writer, newer reader: the default comes from the schema.
  assert.equal(a.get('SELECT prio FROM todo WHERE id = 2').prio, 3)
  // A later write to prio on A still wins after B migrates.
  a.upsert('todo', { id: 1, tenantId: 1, prio: 10 })
  pump()
  assert.deepEqual(b.migrate([V1, V2]), { from: 1, to: 2 })
  assert.equal(b.status().pending, 0)
  pump()
  assert.deepEqual(rows(b), rows(a))
  assert.equal(b.get('SELECT prio FROM todo WHERE id = 1').prio, 10)
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})

test('unknown table kept, not re-requested, applied when created', async () => {
  const dir = tmp()
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0 })
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0 })
  a.migrate([V1, V2, V3])
  b.migrate([V1, V2])
  const pump = cluster([a, b])
  a.upsert('tag', { id: 1, name: 'red' })
  pump()
  const st = b.status()
  assert.equal(st.pending, 1)
  assert.equal(st.peers.find((p) => p.peerId === 1).missing, 0)
  const before = b.metrics()
  pump()
  // nothing asked again: no retransmission requests
  assert.match(before, /quilt_retransmissions_total\{kind="requested"\} 0/)
  assert.match(b.metrics(), /quilt_retransmissions_total\{kind="requested"\} 0/)
  b.migrate([V1, V2, V3])
  assert.deepEqual(b.all('SELECT * FROM tag'), [{ id: 1, name: 'red' }])
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})

test('downgrade keeps dropped values; v1 -> v2 -> v1 -> v2 with writes on every version loses nothing', async () => {
  const dir = tmp()
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0 })
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0 })
  const c = new Replicator({ path: path.join(dir, 'c.db'), peerId: 3, heartbeatMs: 0 })
  a.migrate([V1])
  b.migrate([V1, V2])
  c.migrate([V1])
  const pump = cluster([a, b, c])
  b.upsert('todo', { id: 1, tenantId: 1, title: 'b1', prio: 1 })
  a.upsert('todo', { id: 2, tenantId: 1, title: 'a1' })
  pump()
  a.migrate([V1, V2])
  a.upsert('todo', { id: 2, tenantId: 1, prio: 7 })
  pump()
  // b goes back down: prio values survive in kept patches
  assert.deepEqual(b.migrate([V1]), { from: 2, to: 1 })
  b.upsert('todo', { id: 3, tenantId: 1, title: 'b-v1' })
  a.upsert('todo', { id: 1, tenantId: 1, prio: 5 })
  pump()
  assert.ok(b.status().pending > 0)
  b.migrate([V1, V2])
  c.migrate([V1, V2])
  pump()
  const want = rows(a)
  assert.deepEqual(rows(b), want)
  assert.deepEqual(rows(c), want)
  assert.deepEqual(want.map((r) => [r.id, r.title, r.prio]), [[1, 'b1', 5], [2, 'a1', 7], [3, 'b-v1', 3]])
  for (const r of [a, b, c]) await r.close({ timeoutMs: 0 })
})

test('renames: kept patches and older peers follow a declared rename', async () => {
  const dir = tmp()
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0 })
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0 })
  a.migrate([V1, V2, V3, V4])
  b.migrate([V1, V2, V3])
  const pump = cluster([a, b])
  b.upsert('todo', { id: 1, tenantId: 1, title: 'from-old' }) // older writer names title
  a.upsert('todo', { id: 2, tenantId: 1, label: 'from-new' }) // newer writer names label
  pump()
  assert.equal(a.get('SELECT label FROM todo WHERE id = 1').label, 'from-old')
  assert.equal(b.get('SELECT title FROM todo WHERE id = 2').title, null)
  b.migrate([V1, V2, V3, V4])
  pump()
  assert.deepEqual(rows(a), rows(b))
  assert.equal(b.get('SELECT label FROM todo WHERE id = 2').label, 'from-new')
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})

test('migrate is idempotent on restart and refuses a missing down', async () => {
  const dir = tmp()
  const file = path.join(dir, 'a.db')
  let a = new Replicator({ path: file, peerId: 1, heartbeatMs: 0 })
  assert.deepEqual(a.migrate([V1, V2]), { from: 0, to: 2 })
  await a.close()
  a = new Replicator({ path: file, heartbeatMs: 0 })
  assert.deepEqual(a.migrate([V1, V2]), { from: 2, to: 2 })
  assert.equal(a.status().schemaVersion, 2)
  await a.close()
  const x = new Replicator({ path: path.join(dir, 'x.db'), heartbeatMs: 0 })
  x.migrate([V1, { up: 'CREATE TABLE z (a INTEGER PRIMARY KEY)' }])
  assert.throws(() => x.migrate([V1]), { code: 'E_SCHEMA' })
  assert.equal(x.status().schemaVersion, 2)
  await x.close()
})
