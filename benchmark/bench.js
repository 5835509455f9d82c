'use strict'
// Write, receive and wire-size benchmark of quilt-sqlite against
// better-sqlite3, measured in the same run on the same machine.
//   npm run bench                       (node benchmark/bench.js)
//   BENCH_N=20000 node benchmark/bench.js
// Env: BENCH_N rows (default 100000), BENCH_AUTOCOMMIT_N rows for (b)
// (default BENCH_N; both libraries use the same count), BENCH_RUNS runs per
// row, median reported (default 3), BENCH_SMALL_FRAME maxFrameBytes of the
// writer in (e)/(f) (default 4096, so 1% of frames is a meaningful number),
// QUILT_BUILD=debug|release to override the build detection.
// See benchmark/README.md for what each row means. Not a test: it prints, it
// does not assert, and it exits 0.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const Database = require('better-sqlite3')
const { Replicator } = require('..')

const N = posInt(process.env.BENCH_N, 100000)
const N_AUTO = posInt(process.env.BENCH_AUTOCOMMIT_N, N)
const RUNS = posInt(process.env.BENCH_RUNS, 3)
const SMALL_FRAME = posInt(process.env.BENCH_SMALL_FRAME, 4096)
const DROP_EVERY = 100 // (f): drop 1 frame in 100

function posInt (v, dflt) {
  const n = Number(v)
  return Number.isInteger(n) && n > 0 ? n : dflt
}

const SCHEMA = `CREATE TABLE t (id INTEGER, tenantId INTEGER, name TEXT, score REAL, PRIMARY KEY (id, tenantId));
CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
                        id INTEGER, tenantId INTEGER, name TEXT, score REAL);`
const MIGRATIONS = [{ up: SCHEMA }]
const UPSERT = `INSERT INTO t (id, tenantId, name, score) VALUES (@id, @tenantId, @name, @score)
  ON CONFLICT (id, tenantId) DO UPDATE SET name = excluded.name, score = excluded.score`

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-bench-'))
let dirNo = 0
const freshDir = () => { const d = path.join(root, String(dirNo++)); fs.mkdirSync(d); return d }

function makeRows (n) {
  const rows = new Array(n)
  for (let i = 0; i < n; i++) rows[i] = { id: i + 1, tenantId: 1 + (i % 16), name: `name-${i + 1}`, score: i * 0.25 }
  return rows
}

const now = () => process.hrtime.bigint()
const msSince = (t0) => Number(process.hrtime.bigint() - t0) / 1e6
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }

// ----- which addon is this? -------------------------------------------------------

/** Names of the ELF sections of `file` ([] when it is not ELF). */
function elfSections (file) {
  const fd = fs.openSync(file, 'r')
  try {
    const h = Buffer.alloc(64)
    fs.readSync(fd, h, 0, 64, 0)
    if (h.readUInt32BE(0) !== 0x7f454c46 || h[4] !== 2 || h[5] !== 1) return [] // ELF64 little-endian only
    const shoff = Number(h.readBigUInt64LE(0x28))
    const shentsize = h.readUInt16LE(0x3a)
    const shnum = h.readUInt16LE(0x3c)
    const shstrndx = h.readUInt16LE(0x3e)
    const sh = Buffer.alloc(shentsize * shnum)
    fs.readSync(fd, sh, 0, sh.length, shoff)
    const strOff = Number(sh.readBigUInt64LE(shstrndx * shentsize + 0x18))
    const strSize = Number(sh.readBigUInt64LE(shstrndx * shentsize + 0x20))
    const strs = Buffer.alloc(strSize)
    fs.readSync(fd, strs, 0, strSize, strOff)
    const names = []
    for (let i = 0; i < shnum; i++) {
      const at = sh.readUInt32LE(i * shentsize)
      names.push(strs.toString('latin1', at, strs.indexOf(0, at)))
    }
    return names
  } catch {
    return []
  } finally {
    fs.closeSync(fd)
  }
}

