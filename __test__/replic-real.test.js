'use strict'
// Databases written by the real replic-sqlite (0.4.1, see
// fixtures/replic-real/README.md) open in quilt, migrate with the same
// migrations their app used, keep their rows and patches, apply the patches
// replic-sqlite left pending (other schema versions), and replicate.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const Database = require('./helpers/sqlite.js')
const { Replicator } = require('..')
const MIGRATIONS = require('./fixtures/replic-real/migrations.js')

const FIXTURES = path.join(__dirname, 'fixtures', 'replic-real')
const YEARS = 10 * 365 * 24 * 3600 * 1000 // keep the fixtures' old patches

// What each file holds as replic-sqlite left it.
const FILES = {
  11: {
    file: 'peer11-v2.db',
    version: 2,
    patches: { todo: 2, tag: 1 },
    rows: [
      { id: 1, tenantId: 1, title: null, done: null, deletedAt: null, prio: 9 },
      { id: 4, tenantId: 1, title: 'from 11', done: 0, deletedAt: null, prio: 5 }
    ],
    // v1 patches of peers 22 and 33 (replic never applies pending patches)
    pending: { todo: 5, _: 3 }
  },
  22: {
    file: 'peer22-v1.db',
    version: 1,
    patches: { todo: 5 },
    rows: [
      { id: 1, tenantId: 1, title: 'buy milk', done: 1, deletedAt: null },
      { id: 2, tenantId: 1, title: 'walk the dog', done: 0, deletedAt: null },
      { id: 3, tenantId: 1, title: 'from 33', done: 0, deletedAt: null }
    ],
    pending: { todo: 2, tag: 1, _: 3 } // v2 patches of peer 11
  },
  33: { file: 'peer33-v1.db', version: 1, patches: { todo: 5 }, rows: null, pending: { todo: 2, tag: 1, _: 3 } }
}
FILES[33].rows = FILES[22].rows

// Every peer's writes merged, at v2.
const CONVERGED = [
  { id: 1, tenantId: 1, title: 'buy milk', done: 1, deletedAt: null, prio: 9 },
  { id: 2, tenantId: 1, title: 'walk the dog', done: 0, deletedAt: null, prio: null },
  { id: 3, tenantId: 1, title: 'from 33', done: 0, deletedAt: null, prio: null },
  { id: 4, tenantId: 1, title: 'from 11', done: 0, deletedAt: null, prio: 5 }
]

function copyFixture (dir, name) {
  const to = path.join(dir, name)
  fs.copyFileSync(path.join(FIXTURES, name), to)
  return to
}

