#!/usr/bin/env node
'use strict'
// Protocol chaos harness (guarantees 1 and 2 of API.md).
//
// N replicators run in one process over a simulated network driven by a
// seeded PRNG: frames are dropped, duplicated, delayed and reordered; links
// are cut for a while (partitions) and one peer is closed and reopened from
// its file mid-run. Every replicator uses `heartbeatMs: 0`, so the only
// heartbeats are the `tick()` calls made here. After the workload the
// network heals and becomes lossless, and tick + deliver rounds run until
// every database is identical (bounded). Then the final tables are checked
// against the last-writer-wins result computed from the union of every
// peer's `<t>_patches` rows, and every write whose `upsert` returned is
// checked to be there, unchanged.
//
// The workload and the partition/restart schedule are a pure function of the
// seed (one PRNG stream); the network's fate of each frame comes from a
// second stream of the same seed, so with the same build a run replays
// exactly. HLC stamps come from the wall clock, so a rerun replays the same
// operations, not the same stamps.
//
// CLI:   node __test__/chaos.js [--seed N] [--peers 5] [--ops 10000]
//          [--drop 0.2] [--dup 0.05] [--reorder 0.3] [--delay 6]
//          [--truncate 0] [--corrupt 0] [--key STRING]
//          [--topology mesh|hub|chain|all] [--partition 1] [--restart 1]
//          [--tick-every 25] [--keys 8] [--max-rounds 500] [--max-frame-bytes 0]
//          [--keep] [--verbose]
// Every flag can also be given as an env var: CHAOS_SEED, CHAOS_PEERS, ...
// Module: const { runChaos } = require('./chaos.js'); await runChaos({ ... })

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

// ----- seeded PRNG ---------------------------------------------------------

function mulberry32 (seed) {
  let a = seed >>> 0
  return function () {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

class Rng {
  constructor (seed) { this.next = mulberry32(seed) }
  float () { return this.next() }
  int (n) { return Math.floor(this.next() * n) } // 0..n-1
  range (a, b) { return a + this.int(b - a + 1) } // a..b inclusive
  chance (p) { return p > 0 && this.next() < p }
  pick (arr) { return arr[this.int(arr.length)] }
  shuffle (arr) {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(i + 1)
      const x = arr[i]; arr[i] = arr[j]; arr[j] = x
    }
    return arr
  }
}

// ----- schema --------------------------------------------------------------

const TABLE = 't'
const PK = ['id', 'g']
const COLS = ['a', 'b', 'c', 'd', 'deletedAt'] // non-key columns
const SCHEMA = [{
  up: `CREATE TABLE t (id INTEGER NOT NULL, g INTEGER NOT NULL, a TEXT, b INTEGER,
                       c REAL, d BLOB, deletedAt INTEGER, PRIMARY KEY (id, g)) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL,
                               _peerId INTEGER NOT NULL, id INTEGER, g INTEGER, a TEXT,
                               b INTEGER, c REAL, d BLOB, deletedAt INTEGER) STRICT;`
}]

// ----- options -------------------------------------------------------------

const DEFAULTS = {
  seed: 1,
  peers: 5,
  ops: 10000,
  drop: 0.2, // probability a frame is lost
  dup: 0.05, // probability a frame is delivered twice
  reorder: 0.3, // probability a frame is held back by 1..delay steps
  delay: 6, // max extra delay in network steps
  truncate: 0, // probability a frame arrives cut short (must throw E_FRAME/E_AUTH)
  corrupt: 0, // probability a byte of a frame is flipped (needs a key: must throw E_AUTH, ...)
  key: '', // clusterKey of every replicator ('' none; set automatically when corrupt > 0)
  topology: 'mesh',
  partition: 1, // how many partitions during the workload
  restart: 1, // how many close/reopen cycles during the workload
  tickEvery: 25, // ops between tick() rounds on every replicator
  keys: 8, // ids 0..keys-1, g in {1, 2}
  maxFrameBytes: 0, // 0: the default; e.g. 1200 to force split frames
  maxRounds: 500,
  keep: false, // keep the temp dir
  verbose: false,
  dir: undefined
}

const TOPOLOGIES = ['mesh', 'hub', 'chain']

function links (topology, n) {
  const out = []
  if (topology === 'mesh') {
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) out.push([i, j])
  } else if (topology === 'hub') {
    for (let i = 1; i < n; i++) out.push([0, i])
  } else if (topology === 'chain') {
    for (let i = 0; i + 1 < n; i++) out.push([i, i + 1])
  } else {
    throw new RangeError(`unknown topology ${topology} (mesh|hub|chain)`)
  }
  return out
}