function addonInfo () {
  const file = Object.keys(require.cache).find((k) => k.endsWith('.node') && /quilt/.test(path.basename(k)))
  if (!file) return { kind: process.env.QUILT_BUILD || 'unknown', text: 'addon file not found in require.cache' }
  const size = fs.statSync(file).size
  const debugInfo = elfSections(file).includes('.debug_info')
  // A release build is optimized and stripped (profile.release strip =
  // "symbols"): no .debug_info and ~10 MB; a debug build is 100+ MB.
  const guess = debugInfo || size > 40 * 1048576 ? 'debug' : 'release'
  const kind = process.env.QUILT_BUILD || guess
  const why = process.env.QUILT_BUILD ? 'from QUILT_BUILD' : debugInfo ? 'has .debug_info' : 'no debug info'
  return { kind, text: `${path.relative(process.cwd(), file) || file}, ${(size / 1048576).toFixed(1)} MB, ${why}` }
}

// ----- the two contenders ----------------------------------------------------------

function openBetter () {
  const db = new Database(path.join(freshDir(), 'b.db'))
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = NORMAL')
  db.exec(SCHEMA)
  return db
}

function openQuilt (peerId = 1, extra = {}) {
  const r = new Replicator({ path: path.join(freshDir(), 'q.db'), peerId, heartbeatMs: 0, ...extra })
  r.migrate(MIGRATIONS)
  return r
}

async function closeQuilt (r) {
  await r.close({ timeoutMs: 0 })
}

function betterOneTxn (rows) {
  const db = openBetter()
  const stmt = db.prepare(UPSERT)
  const many = db.transaction((rs) => { for (const r of rs) stmt.run(r) })
  const t0 = now()
  many(rows)
  const ms = msSince(t0)
  db.close()
  return ms
}

function betterAutocommit (rows) {
  const db = openBetter()
  const stmt = db.prepare(UPSERT)
  const t0 = now()
  for (const r of rows) stmt.run(r)
  const ms = msSince(t0)
  db.close()
  return ms
}

async function quiltOneTxn (rows) {
  const r = openQuilt()
  const t0 = now()
  r.upsertMany('t', rows)
  const ms = msSince(t0)
  await closeQuilt(r)
  return ms
}

// (h) The same upsert statement as better-sqlite3's, through quilt's
// prepare().run() (captured writes), inside one transaction(fn).
async function quiltPreparedTxn (rows) {
  const r = openQuilt()
  const stmt = r.prepare(UPSERT)
  const many = r.transaction((rs) => { for (const x of rs) stmt.run(x) })
  const t0 = now()
  many(rows)
  const ms = msSince(t0)
  await closeQuilt(r)
  return ms
}

// (i) Point reads: prepare(POINT).get(id, tenantId) for every row, in
// quilt and in better-sqlite3, on tables filled the same way (not timed).
const POINT = 'SELECT name, score FROM t WHERE id = ? AND tenantId = ?'

function betterPointReads (rows) {
  const db = openBetter()
  const stmt = db.prepare(UPSERT)
  db.transaction((rs) => { for (const r of rs) stmt.run(r) })(rows)
  const get = db.prepare(POINT)
  const t0 = now()
  for (const r of rows) get.get(r.id, r.tenantId)
  const ms = msSince(t0)
  db.close()
  return ms
}

async function quiltPointReads (rows) {
  const r = openQuilt()
  r.upsertMany('t', rows)
  const get = r.prepare(POINT)
  const t0 = now()
  for (const x of rows) get.get(x.id, x.tenantId)
  const ms = msSince(t0)
  await closeQuilt(r)
  return ms
}

async function quiltAutocommit (rows) {
  const r = openQuilt()
  const t0 = now()
  for (const row of rows) r.upsert('t', row)
  const ms = msSince(t0)
  await closeQuilt(r)
  return ms
}

/**
 * (b)'s cost in pages: WAL frames each autocommit write adds, for quilt and
 * for the plain upsert, counted by a second connection (checkpoint first,
 * then the WAL's frame count after K commits; fewer than quilt's
 * autocheckpoint threshold, and better-sqlite3's is off, so none runs in
 * between: a checkpoint would restart the WAL and the count with it).
 */
