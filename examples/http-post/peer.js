'use strict'
// quilt-sqlite with a stateless HTTP transport: each frame is POSTed to the
// receiving peer's /quilt/frames endpoint. No connection state is kept, so
// the same handler works behind a load balancer or in a serverless function
// (call replicator.tick() from a scheduler there, or keep heartbeatMs).
//
//   PORT         HTTP port (default 3201; 0 = any free port)
//   PEER_ID      this peer's id, a u32 > 0
//   PEERS        the other peers' base URLs as id@host:port,...
//   CLUSTER_KEY  shared secret; every frame then carries an HMAC and forged
//                frames are refused (E_AUTH). Use it: the endpoint is open.
//   DB           SQLite file (default ./quilt-http-<PEER_ID>.db)
const http = require('node:http')
const crypto = require('node:crypto')
const { Replicator } = require('../..') // in your app: require('quilt-sqlite')
const { migrations, todoFromBody, parsePeers, SELECT_ALL, SELECT_ONE, OPENMETRICS } = require('../shared/schema.js')

const HOST = '127.0.0.1'
const PORT = Number(process.env.PORT ?? 3201)
const PEER_ID = process.env.PEER_ID ? Number(process.env.PEER_ID) : undefined
const PEERS = parsePeers(process.env.PEERS)
const DB = process.env.DB || `./quilt-http-${PEER_ID ?? 'peer'}.db`
const MAX_BODY = 2 << 20

const replicator = new Replicator({
  path: DB,
  peerId: PEER_ID,
  heartbeatMs: Number(process.env.HEARTBEAT_MS ?? 200),
  clusterKey: process.env.CLUSTER_KEY || undefined
})
replicator.migrate(migrations)
replicator.on('error', (err) => console.error(`[quilt] ${err.code}: ${err.message}`))

// send() must not block: fire the POST and forget it. A failed POST is simply
// lost; the receiver notices the gap (or the sender's ping shows a lost tail)
// and asks again, so no retry logic is needed here.
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
const stats = { posted: 0, failed: 0 }
for (const peer of PEERS) {
  replicator.addPeer(peer.id, (frame) => {
    const req = http.request({
      host: peer.host,
      port: peer.port,
      path: '/quilt/frames',
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/octet-stream', 'content-length': frame.length }
    }, (res) => {
      res.resume()
      if (res.statusCode >= 300) stats.failed++
    })
    req.on('error', () => { stats.failed++ })
    req.end(frame)
    stats.posted++
  })
}

function readBody (req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = []
    let size = 0
    req.on('data', (c) => {
      size += c.length
      if (size > limit) { reject(Object.assign(new Error('body too large'), { status: 413 })); req.destroy() } else chunks.push(c)
    })
    req.on('end', () => resolve(Buffer.concat(chunks)))
    req.on('error', reject)
  })
}

const server = http.createServer(async (req, res) => {
  const json = (status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers })
    res.end(JSON.stringify(body))
  }
  const url = new URL(req.url, `http://${HOST}`)
  try {
    // The transport endpoint: one frame per request.
    if (req.method === 'POST' && url.pathname === '/quilt/frames') {
      const frame = await readBody(req, MAX_BODY)
      try {
        const r = replicator.applyPatches(frame)
        return json(200, r)
      } catch (err) {
        // Malformed (E_FRAME), forged (E_AUTH), too far ahead (E_DRIFT): refused, nothing changed.
        return json(400, { error: err.message, code: err.code })
      }
    }
    if (req.method === 'POST' && url.pathname === '/todos') {
      const row = todoFromBody(JSON.parse((await readBody(req, MAX_BODY)).toString('utf8') || '{}'), () => crypto.randomInt(1, 2 ** 47))
      const token = replicator.upsert('todo', row)
      return json(201, { token, todo: replicator.get(SELECT_ONE, [row.id, row.tenantId]) }, { 'x-quilt-token': token })
    }
    if (req.method === 'GET' && url.pathname === '/todos') return json(200, replicator.all(SELECT_ALL))
    const m = /^\/todos\/(\d+)$/.exec(url.pathname)
    if (req.method === 'GET' && m) {
      // Read-your-writes without Express: wait for the token, if one is given.
      const token = req.headers['x-quilt-token']
      if (token && !(await replicator.waitFor(token, 5000))) return json(503, { error: 'stale replica', code: 'E_STALE' })
      const row = replicator.get(SELECT_ONE, [Number(m[1]), Number(url.searchParams.get('tenantId') ?? 1)])
      return row ? json(200, row) : json(404, { error: 'not found' })
    }
    if (req.method === 'GET' && url.pathname === '/status') return json(200, replicator.status())
    if (req.method === 'GET' && url.pathname === '/stats') return json(200, stats)
    if (req.method === 'GET' && url.pathname === '/metrics') {
      res.writeHead(200, { 'content-type': OPENMETRICS })
      return res.end(replicator.metrics())
    }
    json(404, { error: 'not found' })
  } catch (err) {
    const status = err.status || (err instanceof SyntaxError || err instanceof TypeError || err instanceof RangeError || err.code === 'E_SCHEMA' ? 400 : 500)
    json(status, { error: err.message, code: err.code })
  }
})

server.listen(PORT, HOST, () => {
  console.log(JSON.stringify({ ready: true, peerId: replicator.peerId, http: server.address().port, url: `http://${HOST}:${server.address().port}` }))
})

let stopping = false
async function shutdown () {
  if (stopping) return
  stopping = true
  await replicator.close({ timeoutMs: 1000 })
  server.close()
  agent.destroy()
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
