'use strict'
// quilt-sqlite + Express + ws: one peer of a replicated todo service.
//
//   PORT      HTTP port for the API (default 3001; 0 = any free port)
//   WS_PORT   WebSocket port other peers connect to (default 4001)
//   PEER_ID   this peer's id, a u32 > 0 (default: the one stored in DB)
//   PEERS     the other peers' WebSocket addresses: id@host:port,...
//   DB        SQLite file (default ./quilt-<PEER_ID>.db)
//   RYW_TIMEOUT_MS  how long GET /todos/:id waits for a token (default 5000)
//
// GET / is a live page of the todos (public/index.html), kept current by
// GET /events: Server-Sent Events fed by replicator.on('change').
//
// Everything binds to 127.0.0.1. Frames go out on the connection this peer
// dials to each of PEERS and come in on the connections others dial to it;
// a dropped connection is redialled with backoff and the gap protocol repairs
// whatever was lost meanwhile.
const http = require('node:http')
const path = require('node:path')
const crypto = require('node:crypto')
const express = require('express')
const { WebSocket, WebSocketServer } = require('ws')
const { Replicator } = require('../..') // in your app: require('quilt-sqlite')
const { migrations, todoFromBody, parsePeers, SELECT_ALL, SELECT_ONE, OPENMETRICS } = require('../shared/schema.js')

const HOST = '127.0.0.1'
const PORT = Number(process.env.PORT ?? 3001)
const WS_PORT = Number(process.env.WS_PORT ?? 4001)
const PEER_ID = process.env.PEER_ID ? Number(process.env.PEER_ID) : undefined
const PEERS = parsePeers(process.env.PEERS)
const DB = process.env.DB || `./quilt-${PEER_ID ?? 'peer'}.db`
const RYW_TIMEOUT_MS = Number(process.env.RYW_TIMEOUT_MS ?? 5000)

const replicator = new Replicator({
  path: DB,
  peerId: PEER_ID,
  heartbeatMs: Number(process.env.HEARTBEAT_MS ?? 200),
  clusterKey: process.env.CLUSTER_KEY || undefined
})
replicator.migrate(migrations)
replicator.on('error', (err) => console.error(`[quilt] ${err.code}: ${err.message}`))
replicator.on('synced', (peer) => console.log(`[quilt] caught up with peer ${peer}`))

let stopping = false

// ----- transport: ws ---------------------------------------------------------

// Incoming: every binary message is a frame from some peer.
const wss = new WebSocketServer({ host: HOST, port: WS_PORT, maxPayload: 8 << 20 })
wss.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => {
    if (!isBinary) return
    try {
      replicator.applyPatches(data)
    } catch (err) {
      // A bad frame changes nothing; count it (it shows in /metrics) and go on.
      console.error(`[ws] rejected frame: ${err.code} ${err.message}`)
    }
  })
  socket.on('error', () => {})
})

// Outgoing: one socket per peer, redialled when it drops. While it is down,
// send throws: quilt counts the failure and retries on a later heartbeat.
const sockets = new Map()
function dial (peer, attempt = 0) {
  if (stopping) return
  const ws = new WebSocket(`ws://${peer.host}:${peer.port}`)
  sockets.set(peer.id, ws)
  ws.on('open', () => {
    attempt = 0
    // Re-register on every (re)connect: the new send replaces the old one.
    replicator.addPeer(peer.id, (frame) => {
      if (ws.readyState !== WebSocket.OPEN) throw new Error(`peer ${peer.id} not connected`)
      ws.send(frame, { binary: true })
    })
  })
  // Frames may also come back on this socket (a peer is free to answer there).
  ws.on('message', (data, isBinary) => {
    if (!isBinary) return
    try { replicator.applyPatches(data) } catch (err) { console.error(`[ws] rejected frame: ${err.code}`) }
  })
  ws.on('error', () => {})
  ws.on('close', () => {
    if (stopping) return
    const delay = Math.min(2000, 50 * 2 ** attempt)
    setTimeout(() => dial(peer, attempt + 1), delay).unref()
  })
}
for (const peer of PEERS) {
  // Known from the start, so status() lists it even before it connects.
  replicator.addPeer(peer.id, () => { throw new Error(`peer ${peer.id} not connected yet`) })
  dial(peer)
}