// ----- values --------------------------------------------------------------

function norm (v) {
  if (v === null || v === undefined) return null
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return 'x:' + Buffer.from(v).toString('hex')
  if (typeof v === 'bigint') return 'n:' + v.toString()
  return v
}

function normRow (row) {
  const out = {}
  for (const k of Object.keys(row).sort()) out[k] = norm(row[k])
  return out
}

// `_quiltNulls` of a stored patch as column names joined by commas: a
// bitmap by column ordinal (bit k = ordinal k, see docs/design.md), whose
// ordinals are this peer's own, or the first format's TEXT list.
function nullNames (rep, table, nulls) {
  if (nulls == null || typeof nulls === 'string') return nulls
  const ords = rep.all(`SELECT name, ordinal FROM _quilt_columns WHERE tbl = ? AND version =
    (SELECT value FROM _quilt_meta WHERE key = 'columns_at') ORDER BY name`, [table])
  const names = ords.filter((o) => (nulls[o.ordinal >> 3] || 0) & (1 << (o.ordinal & 7))).map((o) => o.name)
  return names.length ? names.join(',') : null
}

const pkKey = (row) => `${row.id}/${row.g}`
const stampCmp = (x, y) => (x.at - y.at) || (x.peer - y.peer) || (x.seq - y.seq)

// ----- network ---------------------------------------------------------------

class Net {
  constructor (rng, o) {
    this.rng = rng
    this.o = o
    this.queue = []
    this.now = 0
    this.serial = 0
    this.cut = new Map() // "i-j" -> count of partitions cutting it
    this.closed = new Set()
    this.lossless = false
    this.deliver = null
    this.stats = { sent: 0, delivered: 0, dropped: 0, duplicated: 0, delayed: 0, mangled: 0, cut: 0, toClosed: 0 }
  }

  key (a, b) { return a < b ? `${a}-${b}` : `${b}-${a}` }
  isCut (a, b) { return (this.cut.get(this.key(a, b)) || 0) > 0 }

  send (from, to, frame) {
    const s = this.stats
    s.sent++
    if (this.closed.has(to)) { s.toClosed++; return }
    if (this.isCut(from, to)) { s.cut++; return }
    if (!this.lossless && this.rng.chance(this.o.drop)) { s.dropped++; return }
    const copies = this.rng.chance(this.o.dup) ? 2 : 1
    if (copies > 1) s.duplicated++
    // Copy: the frame must not alias memory the addon may reuse.
    const bytes = Buffer.from(frame)
    for (let c = 0; c < copies; c++) {
      let at = this.now + 1
      if (this.rng.chance(this.o.reorder)) { at += this.rng.range(1, this.o.delay); s.delayed++ }
      let f = bytes
      let mangled = null
      if (!this.lossless && this.rng.chance(this.o.truncate)) {
        f = Buffer.from(bytes.subarray(0, this.rng.int(bytes.length)))
        mangled = 'truncated'
      } else if (!this.lossless && this.rng.chance(this.o.corrupt)) {
        f = Buffer.from(bytes)
        f[this.rng.int(f.length)] ^= 1 << this.rng.int(8)
        mangled = 'corrupted'
      }
      if (mangled) s.mangled++
      this.queue.push({ from, to, frame: f, at, serial: this.serial++, mangled })
    }
  }

  /** One step of network time: deliver what is due, in (due time, send order). */
  step () {
    this.now++
    const due = []
    const rest = []
    for (const m of this.queue) (m.at <= this.now ? due : rest).push(m)
    this.queue = rest
    due.sort((x, y) => (x.at - y.at) || (x.serial - y.serial))
    for (const m of due) {
      if (this.closed.has(m.to)) { this.stats.toClosed++; continue }
      if (this.isCut(m.from, m.to)) { this.stats.cut++; continue }
      this.stats.delivered++
      this.deliver(m)
    }
    return due.length
  }