function open (file, peerId) {
  const r = new Replicator({ path: file, peerId, heartbeatMs: 0, retentionMs: YEARS })
  r.errors = []
  r.on('error', (e) => r.errors.push(e))
  return r
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
    for (let round = 0; round < 60; round++) {
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

const todo = (r) => r.all('SELECT * FROM todo ORDER BY id, tenantId')
const count = (r, t) => r.get(`SELECT count(*) AS n FROM ${t}_patches`).n

test('the fixtures are what replic-sqlite wrote', () => {
  for (const f of Object.values(FILES)) {
    const db = new Database(path.join(FIXTURES, f.file), { readonly: true })
    assert.equal(db.prepare('SELECT max(id) AS v FROM migrations').get().v, f.version)
    const pending = {}
    for (const row of db.prepare('SELECT tableName AS t, count(*) AS n FROM pending_patches GROUP BY tableName').all()) {
      pending[row.t] = row.n
    }
    assert.deepEqual(pending, f.pending, f.file)
    assert.equal(db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name LIKE '\\_quilt%' ESCAPE '\\'").get().n, 0)
    db.close()
  }
})

test('replic-sqlite files migrate with their own migrations, keep rows and patches, apply pending patches', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-replic-real-'))
  for (const [id, f] of Object.entries(FILES)) {
    const file = copyFixture(dir, f.file)
    const r = open(file, Number(id))
    // replic's recorded migrations are quilt's now
    assert.equal(r.status().schemaVersion, f.version, f.file)
    assert.deepEqual(todo(r), f.rows, f.file)
    for (const [t, n] of Object.entries(f.patches)) assert.equal(count(r, t), n, `${f.file} ${t}_patches`)
    // the same list the replic-sqlite app used: nothing runs twice
    assert.deepEqual(r.migrate(MIGRATIONS.slice(0, f.version)), { from: f.version, to: f.version })
    if (f.version === 2) {
      // peer 11 was on v2: the v1 patches replic-sqlite left pending apply now
      assert.deepEqual(todo(r), CONVERGED)
      assert.equal(count(r, 'todo'), 2 + 5)
      assert.equal(r.status().pending, 0)
    } else {
      // v1 peers keep peer 11's v2 patches (a new column, a new table) pending
      assert.equal(r.status().pending, 3)
      // what v1 can hold of them is applied already: row 4 without its prio
      assert.deepEqual(todo(r), [...f.rows, { id: 4, tenantId: 1, title: 'from 11', done: 0, deletedAt: null }])
      assert.deepEqual(r.migrate(MIGRATIONS), { from: 1, to: 2 })
      assert.equal(r.status().pending, 0)
      assert.deepEqual(todo(r), CONVERGED)
      assert.deepEqual(r.all('SELECT * FROM tag'), [{ id: 1, name: 'home' }])
    }
    // The HLC continues above the file's stamps, the seq above its own.
    const before = r.get('SELECT max(_patchedAt) AS at FROM todo_patches').at
    r.upsert('todo', { id: 9, tenantId: Number(id), title: `quilt ${id}` })
    const mine = r.get('SELECT _patchedAt AS at, _sequenceId AS seq FROM todo_patches WHERE id = 9')
    assert.ok(mine.at > before)
    assert.equal(mine.seq, id === '33' ? 4 : 5) // after its ping and its replic writes
    await r.close({ timeoutMs: 0 })
    // Reopening imports nothing twice and keeps the version.
    const again = open(file, Number(id))
    assert.equal(again.status().schemaVersion, 2)
    assert.equal(again.status().pending, 0)
    assert.deepEqual(again.migrate(MIGRATIONS), { from: 2, to: 2 })
    assert.equal(again.get("SELECT value AS v FROM _quilt_meta WHERE key = 'replic_adopted'").v, Object.values(f.pending).reduce((a, b) => a + b))
    await again.close({ timeoutMs: 0 })
  }
})

test('replic-sqlite files replicate with a fresh quilt peer', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-replic-real-'))
  const reps = Object.entries(FILES).map(([id, f]) => {
    const r = open(copyFixture(dir, f.file), Number(id))
    r.migrate(MIGRATIONS)
    return r
  })
  const fresh = open(path.join(dir, 'fresh.db'), 99)
  fresh.migrate(MIGRATIONS)
  const all = [...reps, fresh]
  const pump = cluster(all)
  for (const r of reps) r.upsert('todo', { id: 10 + r.peerId, tenantId: 1, title: `quilt ${r.peerId}`, prio: 1 })
  fresh.upsert('todo', { id: 2, tenantId: 1, done: 1 })
  pump()
  const expected = todo(reps[0])
  assert.equal(expected.length, 4 + 3)
  assert.equal(expected.find((x) => x.id === 2).done, 1)
  for (const r of all) {
    assert.deepEqual(todo(r), expected, `peer ${r.peerId}`)
    assert.deepEqual(r.all('SELECT * FROM tag'), [{ id: 1, name: 'home' }])
    assert.equal(r.status().pending, 0, `peer ${r.peerId}`)
    assert.deepEqual(r.errors.map((e) => e.code), [], `peer ${r.peerId}`)
  }
  // The fresh peer holds every origin's stream without a hole: replic's
  // pings (which took sequence numbers) came along as kept patches.
  const seqs = Object.fromEntries(fresh.status().peers.map((p) => [p.peerId, [p.contiguousSeq, p.missing]]))
  assert.deepEqual(seqs[11], [5, 0])
  assert.deepEqual(seqs[22], [5, 0])
  assert.deepEqual(seqs[33], [4, 0])
  for (const r of all) await r.close({ timeoutMs: 0 })
})
