'use strict'
// quilt-sqlite over UDP (node:dgram): one datagram = one frame.
//
//   UDP_PORT  this peer's UDP port (default 5001)
//   PORT      HTTP port of the small API (default 3101; 0 = any free port)
//   PEER_ID   this peer's id, a u32 > 0
//   PEERS     the other peers' UDP addresses: id@host:port,...
//   LOSS      fraction of sent datagrams to drop on purpose (default 0.1)
//   DB        SQLite file (default ./quilt-udp-<PEER_ID>.db)
//
// `maxFrameBytes: 1200` keeps every frame under a typical path MTU, so no
// datagram is fragmented; `heartbeatMs: 50` makes gap detection quick. UDP
// loses, duplicates and reorders datagrams; the artificial LOSS shows that
// quilt's gap protocol (pings carrying seq vectors, retransmission requests)
// repairs all of it without any help from the transport.
const http = require('node:http')
const dgram = require('node:dgram')
const crypto = require('node:crypto')
const { Replicator } = require('../..') // in your app: require('quilt-sqlite')
const { migrations, todoFromBody, parsePeers, SELECT_ALL, OPENMETRICS } = require('../shared/schema.js')

const HOST = '127.0.0.1'
const UDP_PORT = Number(process.env.UDP_PORT ?? 5001)
const PORT = Number(process.env.PORT ?? 3101)
const PEER_ID = process.env.PEER_ID ? Number(process.env.PEER_ID) : undefined
const PEERS = parsePeers(process.env.PEERS)
const LOSS = Number(process.env.LOSS ?? 0.1)
const DB = process.env.DB || `./quilt-udp-${PEER_ID ?? 'peer'}.db`

const replicator = new Replicator({ path: DB, peerId: PEER_ID, maxFrameBytes: 1200, heartbeatMs: 50 })
replicator.migrate(migrations)
replicator.on('error', (err) => console.error(`[quilt] ${err.code}: ${err.message}`))

const stats = { sent: 0, dropped: 0, received: 0, rejected: 0, maxDatagram: 0 }
const socket = dgram.createSocket('udp4')

socket.on('message', (msg) => {
  stats.received++
  try {
    replicator.applyPatches(msg)
  } catch (err) {
    stats.rejected++ // malformed or forged: nothing changed
  }
})

// Register peers once the socket is bound: addPeer sends a first frame at once.
function addPeers () {
  for (const peer of PEERS) {
    replicator.addPeer(peer.id, (frame) => {
      stats.maxDatagram = Math.max(stats.maxDatagram, frame.length)
      if (Math.random() < LOSS) { stats.dropped++; return } // the network "lost" it
      stats.sent++
      socket.send(frame, peer.port, peer.host)
    })
  }
}

const server = http.createServer((req, res) => {
  const json = (status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers })
    res.end(JSON.stringify(body))
  }
  try {
    if (req.method === 'POST' && req.url === '/todos') {
      let body = ''
      req.setEncoding('utf8')
      req.on('data', (c) => { body += c })
      req.on('end', () => {
        try {
          const input = JSON.parse(body || '{}')
          // An array writes many rows in one transaction (upsertMany).
          const rows = (Array.isArray(input) ? input : [input]).map((b) => todoFromBody(b, () => crypto.randomInt(1, 2 ** 47)))
          const token = Array.isArray(input) ? replicator.upsertMany('todo', rows) : replicator.upsert('todo', rows[0])
          json(201, { token, count: rows.length }, { 'x-quilt-token': token })
        } catch (err) {
          json(400, { error: err.message, code: err.code })
        }
      })
      return
    }
    if (req.method === 'GET' && req.url === '/todos') return json(200, replicator.all(SELECT_ALL))
    if (req.method === 'GET' && req.url === '/status') return json(200, replicator.status())
    if (req.method === 'GET' && req.url === '/stats') return json(200, stats)
    if (req.method === 'GET' && req.url === '/metrics') {
      res.writeHead(200, { 'content-type': OPENMETRICS })
      return res.end(replicator.metrics())
    }
    json(404, { error: 'not found' })
  } catch (err) {
    json(500, { error: err.message, code: err.code })
  }
})

socket.bind(UDP_PORT, HOST, () => {
  addPeers()
  server.listen(PORT, HOST, () => {
    console.log(JSON.stringify({
      ready: true,
      peerId: replicator.peerId,
      udp: socket.address().port,
      http: server.address().port,
      url: `http://${HOST}:${server.address().port}`
    }))
  })
})

let stopping = false
async function shutdown () {
  if (stopping) return
  stopping = true
  server.close()
  await replicator.close({ timeoutMs: 1000 })
  socket.close()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