function pagesPerCommit (rows) {
  const K = Math.min(600, Math.floor(rows.length / 2))
  const count = (file, write) => {
    for (let i = 0; i < K; i++) write(rows[i])
    const side = new Database(file)
    side.pragma('wal_checkpoint(TRUNCATE)')
    for (let i = K; i < 2 * K; i++) write(rows[i])
    const frames = side.pragma('wal_checkpoint(PASSIVE)')[0].log
    side.close()
    return frames / K
  }
  const file = path.join(freshDir(), 'q.db')
  const q = new Replicator({ path: file, peerId: 1, heartbeatMs: 0 })
  q.migrate(MIGRATIONS)
  const quilt = count(file, (r) => q.upsert('t', r))
  q.close({ timeoutMs: 0 })
  const db = openBetter()
  db.pragma('wal_autocheckpoint = 0')
  const stmt = db.prepare(UPSERT)
  const better = count(db.name, (r) => stmt.run(r))
  db.close()
  return { quilt, better, K }
}

/**
 * A writer (peer 1) with peer 2 registered; returns the frames it hands to
 * peer 2's send after upsertMany(rows) + flush(), and the writer.
 */
function capture (rows, extra = {}) {
  const w = openQuilt(1, extra)
  const out = []
  w.addPeer(2, (frame) => out.push(Buffer.from(frame)))
  w.flush()
  out.length = 0 // hello/ping frames from addPeer: not patches
  w.upsertMany('t', rows)
  w.flush()
  const frames = out.splice(0)
  return { w, out, frames, seq: w.status().seq }
}

async function quiltReceive (frames) {
  const r = openQuilt(2)
  r.addPeer(1, () => {}) // answers (acks, requests) go nowhere here
  let applied = 0
  const t0 = now()
  for (const f of frames) applied += r.applyPatches(f).applied
  const ms = msSince(t0)
  await closeQuilt(r)
  return { ms, applied }
}

/**
 * (e) + (f): writer and receiver wired through two in-memory queues. 1 frame
 * in DROP_EVERY is lost on the way; ticks detect and heal the gaps.
 */
async function lossyReceive (rows, { tickProbe = false } = {}) {
  const { w, out: toR, frames, seq } = capture(rows, { maxFrameBytes: SMALL_FRAME })
  const r = openQuilt(2)
  const toW = []
  r.addPeer(1, (frame) => toW.push(Buffer.from(frame)))
  const kept = frames.filter((_, i) => i % DROP_EVERY !== DROP_EVERY / 2)
  const dropped = frames.length - kept.length
  let retransmitted = 0
  let retransmittedBytes = 0
  let duplicates = 0
  function pump () {
    for (let i = 0; i < 1e6 && (toR.length || toW.length); i++) {
      if (toW.length) w.applyPatches(toW.shift())
      if (toR.length) {
        const f = toR.shift()
        retransmitted++
        retransmittedBytes += f.length
        duplicates += r.applyPatches(f).duplicates
      }
    }
  }
  const contiguous = () => (r.status().peers.find((p) => p.peerId === 1) || { contiguousSeq: 0 }).contiguousSeq

  let tick = null
  if (tickProbe) {
    // (e): the receiver holds every patch but one frame's: one gap.
    const mid = Math.floor(frames.length / 2)
    const r1 = openQuilt(3)
    r1.addPeer(1, () => {})
    for (let i = 0; i < frames.length; i++) if (i !== mid) r1.applyPatches(frames[i])
    const held = r1.get('SELECT count(*) AS n FROM t_patches').n
    const gaps = r1.status().peers.find((p) => p.peerId === 1)
    const times = []
    for (let i = 0; i < 11; i++) {
      const t0 = now()
      r1.tick()
      times.push(msSince(t0) * 1000)
    }
    tick = { first: times[0], median: median(times.slice(1)), held, missing: gaps ? gaps.missing : NaN }
    await closeQuilt(r1)
  }

  toW.length = 0
  let ticks = 0
  const t0 = now()
  for (const f of kept) r.applyPatches(f)
  pump()
  for (; ticks < 200 && contiguous() < seq; ticks++) {
    r.tick()
    pump()
    w.tick()
    pump()
  }
  const ms = msSince(t0)
  const healed = contiguous() >= seq && r.get('SELECT count(*) AS n FROM t').n === rows.length
  await closeQuilt(r)
  await closeQuilt(w)
  return { ms, ticks, healed, frames: frames.length, dropped, retransmitted, retransmittedBytes, duplicates, tick }
}

// ----- (g): quilt's own SQL through rusqlite --------------------------------------

