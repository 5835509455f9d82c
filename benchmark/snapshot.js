'use strict'
// Snapshot and restore throughput of a large database (default 200 MB) to
// file:// and to a real S3 server (moto on 127.0.0.1), compared in the same
// run with `cp` + `zstd -1` of the same file, with peak RSS of each.
//   node benchmark/snapshot.js            (SNAP_MB=200 by default)
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const crypto = require('node:crypto')
const { execFileSync, spawnSync } = require('node:child_process')
const { Replicator } = require('..')
const moto = require('../__test__/helpers/moto.js')

const MB = Number(process.env.SNAP_MB || 200)

function peakRss () {
  // VmHWM is the process's peak resident set; reset it before each step.
  try { fs.writeFileSync('/proc/self/clear_refs', '5') } catch {}
  return () => {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))
    return m ? Number(m[1]) / 1024 : NaN
  }
}

async function timed (label, fn) {
  const before = process.memoryUsage().rss / 1048576
  const peak = peakRss()
  const t0 = process.hrtime.bigint()
  const out = await fn()
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  return { label, ms, rss: peak(), before, out }
}

function childRss (cmd, args) {
  const t0 = process.hrtime.bigint()
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { encoding: 'utf8' })
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  const kb = Number((r.stderr || '').trim().split('\n').pop())
  return { ms, rss: Number.isFinite(kb) ? kb / 1024 : NaN, ok: r.status === 0 }
}

async function main () {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-snapbench-'))
  const file = path.join(dir, 'big.db')
  const r = new Replicator({ path: file, peerId: 1, heartbeatMs: 0 })
  r.migrate([{ up: `CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB);
    CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, body BLOB);` }])
  // Half-compressible rows: random bytes plus a repeated tail.
  const rowBytes = 1024
  const rows = Math.ceil((MB * 1024 * 1024) / (2 * rowBytes)) // base row + patch row
  for (let i = 0; i < rows; i += 10000) {
    const batch = []
    for (let j = i; j < Math.min(rows, i + 10000); j++) batch.push({ id: j, body: Buffer.concat([crypto.randomBytes(rowBytes / 2), Buffer.alloc(rowBytes / 2, j % 251)]) })
    r.upsertMany('t', batch)
  }
  const size = fs.statSync(file).size + (fs.existsSync(file + '-wal') ? fs.statSync(file + '-wal').size : 0)
  const results = []
  const haveZstd = spawnSync('sh', ['-c', 'command -v zstd && test -x /usr/bin/time']).status === 0
  if (haveZstd) {
    const copy = path.join(dir, 'copy.db')
    const c = childRss('cp', [file, copy])
    const z = childRss('zstd', ['-1', '-q', '-f', copy, '-o', copy + '.zst'])
    results.push({ label: 'cp + zstd -1 (baseline)', ms: c.ms + z.ms, rss: Math.max(c.rss, z.rss) })
    const u = childRss('zstd', ['-d', '-q', '-f', copy + '.zst', '-o', path.join(dir, 'unz.db')])
    results.push({ label: 'zstd -d (restore baseline)', ms: u.ms, rss: u.rss })
  }
  const targets = [{ name: 'file', url: `file://${path.join(dir, 'store')}` }]
  const s3 = await moto.s3()
  if (s3.endpoint) {
    const bucket = `bench-${crypto.randomBytes(4).toString('hex')}`
    await moto.createBucket(s3.endpoint, bucket)
    targets.push({ name: 'moto s3', url: `s3://${bucket}/bench`, options: moto.s3Options(s3.endpoint) })
  }
  for (const t of targets) {
    const snap = await timed(`snapshot -> ${t.name}`, () => r.snapshot({ url: t.url, options: t.options }))
    results.push(snap)
    const dest = path.join(dir, `restored-${t.name.replace(/\W/g, '')}.db`)
    results.push(await timed(`restore <- ${t.name}`, () => Replicator.restore({ from: t.url, path: dest, options: t.options })))
  }
  await r.close({ timeoutMs: 0 })
  moto.stop()
  console.log(`\nsnapshot/restore of a ${(size / 1048576).toFixed(0)} MB database (${rows} rows)`)
  console.log('| step | seconds | MB/s | peak RSS MB | RSS before the step MB |')
  console.log('|---|---:|---:|---:|---:|')
  for (const x of results) console.log(`| ${x.label} | ${(x.ms / 1000).toFixed(2)} | ${(size / 1048576 / (x.ms / 1000)).toFixed(0)} | ${x.rss.toFixed(0)} | ${x.before === undefined ? '-' : x.before.toFixed(0)} |`)
  fs.rmSync(dir, { recursive: true, force: true })
}

if (require.main === module) main().catch((e) => { console.error(e); process.exitCode = 1 })
module.exports = { main }
