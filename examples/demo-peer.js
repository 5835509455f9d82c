'use strict'
// One peer of `npm run demo` (examples/demo.js starts three of these with
// child_process.fork). Each peer owns one SQLite file, listens for WebSocket
// connections on an ephemeral port of 127.0.0.1 and dials every other peer.
// Frames are binary ws messages: each one goes to `applyPatches`, and
// `addPeer(id, frame => socket.send(frame))` hands this peer's frames out.
//
// The parent drives it over the IPC channel:
//   parent -> { type: 'connect', peers: [{ id, port }] }   dial the others
//   parent -> { type: 'write', ms, ids, tenants }          write for `ms`
//   parent -> { type: 'dump' }                              report rows + hash
//   parent -> { type: 'stop' }                              close and exit 0
//   child  -> { type: 'ready', peerId, port } | 'connected' | 'wrote' | 'rows' | 'closed'
//
// Env: PEER_ID (required), DB (required), HEARTBEAT_MS (default 150).
// The peer exits on its own when the parent goes away (IPC disconnect).
const crypto = require('node:crypto')
const { WebSocket, WebSocketServer } = require('ws')
const { Replicator } = require('..') // in your app: require('quilt-sqlite')
const { migrations, SELECT_ALL } = require('./shared/schema.js')

const HOST = '127.0.0.1'
const PEER_ID = Number(process.env.PEER_ID)
const DB = process.env.DB
const HEARTBEAT_MS = Number(process.env.HEARTBEAT_MS ?? 150)

if (typeof process.send !== 'function') {
  console.error('demo-peer.js is started by examples/demo.js (it needs an IPC channel)')
  process.exit(2)
}
if (!Number.isInteger(PEER_ID) || PEER_ID < 1 || !DB) {
  console.error('demo-peer.js: PEER_ID and DB must be set')
  process.exit(2)
}

const replicator = new Replicator({ path: DB, peerId: PEER_ID, heartbeatMs: HEARTBEAT_MS })
replicator.migrate(migrations)
const counters = { rejected: 0, errors: 0 }
replicator.on('error', (err) => {
  counters.errors++
  if (counters.errors <= 5) console.error(`[quilt] ${err.code}: ${err.message}`)
})

let stopping = false // close() has started: no redials, no new writes
let closed = false // the replicator is closed: frames are dropped
const outgoing = new Map() // peer id -> WebSocket this peer dialled

function onFrame (data, isBinary) {
  // Frames are still applied while close() waits for acks: the peer closing
  // at the same time may be retransmitting the tail it is waiting on.
  if (!isBinary || closed) return
  try {
    replicator.applyPatches(data)
  } catch (err) {
    // A bad frame throws and changes nothing.
    counters.rejected++
    if (counters.rejected <= 5) console.error(`[ws] rejected frame: ${err.code} ${err.message}`)
  }
}

// ----- incoming: every binary message on any connection is a frame ---------------
const wss = new WebSocketServer({ host: HOST, port: 0, maxPayload: 8 << 20 })
wss.on('connection', (socket) => {
  socket.on('message', onFrame)
  socket.on('error', () => {})
})
wss.on('listening', () => {
  process.send({ type: 'ready', peerId: replicator.peerId, port: wss.address().port })
})

// ----- outgoing: one socket per other peer, redialled (bounded backoff) ------------
function dial (peer, attempt = 0) {
  if (stopping) return
  const ws = new WebSocket(`ws://${HOST}:${peer.port}`)
  outgoing.set(peer.id, ws)
  ws.on('open', () => {
    attempt = 0
    // Registering again after a reconnect replaces the old send.
    replicator.addPeer(peer.id, (frame) => {
      if (ws.readyState !== WebSocket.OPEN) throw new Error(`peer ${peer.id} not connected`)
      ws.send(frame, { binary: true })
    })
    maybeConnected()
  })
  ws.on('message', onFrame) // a peer may answer on this socket too
  ws.on('error', () => {})
  ws.on('close', () => {
    if (stopping) return
    setTimeout(() => dial(peer, attempt + 1), Math.min(1000, 50 * 2 ** attempt)).unref()
  })
}

let expected = 0
let announced = false
function maybeConnected () {
  if (announced) return
  const open = [...outgoing.values()].filter((ws) => ws.readyState === WebSocket.OPEN).length
  if (open === expected) {
    announced = true
    process.send({ type: 'connected', peerId: PEER_ID })
  }
}

// ----- the workload: everyone writes the same rows at the same time --------------
function write ({ ms, ids, tenants }) {
  const end = Date.now() + ms
  let writes = 0
  let token = null
  const pick = (n) => 1 + crypto.randomInt(n)
  function burst () {
    if (stopping) return
    for (let i = 0; i < 3; i++) {
      const key = { id: pick(ids), tenantId: pick(tenants) }
      const r = crypto.randomInt(100)
      writes++
      if (r < 5) {
        token = replicator.delete('todo', key) // tombstone: deletedAt = now
      } else if (r < 10) {
        token = replicator.upsert('todo', { ...key, deletedAt: null }) // undelete: an explicit NULL
      } else if (r < 30) {
        token = replicator.upsert('todo', { ...key, done: crypto.randomInt(2) }) // partial update
      } else if (r < 35) {
        // a small batch in one transaction
        const rows = []
        for (let k = 0; k < 4; k++) rows.push({ id: pick(ids), tenantId: pick(tenants), title: `p${PEER_ID}#${writes}.${k}` })
        token = replicator.upsertMany('todo', rows)
      } else {
        token = replicator.upsert('todo', { ...key, title: `p${PEER_ID}#${writes}`, done: 0 })
      }
    }
    if (Date.now() < end) setTimeout(burst, 2)
    else process.send({ type: 'wrote', peerId: PEER_ID, writes, token })
  }
  burst()
}

function dump () {
  const rows = replicator.all(SELECT_ALL)
  const hash = crypto.createHash('sha256').update(JSON.stringify(rows)).digest('hex')
  const s = replicator.status()
  process.send({
    type: 'rows',
    peerId: PEER_ID,
    rows,
    hash,
    seq: s.seq,
    missing: s.peers.reduce((n, p) => n + p.missing, 0),
    // what this peer holds of each other peer, contiguously
    holds: Object.fromEntries(s.peers.map((p) => [p.peerId, p.contiguousSeq])),
    rejected: counters.rejected,
    errors: counters.errors
  })
}

async function stop () {
  if (stopping) return
  stopping = true
  try {
    await replicator.close({ timeoutMs: 2000 })
  } catch (err) {
    console.error(`[quilt] close: ${err.message}`)
  }
  closed = true
  for (const ws of outgoing.values()) ws.terminate()
  for (const c of wss.clients) c.terminate()
  wss.close()
  if (process.connected) process.send({ type: 'closed', peerId: PEER_ID }, () => process.exit(0))
  else process.exit(0)
}

process.on('message', (msg) => {
  if (msg.type === 'connect') {
    const others = msg.peers.filter((p) => p.id !== PEER_ID)
    expected = others.length
    for (const p of others) {
      // Known from the start, so gaps are tracked even before the socket opens.
      replicator.addPeer(p.id, () => { throw new Error(`peer ${p.id} not connected yet`) })
      dial(p)
    }
    maybeConnected()
  } else if (msg.type === 'write') write(msg)
  else if (msg.type === 'dump') dump()
  else if (msg.type === 'stop') stop()
})

// The parent went away (exit, crash, Ctrl-C): do not linger.
process.on('disconnect', () => { if (!stopping) process.exit(0) })
process.on('SIGTERM', () => stop())
process.on('SIGINT', () => stop())
