'use strict'
// Writes seed frames (patches, pings, requests, with and without MAC) for
// the fuzz corpora: `node fuzz/make-seeds.js`.
const fs = require('node:fs')
const path = require('node:path')
const { Replicator } = require('..')
const SCHEMA = `CREATE TABLE t (id INTEGER NOT NULL, k INTEGER NOT NULL, a TEXT, b REAL, deletedAt INTEGER, PRIMARY KEY (id, k));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, k INTEGER, a TEXT, b REAL, deletedAt INTEGER);`
const frames = []
for (const key of [undefined, 'key']) {
  const a = new Replicator({ path: ':memory:', peerId: 2, heartbeatMs: 0, clusterKey: key })
  const b = new Replicator({ path: ':memory:', peerId: 1, heartbeatMs: 0, clusterKey: key })
  a.migrate([{ up: SCHEMA }]); b.migrate([{ up: SCHEMA }])
  a.addPeer(1, (f) => frames.push(f))
  b.addPeer(2, (f) => frames.push(f))
  a.upsert('t', { id: 1, k: 1, a: 'x', b: 1.5 })
  a.upsertMany('t', [{ id: 2, k: 1, a: null }, { id: 3, k: 2, b: 2 }])
  a.delete('t', { id: 1, k: 1 })
  a.flush()
  a.tick()
  b.tick()
  const n = frames.length
  for (let i = 0; i < n; i++) {
    try { b.applyPatches(frames[i]) } catch {}
  }
  a.close({ timeoutMs: 0 }); b.close({ timeoutMs: 0 })
}
for (const dir of ['decode_frame', 'apply_frame']) {
  const d = path.join(__dirname, 'corpus', dir)
  fs.mkdirSync(d, { recursive: true })
  frames.forEach((f, i) => fs.writeFileSync(path.join(d, `seed-${i}`), f))
}
console.log(`${frames.length} seed frames written`)