// benchmark/floor.rs, a cargo example of this crate (same bundled SQLite),
// built in target/ (or CARGO_TARGET_DIR). A failed build or run is printed
// and the rest of the benchmark goes on.
function buildFloor () {
  const targetDir = process.env.CARGO_TARGET_DIR || path.join(__dirname, '..', 'target')
  const b = spawnSync('cargo', ['build', '--release', '--example', 'floor'], { cwd: path.join(__dirname, '..'), encoding: 'utf8', env: { ...process.env, CARGO_TARGET_DIR: targetDir } })
  if (b.error || b.status !== 0) return { error: `cargo build --release --example floor failed: ${b.error ? b.error.message : b.stderr.trim().split('\n').slice(-8).join('\n')}` }
  return { bin: path.join(targetDir, 'release', 'examples', process.platform === 'win32' ? 'floor.exe' : 'floor') }
}

function runFloor (built) {
  if (built.error) return built
  const r = spawnSync(built.bin, [], { encoding: 'utf8', env: { ...process.env, BENCH_N: String(N), BENCH_RUNS: String(RUNS) } })
  if (r.error || r.status !== 0) return { error: `${built.bin} failed: ${r.error ? r.error.message : r.stderr.trim()}` }
  const lines = r.stdout.trimEnd().split('\n')
  try {
    return { json: JSON.parse(lines[lines.length - 1]), text: lines.slice(0, -1) }
  } catch (e) {
    return { error: `${built.bin} printed no JSON on its last line: ${e.message}` }
  }
}

/** quilt's SQL floor alone (floor.rs `BENCH_FLOOR_ONLY`), once: ms or undefined. */
function pairedFloor (built) {
  if (built.error) return undefined
  const r = spawnSync(built.bin, [], { encoding: 'utf8', env: { ...process.env, BENCH_N: String(N), BENCH_RUNS: '1', BENCH_FLOOR_ONLY: '1' } })
  if (r.error || r.status !== 0) return undefined
  try {
    const lines = r.stdout.trimEnd().split('\n')
    return JSON.parse(lines[lines.length - 1]).floorMs
  } catch {
    return undefined
  }
}

// ----- run --------------------------------------------------------------------------

