'use strict'
// A peer reopened from an older copy of its own file (or a fresh file with a
// reused peerId) must not reuse sequence numbers the cluster already holds:
// it jumps past them, fetches its own missing writes back, and says so.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const SCHEMA = [{ up: `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);` }]

test('an older copy of its own file does not reuse seqs and converges', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-ownseq-'))
  const fa = path.join(dir, 'a.db')
  let a = new Replicator({ path: fa, peerId: 1, heartbeatMs: 0 })
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0 })
  a.migrate(SCHEMA)
  b.migrate(SCHEMA)
  a.upsert('t', { id: 1, v: 'a1' })
  a.upsert('t', { id: 2, v: 'a2' })
  await a.close({ timeoutMs: 0 })
  fs.copyFileSync(fa, path.join(dir, 'old.db'))
  a = new Replicator({ path: fa, heartbeatMs: 0 })
  const q = []
  const link = () => {
    a.addPeer(2, (f) => q.push([b, f]))
    b.addPeer(1, (f) => q.push([a, f]))
  }
  const pump = (n = 10) => {
    for (let i = 0; i < n; i++) {
      a.tick(); b.tick()
      while (q.length) { const [to, f] = q.shift(); to.applyPatches(f) }
    }
  }
  link()
  a.upsert('t', { id: 3, v: 'a3' })
  a.upsert('t', { id: 4, v: 'a4' })
  pump()
  await a.close({ timeoutMs: 0 })
  b.removePeer(1)
  // Put the old copy back: it stopped at seq 2.
  for (const ext of ['', '-wal', '-shm']) fs.rmSync(fa + ext, { force: true })
  fs.copyFileSync(path.join(dir, 'old.db'), fa)
  a = new Replicator({ path: fa, heartbeatMs: 0 })
  assert.equal(a.status().seq, 2)
  const errors = []
  a.on('error', (e) => errors.push(e))
  link()
  pump(2)
  assert.ok(errors.some((e) => e.code === 'E_SEQ'), 'the regression is reported')
  const token = a.upsert('t', { id: 5, v: 'a5' })
  assert.equal(token, '1.5', 'new writes continue past what the cluster holds')
  pump()
  const want = b.all('SELECT * FROM t ORDER BY id')
  assert.deepEqual(a.all('SELECT * FROM t ORDER BY id'), want)
  assert.deepEqual(want.map((r) => r.v), ['a1', 'a2', 'a3', 'a4', 'a5'])
  assert.equal(await b.waitFor(token, 1000), true)
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})