  /** Deliver until the queue is empty (bounded). */
  drain (limit = 100000) {
    let steps = 0
    while (this.queue.length > 0 && steps < limit) { this.step(); steps++ }
    return this.queue.length === 0
  }
}

// ----- the harness -----------------------------------------------------------

async function runChaos (options = {}) {
  const o = { ...DEFAULTS, ...options }
  for (const k of ['seed', 'peers', 'ops', 'delay', 'partition', 'restart', 'tickEvery', 'keys', 'maxRounds', 'maxFrameBytes']) o[k] = Number(o[k])
  for (const k of ['drop', 'dup', 'reorder', 'truncate', 'corrupt']) o[k] = Number(o[k])
  if (o.corrupt > 0 && !o.key) o.key = 'chaos-cluster-key' // without a MAC a flipped value byte is undetectable
  if (!(o.peers >= 2)) throw new RangeError('peers must be >= 2')
  const t0 = Date.now()
  // Two streams: the workload and schedule stay the same for a seed even when
  // the addon sends a different number of frames (another build, say).
  const rng = new Rng(o.seed)
  const netRng = new Rng((o.seed ^ 0x5bd1e995) >>> 0)
  const n = o.peers
  const dir = o.dir || fs.mkdtempSync(path.join(os.tmpdir(), `quilt-chaos-${o.topology}-${o.seed}-`))
  const file = (i) => path.join(dir, `peer${i + 1}.db`)
  const pairs = links(o.topology, n)
  const neighbours = (i) => pairs.filter((p) => p[0] === i || p[1] === i).map((p) => (p[0] === i ? p[1] : p[0]))
  const net = new Net(netRng, o)
  const reps = new Array(n).fill(null)
  const failures = []
  const events = []
  const log = [] // every write whose upsert returned
  const lastSeq = new Array(n).fill(0)
  const counts = { upserts: 0, upsertMany: 0, deletes: 0, nullWrites: 0, ticks: 0, restarts: 0, partitions: 0, applyThrows: 0, drift: 0, rejected: 0, applied: 0, duplicates: 0, requested: 0 }
  const trace = (...a) => { if (o.verbose) console.log(`[${net.now}]`, ...a) }
  const fail = (what, extra) => {
    failures.push(extra === undefined ? what : `${what}: ${typeof extra === 'string' ? extra : JSON.stringify(extra)}`)
  }

  net.deliver = (m) => {
    const r = reps[m.to]
    try {
      const res = r.applyPatches(m.frame)
      if (m.mangled) fail(`a ${m.mangled} frame (${m.frame.length} bytes, from ${m.from + 1}) was taken by peer ${m.to + 1}`, res)
      counts.applied += res.applied
      counts.duplicates += res.duplicates
      counts.requested += res.requested
    } catch (e) {
      if (e && e.code === 'E_DRIFT') { counts.drift++; return }
      if (m.mangled) {
        if (['E_FRAME', 'E_AUTH', 'E_VERSION'].includes(e && e.code)) { counts.rejected++; return }
        fail(`a ${m.mangled} frame threw ${e && e.code} on peer ${m.to + 1}`, String(e && e.message))
        return
      }
      counts.applyThrows++
      if (counts.applyThrows <= 5) fail(`applyPatches threw on peer ${m.to + 1} (frame from ${m.from + 1}, ${m.frame.length} bytes)`, `${e && e.code} ${e && e.message}`)
    }
  }

  function open (i, first) {
    // On reopen the peer id must come from the file, so it is not passed.
    const ro = { path: file(i), heartbeatMs: 0 }
    if (first) ro.peerId = i + 1
    if (o.maxFrameBytes > 0) ro.maxFrameBytes = o.maxFrameBytes
    if (o.key) ro.clusterKey = o.key
    const r = new Replicator(ro)
    if (r.peerId !== i + 1) fail(`peer ${i + 1} reopened with peerId ${r.peerId}`)
    r.on('error', (e) => {
      events.push({ peer: i + 1, code: e.code, message: e.message })
      fail(`peer ${i + 1} emitted 'error'`, `${e.code} ${e.message}`)
    })
    r.migrate(SCHEMA)
    const s = r.status()
    if (!first && s.seq !== lastSeq[i]) fail(`peer ${i + 1} reopened at seq ${s.seq}, its last returned token had seq ${lastSeq[i]}`)
    reps[i] = r
    net.closed.delete(i)
    return r
  }

  const link = (i, j) => reps[i].addPeer(j + 1, (f) => net.send(i, j, f))
  const openPeers = () => reps.map((r, i) => (r ? i : -1)).filter((i) => i >= 0)

  function tickAll () {
    counts.ticks++
    for (const i of rng.shuffle(openPeers())) reps[i].tick()
  }

  // ---- workload values
  function randomValue (col) {
    if (rng.chance(0.15)) { counts.nullWrites++; return null }
    switch (col) {
      case 'a': return rng.chance(0.1) ? '' : `v${rng.int(1000)}-${'é✓'.slice(0, rng.int(3))}`
      case 'b': return rng.chance(0.1) ? -rng.int(1e9) : rng.int(1000)
      case 'c': return rng.chance(0.2) ? rng.int(100) : Math.round(rng.float() * 1e6) / 1000
      case 'd': return Buffer.from(Array.from({ length: rng.int(6) }, () => rng.int(256)))
      case 'deletedAt': return rng.chance(0.5) ? null : 1700000000000 + rng.int(1e9)
    }
    throw new Error('column ' + col)
  }

  function randomRow () {
    const row = { id: rng.int(o.keys), g: rng.range(1, 2) }
    for (const c of COLS) if (rng.chance(0.45)) row[c] = randomValue(c)
    return row
  }

  function record (i, token, rows, kind) {
    const m = /^(\d+)\.(\d+)$/.exec(token)
    if (!m || Number(m[1]) !== i + 1) { fail(`peer ${i + 1} returned token ${token}`); return }
    const seq = Number(m[2])
    if (seq !== lastSeq[i] + rows.length) fail(`peer ${i + 1}: token ${token} after seq ${lastSeq[i]} for ${rows.length} row(s)`)
    for (let k = 0; k < rows.length; k++) {
      log.push({ peer: i + 1, seq: seq - rows.length + 1 + k, kind, row: rows[k] })
    }
    lastSeq[i] = seq
  }

  function write () {
    const i = rng.pick(openPeers())
    const r = reps[i]
    // Now and then note the greatest stamp this peer holds: the write it is
    // about to make must be stamped above it (the HLC observes what it applied).
    const seen = rng.chance(0.02) ? r.get('SELECT max(_patchedAt) AS m FROM t_patches').m : null
    const before = log.length
    const x = rng.float()
    if (x < 0.08) {
      const pk = { id: rng.int(o.keys), g: rng.range(1, 2) }
      record(i, r.delete(TABLE, pk), [pk], 'delete')
      counts.deletes++
    } else if (x < 0.13) {
      const rows = Array.from({ length: rng.range(2, 4) }, randomRow)
      record(i, r.upsertMany(TABLE, rows), rows, 'upsert')
      counts.upsertMany++
    } else {
      const row = randomRow()
      record(i, r.upsert(TABLE, row), [row], 'upsert')
      counts.upserts++
    }
    if (seen !== null) for (let k = before; k < log.length; k++) log[k].after = seen
    if (rng.chance(0.3)) r.flush()
  }

  // ---- schedule of partitions and restarts (ops indexes)
  const plan = []
  for (let p = 0; p < o.partition; p++) {
    const start = rng.range(Math.floor(o.ops * 0.05), Math.floor(o.ops * 0.7))
    const len = rng.range(Math.floor(o.ops * 0.05), Math.floor(o.ops * 0.15))
    plan.push({ at: start, kind: 'cut', id: p }, { at: start + len, kind: 'heal', id: p })
  }
  for (let k = 0; k < o.restart; k++) {
    const at = rng.range(Math.floor(o.ops * 0.1), Math.floor(o.ops * 0.75))
    plan.push({ at, kind: 'close', id: k }, { at: at + rng.range(10, Math.max(10, Math.floor(o.ops * 0.1))), kind: 'reopen', id: k })
  }
  plan.sort((x, y) => x.at - y.at)
  const cuts = new Map() // partition id -> links cut
  const down = new Map() // restart id -> peer index
  const removed = new Set() // links on which removePeer was called

  function cut (id) {
    // Both sides should hold an open peer, or the cut changes nothing.
    let side
    for (let tries = 0; tries < 20; tries++) {
      side = new Set(rng.shuffle([...Array(n).keys()]).slice(0, rng.range(1, n - 1)))
      const open = openPeers()
      if (open.some((i) => side.has(i)) && open.some((i) => !side.has(i))) break
    }
    const cutLinks = pairs.filter(([a, b]) => side.has(a) !== side.has(b))
    for (const [a, b] of cutLinks) net.cut.set(net.key(a, b), (net.cut.get(net.key(a, b)) || 0) + 1)
    // Half the time the transport notices (removePeer both ways, addPeer
    // again on heal); otherwise frames just vanish.
    const notice = rng.chance(0.5)
    if (notice) {
      for (const [a, b] of cutLinks) {
        if (reps[a]) reps[a].removePeer(b + 1)
        if (reps[b]) reps[b].removePeer(a + 1)
        removed.add(net.key(a, b))
      }
    }
    cuts.set(id, cutLinks)
    counts.partitions++
    trace('partition', [...side].map((x) => x + 1), 'cut', cutLinks.map(([a, b]) => `${a + 1}-${b + 1}`), notice ? '(removePeer)' : '')
  }

  function heal (id) {
    for (const [a, b] of cuts.get(id) || []) net.cut.set(net.key(a, b), net.cut.get(net.key(a, b)) - 1)
    cuts.delete(id)
    relink()
    trace('heal', id)
  }

  // addPeer again, both ways, on every removed link that is up again.
  function relink () {
    for (const [a, b] of pairs) {
      const k = net.key(a, b)
      if (!removed.has(k) || net.isCut(a, b) || !reps[a] || !reps[b]) continue
      link(a, b)
      link(b, a)
      removed.delete(k)
    }
  }

  async function close (id) {
    const candidates = openPeers()
    if (candidates.length < 2) return
    const i = rng.pick(candidates)
    const forget = rng.chance(0.5) // does the transport tell neighbours?
    trace('close peer', i + 1, forget ? '(neighbours removePeer)' : '')
    await reps[i].close({ timeoutMs: 0 })
    reps[i] = null
    net.closed.add(i)
    for (const j of neighbours(i)) {
      removed.add(net.key(i, j))
      if (forget && reps[j]) reps[j].removePeer(i + 1)
    }
    down.set(id, i)
    counts.restarts++
  }

  function reopen (id) {
    if (!down.has(id)) return
    const i = down.get(id)
    down.delete(id)
    trace('reopen peer', i + 1)
    open(i, false)
    relink()
  }

  let rounds = -1
  let converged = false
  try {
    for (let i = 0; i < n; i++) open(i, true)
    for (const [a, b] of pairs) { link(a, b); link(b, a) }

    // ---- workload
    let next = 0
    for (let op = 0; op < o.ops; op++) {
      while (next < plan.length && plan[next].at <= op) {
        const ev = plan[next++]
        if (ev.kind === 'cut') cut(ev.id)
        else if (ev.kind === 'heal') heal(ev.id)
        else if (ev.kind === 'close') await close(ev.id)
        else if (ev.kind === 'reopen') reopen(ev.id)
      }
      write()
      for (let s = rng.int(3); s > 0; s--) net.step()
      if (op % o.tickEvery === o.tickEvery - 1) tickAll()
      // Let the replicators' own setImmediate flushes run now and then.
      if (op % 97 === 96) await new Promise((resolve) => setImmediate(resolve))
    }
    // Anything still planned (a heal or reopen past the end) happens now.
    for (const id of [...cuts.keys()]) heal(id)
    for (const id of [...down.keys()]) reopen(id)

    // ---- heal: lossless network, tick + deliver rounds until identical
    net.lossless = true
    net.cut.clear()
    relink()
    if (removed.size) fail('links left removed', [...removed])
    await new Promise((resolve) => setImmediate(resolve))
    for (let round = 1; round <= o.maxRounds; round++) {
      tickAll()
      if (!net.drain()) fail(`round ${round}: the network did not drain`)
      if (compare().same) { rounds = round; converged = true; break }
    }
    if (!converged) {
      const c = compare()
      fail(`no convergence after ${o.maxRounds} rounds`, c.why)
      for (const i of openPeers()) {
        const st = reps[i].status()
        const lag = st.peers.filter((p) => p.missing > 0 || p.contiguousSeq !== lastSeq[p.peerId - 1])
        if (lag.length) fail(`peer ${i + 1} status`, lag)
      }
    }
    if (converged) {
      await checkStatus()
      quiescence()
    }
    verify()
  } catch (e) {
    fail('harness threw', (e && e.stack) || String(e))
  } finally {
    for (let i = 0; i < n; i++) {
      if (reps[i]) { try { await reps[i].close({ timeoutMs: 0 }) } catch (e) { fail(`close peer ${i + 1}`, e.message) } }
    }
    if (!o.keep && !o.dir) fs.rmSync(dir, { recursive: true, force: true })
  }

  // Rows and held patches of every peer; `same` when all agree.
  function compare () {
    const views = openPeers().map((i) => ({
      peer: i + 1,
      rows: JSON.stringify(reps[i].all('SELECT * FROM t ORDER BY id, g').map(normRow)),
      patches: reps[i].all('SELECT _peerId AS p, _sequenceId AS s FROM t_patches ORDER BY 1, 2').map((x) => `${x.p}.${x.s}`).join(' ')
    }))
    const why = []
    for (const v of views.slice(1)) {
      if (v.rows !== views[0].rows) why.push(`rows of peer ${v.peer} differ from peer ${views[0].peer}`)
      if (v.patches !== views[0].patches) {
        const a = new Set(views[0].patches.split(' '))
        const b = new Set(v.patches.split(' '))
        const onlyA = [...a].filter((x) => !b.has(x))
        const onlyB = [...b].filter((x) => !a.has(x))
        why.push(`patches of peer ${v.peer} vs ${views[0].peer}: ${onlyB.length} only in ${v.peer} ${onlyB.slice(0, 8).join(',')}; ${onlyA.length} only in ${views[0].peer} ${onlyA.slice(0, 8).join(',')}`)
      }
    }
    return { same: why.length === 0, why: why.join('; ') }
  }

  // Once converged, more heartbeats only ping: no requests, nothing served.
  function quiescence () {
    const metric = (i, name) => Number(new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(reps[i].metrics())?.[1])
    const names = ['quilt_retransmissions_total{kind="requested"}', 'quilt_retransmissions_total{kind="served"}', 'quilt_patches_applied_total']
    const snap = () => openPeers().map((i) => names.map((m) => metric(i, m)))
    const before = snap()
    for (let k = 0; k < 3; k++) { tickAll(); net.drain() }
    const after = snap()
    for (const [k, i] of openPeers().entries()) {
      names.forEach((m, j) => {
        if (!(after[k][j] === before[k][j])) fail(`peer ${i + 1}: ${m} went from ${before[k][j]} to ${after[k][j]} in idle heartbeats after convergence`)
      })
    }
  }

  // Once converged, every peer's vector says so too.
  async function checkStatus () {
    for (const i of openPeers()) {
      // waitFor resolves at once for every token, on every peer.
      const waits = await Promise.all(log.map((w) => reps[i].waitFor(`${w.peer}.${w.seq}`, 0)))
      const notYet = log.filter((w, k) => waits[k] !== true)
      if (notYet.length) fail(`peer ${i + 1}: waitFor(token, 0) is not true for ${notYet.length} token(s)`, notYet.slice(0, 5).map((w) => `${w.peer}.${w.seq}`))
      const st = reps[i].status()
      if (st.seq !== lastSeq[i]) fail(`peer ${i + 1}: status().seq ${st.seq}, last token seq ${lastSeq[i]}`)
      if (st.pending !== 0) fail(`peer ${i + 1}: status().pending ${st.pending}`)
      for (const p of st.peers) {
        const want = lastSeq[p.peerId - 1]
        if (p.contiguousSeq !== want || p.lastSeq !== want || p.missing !== 0) fail(`peer ${i + 1}: status of origin ${p.peerId} (last token seq ${want})`, p)
      }
    }
  }

  // The LWW result of the union of all patch tables, and the write log.
  function verify () {
    const union = new Map()
    for (const i of openPeers()) {
      for (const p of reps[i].all('SELECT * FROM t_patches')) {
        p._quiltNulls = nullNames(reps[i], 't', p._quiltNulls)
        const k = `${p._peerId}.${p._sequenceId}`
        const prev = union.get(k)
        if (prev) {
          if (JSON.stringify(normRow(prev)) !== JSON.stringify(normRow(p))) fail(`patch ${k} differs between peers`, [normRow(prev), normRow(p)])
        } else {
          union.set(k, p)
        }
      }
    }
    // Which columns a stored patch sets: non-NULL values, and NULLs listed
    // in _quiltNulls (API.md: an explicit NULL write is recorded).
    const setCols = (p) => {
      const listed = new Set((p._quiltNulls || '').split(',').filter(Boolean))
      return COLS.filter((c) => p[c] !== null || listed.has(c))
    }
    // Every returned write is there, with what was written.
    let missing = 0
    for (const w of log) {
      const p = union.get(`${w.peer}.${w.seq}`)
      if (!p) {
        if (++missing <= 10) fail(`write ${w.peer}.${w.seq} (upsert returned) is in no peer`)
        continue
      }
      if (w.after !== undefined && !(p._patchedAt > w.after)) fail(`write ${w.peer}.${w.seq} is stamped ${p._patchedAt}, not above ${w.after}, the greatest stamp its peer held when it wrote`)
      if (p.id !== w.row.id || p.g !== w.row.g) fail(`patch ${w.peer}.${w.seq} has key ${pkKey(p)}, written ${pkKey(w.row)}`)
      const got = setCols(p)
      if (w.kind === 'delete') {
        if (got.join() !== 'deletedAt' || typeof p.deletedAt !== 'number') fail(`delete ${w.peer}.${w.seq} stored as`, normRow(p))
        continue
      }
      const want = COLS.filter((c) => c in w.row)
      if (got.join() !== want.join()) fail(`patch ${w.peer}.${w.seq} sets [${got}] but the write set [${want}]`, normRow(p))
      for (const c of want) {
        if (JSON.stringify(norm(p[c])) !== JSON.stringify(norm(w.row[c]))) fail(`patch ${w.peer}.${w.seq} column ${c}`, { stored: norm(p[c]), written: norm(w.row[c]) })
      }
    }
    if (union.size !== log.length) fail(`${union.size} patches in the union, ${log.length} writes returned`)
    // HLC order: each origin's stamps strictly increase with its seq.
    const byPeer = new Map()
    for (const p of union.values()) {
      if (!byPeer.has(p._peerId)) byPeer.set(p._peerId, [])
      byPeer.get(p._peerId).push(p)
    }
    for (const [peer, ps] of byPeer) {
      ps.sort((x, y) => x._sequenceId - y._sequenceId)
      for (let k = 1; k < ps.length; k++) {
        if (ps[k]._patchedAt <= ps[k - 1]._patchedAt) {
          fail(`peer ${peer}: seq ${ps[k]._sequenceId} is stamped ${ps[k]._patchedAt}, not after seq ${ps[k - 1]._sequenceId} (${ps[k - 1]._patchedAt})`)
          break
        }
      }
    }
    // Expected rows: per column, the value of the greatest (at, peer, seq).
    const expected = new Map()
    for (const p of union.values()) {
      const k = pkKey(p)
      if (!expected.has(k)) expected.set(k, { row: { id: p.id, g: p.g }, stamps: {} })
      const e = expected.get(k)
      const stamp = { at: p._patchedAt, peer: p._peerId, seq: p._sequenceId }
      for (const c of setCols(p)) {
        if (!e.stamps[c] || stampCmp(stamp, e.stamps[c]) > 0) { e.stamps[c] = stamp; e.row[c] = p[c] }
      }
    }
    const want = [...expected.values()].map((e) => {
      const r = { id: e.row.id, g: e.row.g }
      for (const c of COLS) r[c] = c in e.row ? e.row[c] : null
      return normRow(r)
    }).sort((x, y) => (x.id - y.id) || (x.g - y.g))
    const wantS = want.map((r) => JSON.stringify(r))
    // Without convergence the rows differ anyway; that failure is reported.
    for (const i of converged ? openPeers() : []) {
      const got = reps[i].all('SELECT * FROM t ORDER BY id, g').map((r) => JSON.stringify(normRow(r)))
      const bad = []
      for (let k = 0; k < Math.max(got.length, wantS.length); k++) {
        if (got[k] !== wantS[k]) bad.push({ expected: wantS[k] && JSON.parse(wantS[k]), got: got[k] && JSON.parse(got[k]) })
      }
      if (bad.length) fail(`peer ${i + 1}: ${bad.length} row(s) differ from the LWW result of the union of patches`, bad.slice(0, 3))
    }
  }

  const ms = Date.now() - t0
  return {
    ok: failures.length === 0,
    seed: o.seed,
    topology: o.topology,
    peers: n,
    ops: o.ops,
    writes: log.length,
    rounds,
    converged,
    ms,
    counts,
    net: { ...net.stats, steps: net.now },
    events,
    failures,
    dir: o.keep ? dir : undefined,
    options: o
  }
}