async function main () {
  const info = addonInfo()
  const bver = require('better-sqlite3/package.json').version
  console.log(`quilt-sqlite benchmark: ${info.kind.toUpperCase()} build (${info.text})`)
  console.log(`node ${process.version}, better-sqlite3 ${bver}, ${os.cpus().length} CPU, N=${N}${N_AUTO !== N ? `, autocommit N=${N_AUTO}` : ''}, median of ${RUNS} run(s), file DB in WAL, synchronous=NORMAL`)
  if (info.kind !== 'release') console.log('note: not a release build; ratios are not meaningful (build with `npm run build`)')
  console.log('')

  if (process.stderr.isTTY) process.stderr.write('cargo build --release --example floor...\r')
  const floorBuilt = buildFloor()
  const rows = makeRows(N)
  const rowsAuto = N_AUTO === N ? rows : makeRows(N_AUTO)

  // Warm up both paths (JIT, page cache) on a small set.
  const warm = makeRows(2000)
  betterOneTxn(warm); betterAutocommit(warm)
  await quiltOneTxn(warm); await quiltAutocommit(warm)

  const m = { qa: [], ba: [], qb: [], bb: [], qc: [], bc: [], qf: [], qh: [], bh: [], fl: [], qi: [], bi: [] }
  const { w: writer, frames } = capture(rows)
  await closeQuilt(writer)
  const wireBytes = frames.reduce((n, f) => n + f.length, 0)
  let applied = 0
  let lossy
  for (let run = 0; run < RUNS; run++) {
    if (process.stderr.isTTY) process.stderr.write(`run ${run + 1}/${RUNS}...\r`)
    m.qa.push(await quiltOneTxn(rows)); m.ba.push(betterOneTxn(rows))
    // (g)'s floor right after (a), so both see the machine in one state.
    const fl = pairedFloor(floorBuilt)
    if (fl !== undefined) m.fl.push(fl)
    m.qh.push(await quiltPreparedTxn(rows)); m.bh.push(betterOneTxn(rows))
    m.qi.push(await quiltPointReads(rows)); m.bi.push(betterPointReads(rows))
    m.bb.push(betterAutocommit(rowsAuto)); m.qb.push(await quiltAutocommit(rowsAuto))
    const rc = await quiltReceive(frames)
    applied = rc.applied
    m.qc.push(rc.ms); m.bc.push(betterOneTxn(rows))
    const lf = await lossyReceive(rows, { tickProbe: run === 0 })
    if (run === 0) lossy = lf
    else lossy = { ...lf, tick: lossy.tick }
    m.qf.push(lf.ms)
    if (!lf.healed) lossy.healed = false
  }
  const pages = pagesPerCommit(rowsAuto)
  if (process.stderr.isTTY) process.stderr.write('floor...         \r')
  const floor = runFloor(floorBuilt)
  if (process.stderr.isTTY) process.stderr.write('                 \r')

  const k = (n) => n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n)
  const fmtMs = (x) => `${x.toFixed(x < 100 ? 1 : 0)} ms`
  const table = []
  const row = (name, q, b, target, limit) => {
    const ratio = b === undefined ? undefined : q / b
    const value = ratio === undefined ? q : ratio
    table.push([name, typeof q === 'number' ? fmtMs(q) : q, b === undefined ? '' : fmtMs(b), ratio === undefined ? '' : `${ratio.toFixed(2)}x`, target, limit === undefined ? '' : value <= limit ? 'met' : 'MISSED'])
  }
  row(`(a) ${k(N)} upserts, one transaction`, median(m.qa), median(m.ba), '<= 1.5x', 1.5)
  row(`(b) ${k(N_AUTO)} upserts, autocommit`, median(m.qb), median(m.bb), '<= 2.0x', 2.0)
  row(`(c) receive+apply ${k(N)} patches (${frames.length} frames)`, median(m.qc), median(m.bc), '<= 1.5x', 1.5)
  const bpp = wireBytes / N
  table.push([`(d) wire bytes per patch`, `${bpp.toFixed(1)} B`, '', '', '<= 75 B', bpp <= 75 ? 'met' : 'MISSED'])
  const t = lossy.tick
  table.push([`(e) tick(), ${k(t.held)} patches, 1 gap`, `${t.first.toFixed(0)} us (next ${t.median.toFixed(0)})`, '', '', '< 1000 us', t.first < 1000 && t.median < 1000 ? 'met' : 'MISSED'])
  const fr = median(m.qf) / median(m.bc)
  table.push([`(f) same as (c), 1% frames dropped, healed`, fmtMs(median(m.qf)), fmtMs(median(m.bc)), `${fr.toFixed(2)}x`, '', lossy.healed ? `healed, ${lossy.ticks} tick(s)` : 'NOT HEALED'])
  {
    const ra = median(m.qa) / median(m.ba)
    const rh = median(m.qh) / median(m.bh)
    table.push([`(h) ${k(N)} prepare().run() captured, one transaction`, fmtMs(median(m.qh)), fmtMs(median(m.bh)), `${rh.toFixed(2)}x`, '<= 1.2 x (a)', rh <= 1.2 * ra ? `met (${(rh / ra).toFixed(2)} x (a))` : `MISSED (${(rh / ra).toFixed(2)} x (a))`])
  }
  row(`(i) ${k(N)} prepare().get() point reads`, median(m.qi), median(m.bi), '', undefined)
  if (m.fl.length === RUNS) row(`(g) (a) against quilt's SQL through rusqlite (floor)`, median(m.qa), median(m.fl), '<= 1.15x', 1.15)
  else if (floor.json) row(`(g) (a) against quilt's SQL through rusqlite (floor)`, median(m.qa), floor.json.floorMs, '<= 1.15x', 1.15)
  else table.push([`(g) quilt's SQL through rusqlite (floor)`, 'not run', '', '', '<= 1.15x', ''])

  const head = ['', 'quilt', 'better-sqlite3', 'ratio', 'target', 'result']
  const widths = head.map((h, i) => Math.max(h.length, ...table.map((r) => String(r[i]).length)))
  const line = (r) => r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ').trimEnd()
  console.log(line(head))
  console.log('-'.repeat(widths.reduce((a, b) => a + b + 2, -2)))
  for (const r of table) console.log(line(r))
  console.log('')
  console.log(`(b): WAL pages written per autocommit write (${pages.K} commits): quilt ${pages.quilt.toFixed(2)}, better-sqlite3 ${pages.better.toFixed(2)}; quilt's base row, patch row and run map, its clock rows written once per up to 512 writes (docs/design.md "Deferred clock rows")`)
  console.log(`(c)/(d): ${frames.length} frame(s), ${wireBytes} bytes for ${N} patches (default maxFrameBytes); applied ${applied} of ${N}`)
  console.log(`(e)/(f): writer maxFrameBytes ${SMALL_FRAME}: ${lossy.frames} frames, ${lossy.dropped} dropped; the gap in (e) leaves ${t.missing} patches missing`)
  console.log(`(f): the writer sent ${lossy.retransmitted} frame(s), ${lossy.retransmittedBytes} bytes to the receiver after the loss (repairs and pings), ${lossy.duplicates} of the patches in them were duplicates; ratio against the plain one-transaction better-sqlite3 upsert of (c)`)
  if (m.fl.length === RUNS) console.log(`(g): floor runs, each right after a run of (a): ${m.fl.map((x) => x.toFixed(0)).join(', ')} ms; (a): ${m.qa.map((x) => x.toFixed(0)).join(', ')} ms`)
  console.log(`(g): quilt within 1.15x of that floor: the statements (a) runs per write (patch row, base-row upsert, clock row; one run-map row per commit) through rusqlite, same bundled SQLite, no JS, values bound from prepared Rust rows (benchmark/floor.rs); the ms column says floor, not better-sqlite3`)
  if (floor.error) console.log(`(g): ${floor.error}`)
  else console.log(['', ...floor.text].join('\n'))
  profile()
  if (process.env.BENCH_SNAPSHOT !== '0') await require('./snapshot.js').main()
  if (process.env.BENCH_OPEN !== '0') await require('./open.js').main()
}

