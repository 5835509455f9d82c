'use strict'
// A database written by replic-sqlite 0.4.x (its documented layout: user
// tables plus <table>_patches twins with _patchedAt, _sequenceId, _peerId,
// NULL meaning "not set") opens as is and keeps its rows, patches and HLC.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const Database = require('./helpers/sqlite.js')
const { Replicator } = require('..')

const HLC = (ms, c = 0) => (ms - 1735689600000) * 8192 + c

test('replic-sqlite file opens unchanged and replicates', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-replic-'))
  const file = path.join(dir, 'old.db')
  const db = new Database(file)
  db.exec(`CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, done INTEGER, deletedAt INTEGER, PRIMARY KEY (id, tenantId)) STRICT;
           CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
             id INTEGER, tenantId INTEGER, title TEXT, done INTEGER, deletedAt INTEGER) STRICT;`)
  const future = Date.now() + 1000
  const ins = db.prepare('INSERT INTO todo_patches VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
  ins.run(HLC(future - 5000), 1, 77, 1, 1, 'first', null, null)
  ins.run(HLC(future - 4000), 2, 77, 1, 1, null, 1, null) // NULL title = not set
  ins.run(HLC(future), 1, 88, 2, 1, 'other', 0, null)
  db.exec("INSERT INTO todo VALUES (1, 1, 'first', 1, NULL), (2, 1, 'other', 0, NULL)")
  db.close()

  const r = new Replicator({ path: file, peerId: 5, heartbeatMs: 0 })
  assert.deepEqual(r.all('SELECT * FROM todo ORDER BY id'), [
    { id: 1, tenantId: 1, title: 'first', done: 1, deletedAt: null },
    { id: 2, tenantId: 1, title: 'other', done: 0, deletedAt: null }
  ])
  assert.equal(r.get('SELECT count(*) AS n FROM todo_patches').n, 3)
  // The HLC continues above the file's highest stamp.
  r.upsert('todo', { id: 1, tenantId: 1, title: 'mine' })
  const mine = r.get('SELECT _patchedAt FROM todo_patches WHERE _peerId = 5')
  assert.ok(mine._patchedAt > HLC(future))
  // Sequence vectors were rebuilt from the file.
  const st = r.status()
  assert.deepEqual(st.peers.filter((p) => p.peerId === 77 || p.peerId === 88).map((p) => [p.peerId, p.contiguousSeq]), [[77, 2], [88, 1]])

  // A fresh peer gets everything, old patches included, with their meaning.
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 6, heartbeatMs: 0 })
  b.migrate([{ up: `CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, done INTEGER, deletedAt INTEGER, PRIMARY KEY (id, tenantId)) STRICT;
           CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
             id INTEGER, tenantId INTEGER, title TEXT, done INTEGER, deletedAt INTEGER) STRICT;` }])
  const q = []
  r.addPeer(6, (f) => q.push([b, f]))
  b.addPeer(5, (f) => q.push([r, f]))
  for (let i = 0; i < 20; i++) {
    r.tick(); b.tick()
    while (q.length) { const [to, f] = q.shift(); to.applyPatches(f) }
  }
  assert.deepEqual(b.all('SELECT * FROM todo ORDER BY id'), r.all('SELECT * FROM todo ORDER BY id'))
  assert.equal(b.get('SELECT title FROM todo WHERE id = 1').title, 'mine')
  assert.equal(b.get('SELECT done FROM todo WHERE id = 1').done, 1)
  await r.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})
