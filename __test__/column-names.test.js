'use strict'
// Column names with a comma, and names over 255 bytes, work end to end:
// written, set to NULL on purpose, replicated, merged, and equal on both
// peers (issue 11). Clock slots and null bits go by column ordinal, so a
// name's length or content does not matter (frames cap names at 1024).
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const LONG_A = 'a'.repeat(300)
const LONG_B = 'a'.repeat(299) + 'b' // shares its first 255 bytes with LONG_A
const q = (n) => `"${n}"`
const SCHEMA = {
  up: `CREATE TABLE w (id INTEGER PRIMARY KEY, ${q('x,y')} TEXT, ${q(LONG_A)} TEXT, ${q(LONG_B)} TEXT, plain TEXT);
       CREATE TABLE w_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, ${q('x,y')} TEXT, ${q(LONG_A)} TEXT, ${q(LONG_B)} TEXT, plain TEXT);`
}

test('names with a comma and names over 255 bytes replicate and merge', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-names-'))
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0 })
  const b = new Replicator({ path: path.join(dir, 'b.db'), peerId: 2, heartbeatMs: 0 })
  try {
    a.migrate([SCHEMA]); b.migrate([SCHEMA])
    const toB = []; const toA = []
    a.addPeer(2, (f) => toB.push(Buffer.from(f)))
    b.addPeer(1, (f) => toA.push(Buffer.from(f)))
    const sync = () => {
      a.flush(); b.flush()
      for (let i = 0; i < 5; i++) {
        for (const f of toB.splice(0)) b.applyPatches(f)
        for (const f of toA.splice(0)) a.applyPatches(f)
      }
    }
    a.upsert('w', { id: 1, 'x,y': 'comma', [LONG_A]: 'long a', [LONG_B]: 'long b', plain: 'p' })
    sync()
    const row = (r) => r.get('SELECT * FROM w WHERE id = 1')
    assert.deepEqual(row(b), row(a))
    assert.equal(row(b)[LONG_B], 'long b')
    // An explicit NULL of the comma column, then a later write of the
    // other long column on b: both survive the merge on both peers.
    a.upsert('w', { id: 1, 'x,y': null })
    await new Promise((resolve) => setTimeout(resolve, 2))
    b.upsert('w', { id: 1, [LONG_B]: 'newer b' })
    sync()
    assert.deepEqual(row(a), { id: 1, 'x,y': null, [LONG_A]: 'long a', [LONG_B]: 'newer b', plain: 'p' })
    assert.deepEqual(row(b), row(a))
    // An older write of LONG_A does not beat the stamps of LONG_B (they
    // no longer share a clock entry): a stale value for LONG_A from a
    // third writer with an old clock loses only against LONG_A's stamp.
    const c = new Replicator({ path: path.join(dir, 'c.db'), peerId: 3, heartbeatMs: 0 })
    c.migrate([SCHEMA])
    const toC = []
    a.addPeer(3, (f) => toC.push(Buffer.from(f)))
    c.addPeer(1, (f) => toA.push(Buffer.from(f)))
    for (let i = 0; i < 3; i++) { a.tick(); c.tick(); a.flush(); c.flush(); for (const f of toC.splice(0)) c.applyPatches(f); for (const f of toA.splice(0)) a.applyPatches(f) }
    assert.deepEqual(row(c), row(a))
    // The patch row of the explicit NULL records it (a bitmap by ordinal).
    const nulls = a.all('SELECT _quiltNulls AS n FROM w_patches WHERE _quiltNulls IS NOT NULL').map((r) => r.n)
    assert.ok(nulls.length >= 1 && nulls.every((n) => Buffer.isBuffer(n) && n.some((byte) => byte !== 0)), String(nulls))
    await c.close({ timeoutMs: 0 })
  } finally {
    await a.close({ timeoutMs: 0 }); await b.close({ timeoutMs: 0 })
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

// upsertMany packs rows with a function generated per column list
// (lib/rows.js): a name is only ever a string literal in that source, so
// names that look like code, quotes, escapes or line separators are
// columns like any other, and nothing they spell runs.
test('upsertMany: names that look like code are plain columns', async () => {
  const names = ["a'b", 'c"d', 'e\\f', 'g\nh', 'i\u2028j', '${k}', '*/ l /*', "x'] = 1; globalThis.__quiltPwned = true; v = r['y"]
  const cols = names.map((n) => `"${n.replace(/"/g, '""')}" TEXT`).join(', ')
  const schema = {
    up: `CREATE TABLE odd (id INTEGER PRIMARY KEY, ${cols});
         CREATE TABLE odd_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, ${cols});`
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-names-'))
  const r = new Replicator({ path: path.join(dir, 'odd.db'), peerId: 1, heartbeatMs: 0 })
  try {
    r.migrate([schema])
    const rows = [1, 2, 3].map((id) => Object.fromEntries([['id', id], ...names.map((n, i) => [n, `${id}:${i}:${n}`])]))
    r.upsertMany('odd', rows)
    assert.equal(globalThis.__quiltPwned, undefined)
    assert.deepEqual(r.all('SELECT * FROM odd ORDER BY id'), rows)
    // Rows whose keys differ take the own-properties packer: same result.
    r.upsertMany('odd', [{ id: 4, [names[0]]: 'only a' }, { id: 5, [names[7]]: 'only x' }])
    assert.deepEqual(r.all('SELECT * FROM odd WHERE id >= 4 ORDER BY id').map((x) => [x.id, x[names[0]], x[names[7]]]), [[4, 'only a', null], [5, null, 'only x']])
    assert.equal(globalThis.__quiltPwned, undefined)
  } finally {
    await r.close({ timeoutMs: 0 })
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
