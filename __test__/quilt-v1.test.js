'use strict'
// A file written by quilt's first on-disk format (fixtures/quilt-v1/README.md)
// opens with this build, keeps its rows, state and kept patches, takes
// writes, migrates and replicates.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')
const MIGRATIONS = require('./fixtures/quilt-v1/migrations.js')

const FIXTURE = path.join(__dirname, 'fixtures', 'quilt-v1', 'quilt-v1.db')
const YEARS = 10 * 365 * 24 * 3600 * 1000 // keep the fixture's old patches

const NOTES = [
  { id: 1, title: 'one!', text: 'from v1', deletedAt: null },
  { id: 2, title: 'two', text: null, deletedAt: null },
  { id: 3, title: 'three', text: null, deletedAt: 1795462457750 }
]
const ITEMS = [
  { tenant: 1, id: 1, name: 'apple', qty: 3, deletedAt: null },
  { tenant: 1, id: 2, name: 'pear', qty: 7, deletedAt: null },
  { tenant: 2, id: 1, name: 'fig', qty: null, deletedAt: null }
]

function open (file, opts = {}) {
  const r = new Replicator({ path: file, heartbeatMs: 0, retentionMs: YEARS, ...opts })
  r.errors = []
  r.on('error', (e) => r.errors.push(e))
  return r
}

function pumpAll (reps) {
  const queue = []
  for (const a of reps) for (const b of reps) if (a !== b) a.addPeer(b.peerId, (f) => queue.push([b, f]))
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

const notes = (r) => r.all('SELECT id, title, text, deletedAt FROM note ORDER BY id')
const items = (r) => r.all('SELECT * FROM item ORDER BY tenant, id')

test('a quilt v1 file opens in place: rows, state, kept patches', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-v1-'))
  const file = path.join(dir, 'v1.db')
  fs.copyFileSync(FIXTURE, file)
  const r = open(file) // no peerId: it comes from the file
  const st = r.status()
  assert.equal(st.peerId, 7)
  assert.equal(st.schemaVersion, 2)
  assert.equal(st.seq, 8)
  assert.equal(st.pending, 1) // peer 8's v3 `stars`
  assert.deepEqual(st.peers.filter((p) => p.peerId !== 7).map((p) => [p.peerId, p.contiguousSeq]).sort(), [[8, 1], [9, 2]])
  assert.deepEqual(notes(r), NOTES)
  assert.deepEqual(items(r), ITEMS)
  // The clock rows were converted in place to slots by column ordinal
  // (header byte 2, then 20-byte slots), recorded in _quilt_meta.
  assert.equal(r.get("SELECT value FROM _quilt_meta WHERE key = 'clock_format'").value, 2)
  for (const t of ['note', 'item']) {
    const clocks = r.all(`SELECT _stamps AS s FROM _quilt_clock_${t}`)
    assert.ok(clocks.length >= 3)
    for (const { s } of clocks) {
      assert.equal(s[0], 2, `${t}: format byte`)
      assert.equal((s.length - 1) % 20, 0, `${t}: whole slots`)
    }
  }
  const ords = r.all("SELECT tbl, name, ordinal FROM _quilt_columns WHERE version = 2 ORDER BY tbl, ordinal")
  assert.deepEqual(ords.map((o) => `${o.tbl}.${o.name}=${o.ordinal}`),
    ['item.name=1', 'item.qty=2', 'item.deletedAt=3', 'note.title=1', 'note.text=2', 'note.deletedAt=3'])
  // Each stamp moved to its column's slot: note 1's title (ordinal 1) was
  // last written by 7.8, its text (ordinal 2, `body` then) by 9.1.
  const slot = (buf, k) => {
    const b = Buffer.from(buf).subarray(1 + (k - 1) * 20, 1 + k * 20)
    return b.length === 20 ? `${b.readBigUInt64BE(0)}/${b.readUInt32BE(8)}.${b.readBigUInt64BE(12)}` : null
  }
  const c1 = r.get('SELECT _stamps AS s FROM _quilt_clock_note WHERE id = 1').s
  const at = (o, s) => String(r.get('SELECT _patchedAt AS at FROM note_patches WHERE _peerId = ? AND _sequenceId = ?', [o, s]).at)
  assert.equal(slot(c1, 1), `${at(7, 8)}/7.8`)
  assert.equal(slot(c1, 2), `${at(9, 1)}/9.1`)
  assert.equal(slot(c1, 3), null)
  // The explicit NULL written in the first format still reads as one.
  assert.equal(typeof r.get("SELECT _quiltNulls AS n FROM note_patches WHERE _quiltNulls IS NOT NULL LIMIT 1").n, 'string')
  assert.deepEqual(r.migrate(MIGRATIONS.slice(0, 2)), { from: 2, to: 2 })
  // Writes continue the file's seq and clock; the explicit NULL still wins
  // over nothing, a partial write keeps the other columns.
  r.upsert('note', { id: 2, title: 'two!' })
  assert.equal(r.status().seq, 9)
  assert.deepEqual(r.get('SELECT * FROM note WHERE id = 2'), { id: 2, title: 'two!', text: null, deletedAt: null })
  // Going up applies the kept v3 patch.
  assert.deepEqual(r.migrate(MIGRATIONS), { from: 2, to: 3 })
  assert.equal(r.status().pending, 0)
  assert.equal(r.get('SELECT stars FROM note WHERE id = 2').stars, 5)
  // Down to v1 follows the recorded rename back.
  assert.deepEqual(r.migrate(MIGRATIONS.slice(0, 1)), { from: 3, to: 1 })
  assert.equal(r.get('SELECT body FROM note WHERE id = 1').body, 'from v1')
  assert.deepEqual(r.migrate(MIGRATIONS), { from: 1, to: 3 })
  assert.equal(r.get('SELECT stars FROM note WHERE id = 2').stars, 5)
  assert.deepEqual(r.errors, [])
  await r.close({ timeoutMs: 0 })
})

