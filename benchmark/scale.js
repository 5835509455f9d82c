'use strict'
// npm run bench:scale — heartbeat cost as the cluster grows (issue 13).
//
// For N = 3, 10, 30, 100, 300 peers: one measured replicator R knows N-1
// other real replicators (in this process, :memory:), each of which wrote
// ROWS rows (200: seqs of two bytes on the wire; larger seqs add up to 6
// bytes per vector entry), so R's seq vector has N entries and nothing is
// missing (no gap to repair). Then R.tick() runs ROUNDS times with sends that only count
// bytes, once with a send per peer (full mesh: a ping to each of N-1 peers)
// and once with addBroadcast (one ping for all).
//
// Printed per N and mode: heartbeat bytes R sends per heartbeat (= per
// second at the default heartbeatMs of 1000), the bytes each peer receives
// per second when all N peers do the same, and tick() time (median and p99,
// JS dispatch included).
const { Replicator } = require('..')

const SIZES = (process.env.SIZES || '3,10,30,100,300').split(',').map(Number)
const ROUNDS = Number(process.env.ROUNDS || 200)
const ROWS = Number(process.env.ROWS || 200)
const T = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, v TEXT) STRICT;`
}

function open (peerId) {
  const r = new Replicator({ path: ':memory:', peerId, heartbeatMs: 0 })
  r.migrate([T])
  return r
}

function quantile (xs, q) {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]
}

async function measure (n, broadcast) {
  const r = open(1)
  const others = []
  for (let id = 2; id <= n; id++) {
    const o = open(id)
    o.upsertMany('t', Array.from({ length: ROWS }, (_, k) => ({ id: id * 1_000_000 + k, v: 'x' })))
    others.push(o)
  }
  r.upsert('t', { id: 1, v: 'row of 1' })
  let bytes = 0
  let frames = 0
  const count = (f) => { bytes += f.length; frames++ }
  if (broadcast) r.addBroadcast(count)
  // Each other peer is added on R, and R is added on it: its hello ping
  // carries its own row's seq, so R fetches the row, and R's pings come back.
  for (const o of others) {
    const toR = []
    o.addPeer(1, (f) => toR.push(f))
    r.addPeer(o.peerId, (f) => { count(f); o.applyPatches(f) })
    o.flush()
    for (const f of toR.splice(0)) r.applyPatches(f)
    o.tick()
    for (const f of toR.splice(0)) r.applyPatches(f)
  }
  r.flush()
  // Settle: any request or answer still in flight.
  for (let i = 0; i < 3; i++) r.tick()
  const missing = r.status().peers.reduce((s, p) => s + p.missing, 0)
  if (missing !== 0) throw new Error(`N=${n}: ${missing} patches still missing before measuring`)
  // The others stop answering: only R's heartbeat is measured.
  for (const o of others) r.addPeer(o.peerId, count)
  r.tick()
  const times = []
  bytes = 0
  frames = 0
  for (let i = 0; i < ROUNDS; i++) {
    const t0 = process.hrtime.bigint()
    r.tick()
    times.push(Number(process.hrtime.bigint() - t0) / 1e6)
  }
  const perTick = bytes / ROUNDS
  const result = {
    n,
    mode: broadcast ? 'broadcast' : 'full mesh',
    framesPerTick: frames / ROUNDS,
    sentPerPeer: perTick,
    // Every peer sends the same; a broadcast reaches the N-1 others.
    receivedPerPeer: broadcast ? perTick * (n - 1) : perTick,
    tickMedian: quantile(times, 0.5),
    tickP99: quantile(times, 0.99)
  }
  for (const o of [r, ...others]) await o.close({ timeoutMs: 0 })
  return result
}

function fmtBytes (b) {
  if (b >= 1e6) return `${(b / 1e6).toFixed(2)} MB`
  if (b >= 1e3) return `${(b / 1e3).toFixed(1)} kB`
  return `${Math.round(b)} B`
}

async function main () {
  console.log(`heartbeat cost per peer, heartbeatMs 1000, every peer at seq ${ROWS}, nothing to repair (${ROUNDS} ticks each)\n`)
  console.log('| N | mode | frames/heartbeat | bytes sent/peer/s | bytes received/peer/s | tick() median | tick() p99 |')
  console.log('|---:|---|---:|---:|---:|---:|---:|')
  for (const n of SIZES) {
    for (const broadcast of [false, true]) {
      const m = await measure(n, broadcast)
      console.log(`| ${m.n} | ${m.mode} | ${m.framesPerTick} | ${fmtBytes(m.sentPerPeer)} | ${fmtBytes(m.receivedPerPeer)} | ${m.tickMedian.toFixed(3)} ms | ${m.tickP99.toFixed(3)} ms |`)
    }
  }
}

main().catch((e) => { console.error(e); process.exit(1) })