// Where the time of (a) goes: the same SQL work quilt's write path does,
// step by step, run through better-sqlite3 in one transaction. Each write
// must store a patch row (the replic-sqlite layout), index it by (_peerId,
// _sequenceId) to serve retransmissions, upsert the base row, and upsert
// the row's clock (winning stamp per column). These are B-tree inserts
// SQLite does whatever the binding; the rest is conversion and bookkeeping.
function profile () {
  const rows = makeRows(N)
  const P = `CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
    id INTEGER, tenantId INTEGER, name TEXT, score REAL, _quiltNulls TEXT);`
  const steps = [
    ['base row upsert only (the better-sqlite3 baseline)', '', false, false, false],
    ['+ patch row', P, true, false, false],
    ['+ (_peerId, _sequenceId) index', P + 'CREATE INDEX ix ON t_patches(_peerId, _sequenceId);', true, false, false],
    ['+ clock row (= all of quilt\'s SQL per write)', P + 'CREATE INDEX ix ON t_patches(_peerId, _sequenceId); CREATE TABLE c (id, tenantId, s BLOB NOT NULL, PRIMARY KEY (id, tenantId)) WITHOUT ROWID;', true, true, false]
  ]
  const blob = Buffer.alloc(2 * 29)
  console.log('')
  console.log(`profile of (a): the SQL of each write, step by step, in better-sqlite3 (${N} rows, one transaction)`)
  let base = 0
  for (const [label, extra, patch, clock] of steps) {
    const db = new Database(path.join(freshDir(), 'p.db'))
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    db.exec(SCHEMA.split(';')[0] + ';' + extra)
    const up = db.prepare(UPSERT)
    const pi = patch ? db.prepare('INSERT INTO t_patches VALUES (?, ?, ?, ?, ?, ?, ?, NULL)') : null
    const ci = clock ? db.prepare('INSERT INTO c VALUES (?, ?, ?) ON CONFLICT (id, tenantId) DO UPDATE SET s = excluded.s') : null
    const t0 = now()
    db.transaction(() => {
      for (let i = 0; i < rows.length; i++) {
        const r = rows[i]
        if (pi) pi.run(i + 1, i + 1, 1, r.id, r.tenantId, r.name, r.score)
        up.run(r)
        if (ci) ci.run(r.id, r.tenantId, blob)
      }
    })()
    const ms = msSince(t0)
    db.close()
    if (!base) base = ms
    console.log(`  ${label.padEnd(50)} ${(ms.toFixed(1) + " ms").padStart(10)}  ${(ms / base).toFixed(2)}x`)
  }
}

main()
  .catch((e) => { console.error(e && e.stack ? e.stack : e) })
  .finally(() => {
    fs.rmSync(root, { recursive: true, force: true })
    process.exit(0)
  })