test('a quilt v1 file replicates with fresh peers on every version', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-v1-'))
  const file = path.join(dir, 'v1.db')
  fs.copyFileSync(FIXTURE, file)
  const old = open(file)
  old.migrate(MIGRATIONS.slice(0, 2))
  const fresh = open(path.join(dir, 'fresh.db'), { peerId: 70 })
  fresh.migrate(MIGRATIONS)
  const older = open(path.join(dir, 'older.db'), { peerId: 71 })
  older.migrate(MIGRATIONS.slice(0, 1))
  old.upsert('item', { tenant: 2, id: 1, qty: 4 })
  fresh.upsert('note', { id: 4, title: 'four', text: 'new', stars: 1 })
  older.upsert('note', { id: 1, body: 'older wins' })
  pumpAll([old, fresh, older])
  const expectItems = ITEMS.map((i) => (i.tenant === 2 ? { ...i, qty: 4 } : i))
  const expectNotes = [
    { ...NOTES[0], text: 'older wins' },
    NOTES[1],
    NOTES[2],
    { id: 4, title: 'four', text: 'new', deletedAt: null }
  ]
  for (const r of [old, fresh]) {
    assert.deepEqual(notes(r), expectNotes, `peer ${r.peerId}`)
    assert.deepEqual(items(r), expectItems, `peer ${r.peerId}`)
  }

  // The v1 peer has not seen the v2 rename: it keeps the fresh peer's `text`
  // (and `stars`) whole, and has the rest.
  assert.deepEqual(older.all('SELECT id, title, body AS text, deletedAt FROM note ORDER BY id'),
    [...expectNotes.slice(0, 3), { ...expectNotes[3], text: null }])
  assert.ok(older.status().pending > 0)
  assert.equal(fresh.get('SELECT stars FROM note WHERE id = 2').stars, 5) // peer 8's, served from the v1 file's kept patches
  // Every origin of the file reached the fresh peer without a hole.
  const seqs = Object.fromEntries(fresh.status().peers.map((p) => [p.peerId, [p.contiguousSeq, p.missing]]))
  assert.deepEqual(seqs[7], [9, 0])
  assert.deepEqual(seqs[8], [1, 0])
  assert.deepEqual(seqs[9], [2, 0])
  for (const r of [old, fresh, older]) await r.close({ timeoutMs: 0 })
})
