'use strict'
// A patch the local table refuses (a STRICT type or NOT NULL the writer's
// schema lacks) does not poison its frame: the rest applies, the refused
// patch is kept whole (pending), an 'error' event says so, and nothing loops.
const test = require('node:test')
const assert = require('node:assert/strict')
const { Replicator } = require('..')

test('a refused patch is kept, the rest of the frame applies, and it is not asked for again', async () => {
  const loose = new Replicator({ path: ':memory:', peerId: 1, heartbeatMs: 0 })
  const strict = new Replicator({ path: ':memory:', peerId: 2, heartbeatMs: 0 })
  loose.migrate([{ up: `CREATE TABLE t (id INTEGER PRIMARY KEY, n);
    CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, n);` }])
  strict.migrate([{ up: `CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER) STRICT;
    CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, n INTEGER) STRICT;` }])
  const q = []
  loose.addPeer(2, (f) => q.push([strict, f]))
  strict.addPeer(1, (f) => q.push([loose, f]))
  const errors = []
  strict.on('error', (e) => errors.push(e))
  loose.upsertMany('t', [{ id: 1, n: 1 }, { id: 2, n: 'not a number' }, { id: 3, n: 3 }])
  loose.flush()
  for (let i = 0; i < 5; i++) {
    while (q.length) { const [to, f] = q.shift(); to.applyPatches(f) }
    loose.tick(); strict.tick()
  }
  assert.deepEqual(strict.all('SELECT * FROM t ORDER BY id'), [{ id: 1, n: 1 }, { id: 3, n: 3 }])
  assert.equal(strict.status().pending, 1)
  assert.equal(strict.status().peers.find((p) => p.peerId === 1).missing, 0, 'the refused patch counts as held: no request loop')
  assert.ok(errors.some((e) => e.code === 'E_SCHEMA' && /constraint/.test(e.message)))
  await loose.close({ timeoutMs: 0 })
  await strict.close({ timeoutMs: 0 })
})