function summary (r) {
  const s = r.net
  return `chaos ${r.ok ? 'ok' : 'FAILED'} topology=${r.topology} seed=${r.seed} peers=${r.peers} ops=${r.ops} writes=${r.writes} ` +
    `rounds=${r.rounds} ms=${r.ms} frames: sent=${s.sent} delivered=${s.delivered} dropped=${s.dropped} dup=${s.duplicated} ` +
    `delayed=${s.delayed} mangled=${s.mangled} rejected=${r.counts.rejected} cut=${s.cut} toClosed=${s.toClosed} applied=${r.counts.applied} dups=${r.counts.duplicates} ` +
    `requested=${r.counts.requested} partitions=${r.counts.partitions} restarts=${r.counts.restarts}`
}

function reproduce (r) {
  const o = r.options
  return `node __test__/chaos.js --seed ${o.seed} --topology ${o.topology} --peers ${o.peers} --ops ${o.ops} --drop ${o.drop} --dup ${o.dup} ` +
    `--reorder ${o.reorder} --delay ${o.delay} --partition ${o.partition} --restart ${o.restart} --tick-every ${o.tickEvery} --keys ${o.keys}` +
    (o.maxFrameBytes ? ` --max-frame-bytes ${o.maxFrameBytes}` : '') +
    (o.truncate ? ` --truncate ${o.truncate}` : '') + (o.corrupt ? ` --corrupt ${o.corrupt}` : '') + (o.key ? ` --key ${o.key}` : '')
}