// ----- HTTP API ----------------------------------------------------------------

const app = express()
app.use(express.json())

// The live page (public/index.html): it lists GET /todos and reads it again
// whenever GET /events says todo rows changed.
app.use(express.static(path.join(__dirname, 'public')))

// Server-Sent Events fed by the replicator's 'change' event: one event per
// committed local transaction or applied frame, here or from any peer. The
// listener is attached only while a page is connected: with no listener,
// quilt collects no change records at all.
const listeners = new Set()
function onChange (changes) {
  const todos = changes.filter((c) => c.table === 'todo')
  if (todos.length === 0) return
  const msg = `event: change\ndata: ${JSON.stringify(todos)}\n\n`
  for (const res of listeners) res.write(msg)
}
app.get('/events', (req, res) => {
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-store',
    connection: 'keep-alive'
  })
  res.write(`event: hello\ndata: ${JSON.stringify({ peerId: replicator.peerId })}\n\n`)
  if (listeners.size === 0) replicator.on('change', onChange)
  listeners.add(res)
  req.on('close', () => {
    listeners.delete(res)
    if (listeners.size === 0) replicator.off('change', onChange)
  })
})

// Write: returns the session token, in the body and in x-quilt-token.
app.post('/todos', (req, res) => {
  const row = todoFromBody(req.body, () => crypto.randomInt(1, 2 ** 47))
  const token = replicator.upsert('todo', row)
  res.set('x-quilt-token', token)
  res.status(201).json({ token, todo: replicator.get(SELECT_ONE, [row.id, row.tenantId]) })
})

app.delete('/todos/:id', (req, res) => {
  const token = replicator.delete('todo', { id: Number(req.params.id), tenantId: Number(req.query.tenantId ?? 1) })
  res.set('x-quilt-token', token)
  res.json({ token })
})

app.get('/todos', (req, res) => {
  res.json(replicator.all(SELECT_ALL))
})

// Read-your-writes: a request carrying x-quilt-token waits (up to 5 s) until
// that write has reached this replica; 503 E_STALE if it does not in time.
app.get('/todos/:id', replicator.readYourWrites({ timeoutMs: RYW_TIMEOUT_MS }), (req, res) => {
  const row = replicator.get(SELECT_ONE, [Number(req.params.id), Number(req.query.tenantId ?? 1)])
  if (!row) return res.status(404).json({ error: 'not found' })
  res.json(row)
})

app.get('/status', (req, res) => res.json(replicator.status()))

app.get('/metrics', (req, res) => {
  res.type(OPENMETRICS).send(replicator.metrics())
})

app.use((err, req, res, next) => {
  const status = err.status || (err instanceof TypeError || err instanceof RangeError || err.code === 'E_SCHEMA' || err.code === 'E_ARG' ? 400 : 500)
  res.status(status).json({ error: err.message, code: err.code })
})

const server = http.createServer(app)

wss.on('listening', () => {
  server.listen(PORT, HOST, () => {
    console.log(JSON.stringify({
      ready: true,
      peerId: replicator.peerId,
      http: server.address().port,
      ws: wss.address().port,
      url: `http://${HOST}:${server.address().port}`
    }))
  })
})

async function shutdown () {
  if (stopping) return
  stopping = true
  for (const res of listeners) res.end()
  server.close()
  // Flush and wait (bounded) for peers to acknowledge before closing.
  await replicator.close({ timeoutMs: 2000 })
  for (const ws of sockets.values()) ws.terminate()
  wss.close()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
