'use strict'
// Column names are not limited by the on-disk format (clock slots and null
// bitmaps go by column ordinal, docs/design.md): a name with a comma and one
// of 300 bytes are written, set to NULL on purpose, and replicated to a
// second replicator through frames; both end equal.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const LONG = 'n'.repeat(300)
const q = (n) => `"${n}"`
const COLS = `id INTEGER NOT NULL PRIMARY KEY, ${q('a,b')} TEXT, ${q(LONG)} TEXT, a TEXT, b TEXT`
const MIGRATION = {
  up: `CREATE TABLE t (${COLS}) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, ${q('a,b')} TEXT, ${q(LONG)} TEXT, a TEXT, b TEXT) STRICT;`
}

function pump (reps) {
  const queue = []
  for (const x of reps) for (const y of reps) if (x !== y) x.addPeer(y.peerId, (f) => queue.push([y, f]))
  for (let round = 0; round < 40; round++) {
    for (const r of reps) r.flush()
    for (const r of reps) r.tick()
    if (queue.length === 0) return
    while (queue.length) {
      const [to, f] = queue.shift()
      to.applyPatches(f)
    }
  }
}

const rows = (r) => r.all(`SELECT id, ${q('a,b')} AS ab, ${q(LONG)} AS long, a, b FROM t ORDER BY id`)

test('a comma and a 300-byte name: written, set NULL, replicated, equal', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-names-'))
  const one = new Replicator({ path: path.join(dir, 'one.db'), peerId: 1, heartbeatMs: 0 })
  const two = new Replicator({ path: path.join(dir, 'two.db'), peerId: 2, heartbeatMs: 0 })
  for (const r of [one, two]) r.migrate([MIGRATION])
  one.upsert('t', { id: 1, 'a,b': 'comma', [LONG]: 'long', a: 'A', b: 'B' })
  one.upsert('t', { id: 2, 'a,b': 'x', [LONG]: 'y', a: 'A2', b: 'B2' })
  pump([one, two])
  // Explicit NULLs of the odd names; `a` and `b` (the halves of "a,b") stay.
  one.upsert('t', { id: 1, 'a,b': null, [LONG]: null })
  two.upsert('t', { id: 2, [LONG]: null })
  pump([one, two])
  const want = [
    { id: 1, ab: null, long: null, a: 'A', b: 'B' },
    { id: 2, ab: 'x', long: null, a: 'A2', b: 'B2' }
  ]
  assert.deepEqual(rows(one), want)
  assert.deepEqual(rows(two), want)
  // The stored patch marks its NULLs in a bitmap, not by name.
  const p = two.get('SELECT _quiltNulls AS n FROM t_patches WHERE _peerId = 1 AND _sequenceId = 3')
  assert.ok(p.n instanceof Uint8Array, 'a BLOB')
  assert.ok(p.n.length <= 2)
  // A third peer catching up later from the stored patches gets the same.
  const three = new Replicator({ path: path.join(dir, 'three.db'), peerId: 3, heartbeatMs: 0 })
  three.migrate([MIGRATION])
  pump([one, two, three])
  assert.deepEqual(rows(three), want)
  for (const r of [one, two, three]) await r.close({ timeoutMs: 0 })
  fs.rmSync(dir, { recursive: true, force: true })
})