// ----- CLI ---------------------------------------------------------------------

function parseArgs (argv, env) {
  const o = {}
  const camel = (s) => s.replace(/-([a-z])/g, (_, c) => c.toUpperCase())
  for (const k of Object.keys(DEFAULTS)) {
    const e = env['CHAOS_' + k.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase()]
    if (e !== undefined && e !== '') o[k] = e
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) throw new RangeError(`unexpected argument ${a}`)
    let [name, val] = a.slice(2).split('=', 2)
    name = camel(name)
    if (!(name in DEFAULTS)) throw new RangeError(`unknown flag --${name}`)
    if (typeof DEFAULTS[name] === 'boolean') { o[name] = val === undefined ? true : val !== 'false'; continue }
    if (val === undefined) val = argv[++i]
    if (val === undefined) throw new RangeError(`--${name} needs a value`)
    o[name] = val
  }
  for (const k of ['keep', 'verbose']) if (typeof o[k] === 'string') o[k] = o[k] !== '0' && o[k] !== 'false'
  return o
}

async function main () {
  let o
  try {
    o = parseArgs(process.argv.slice(2), process.env)
  } catch (e) {
    console.error(e.message)
    process.exit(2)
  }
  const topologies = (o.topology || DEFAULTS.topology) === 'all' ? TOPOLOGIES : [o.topology || DEFAULTS.topology]
  let failed = false
  for (const topology of topologies) {
    const r = await runChaos({ ...o, topology })
    console.log(summary(r))
    if (!r.ok) {
      failed = true
      console.error(`chaos FAILED with seed ${r.seed} (topology ${topology})`)
      for (const f of r.failures.slice(0, 30)) console.error('  - ' + f)
      if (r.failures.length > 30) console.error(`  ... and ${r.failures.length - 30} more`)
      console.error('reproduce: ' + reproduce(r))
    }
  }
  process.exitCode = failed ? 1 : 0
}

module.exports = { runChaos, summary, reproduce, links, mulberry32, Rng, SCHEMA, DEFAULTS, TOPOLOGIES }

if (require.main === module) {
  main().catch((e) => {
    console.error(e)
    process.exit(1)
  })
}
