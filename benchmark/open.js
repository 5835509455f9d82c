'use strict'
// Open time against history size (issue 11): a file holding BENCH_OPEN_N
// patches (default 1,000,000; 20 origins' worth of frames applied, then
// local writes after the last heartbeat) is closed and opened again, and
// `new Replicator()` + `migrate()` is timed. The vector is saved at each
// heartbeat with per-table marks, so an open reads the saved vector and
// only the rows written since (src/core/engine/persist.rs); the last column
// forces the old full read for comparison.
//   node benchmark/open.js            (also run by `npm run bench`)
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const N = Number(process.env.BENCH_OPEN_N) || 1000000
const SCHEMA = 'CREATE TABLE t (id INTEGER, tenantId INTEGER, name TEXT, score REAL, PRIMARY KEY (id, tenantId)); ' +
  'CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, tenantId INTEGER, name TEXT, score REAL);'
const MIGRATIONS = [{ up: SCHEMA }]

function rows (from, n) {
  const out = new Array(n)
  for (let i = 0; i < n; i++) out[i] = { id: from + i, tenantId: 1 + (i % 16), name: `n-${from + i}`, score: i }
  return out
}

async function main () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-open-'))
  const file = path.join(dir, 'o.db')
  const t0 = Date.now()
  // 20 writers' frames into one file, then a tail of local writes.
  const batch = 50000
  const r = new Replicator({ path: file, peerId: 1, heartbeatMs: 0 })
  r.migrate(MIGRATIONS)
  let written = 0
  for (let w = 0; written < N - 1000; w++) {
    const frames = []
    const src = new Replicator({ path: path.join(dir, `w${w}.db`), peerId: 100 + w, heartbeatMs: 0 })
    src.migrate(MIGRATIONS)
    src.addPeer(1, (f) => frames.push(f))
    const n = Math.min(batch, N - 1000 - written)
    src.upsertMany('t', rows(written + 1, n))
    src.flush()
    for (const f of frames) r.applyPatches(f)
    written += n
    await src.close({ timeoutMs: 0 })
    fs.rmSync(path.join(dir, `w${w}.db`), { force: true })
    if (w % 4 === 3) r.tick()
  }
  r.tick()
  r.upsertMany('t', rows(N + 1, 1000))
  written += 1000
  await r.close({ timeoutMs: 0 })
  const fill = Date.now() - t0
  const openOnce = () => {
    const t = process.hrtime.bigint()
    const q = new Replicator({ path: file, heartbeatMs: 0 })
    q.migrate(MIGRATIONS)
    const ms = Number(process.hrtime.bigint() - t) / 1e6
    const seq = q.status().seq
    return { q, ms, seq }
  }
  const times = []
  let seq = 0
  for (let i = 0; i < 3; i++) {
    const o = openOnce()
    times.push(o.ms)
    seq = o.seq
    await o.q.close({ timeoutMs: 0 })
  }
  // The full read older files (and stale marks) get, for comparison.
  const Database = require('better-sqlite3')
  const db = new Database(file)
  db.prepare("INSERT OR REPLACE INTO _quilt_meta(key, value) VALUES('vector_dirty', 1)").run()
  db.close()
  const full = openOnce()
  await full.q.close({ timeoutMs: 0 })
  times.sort((a, b) => a - b)
  console.log(`open time, ${written.toLocaleString('en')} patches (${Math.round(fs.statSync(file).size / 1e6)} MB file, filled in ${(fill / 1000).toFixed(1)} s, own seq ${seq}):`)
  console.log(`  open + migrate (median of 3)      ${times[1].toFixed(1)} ms   target < 50 ms: ${times[1] < 50 ? 'met' : 'MISSED'}`)
  console.log(`  same file, forced full read        ${full.ms.toFixed(1)} ms`)
  if (process.env.BENCH_OPEN_KEEP) console.log(`  kept: ${file}`)
  else fs.rmSync(dir, { recursive: true, force: true })
}

if (require.main === module) main().catch((e) => { console.error(e); process.exit(1) })
module.exports = { main }
