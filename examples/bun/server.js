// quilt-sqlite on Bun: Bun.serve serves the HTTP API and, on /quilt, Bun's
// built-in WebSocket server that other peers send frames to.
//
//   bun examples/bun/server.js
//
//   PORT     HTTP + WebSocket port (default 3301; 0 = any free port)
//   PEER_ID  this peer's id, a u32 > 0
//   PEERS    the other peers as id@host:port,... (their PORT)
//   DB       SQLite file (default ./quilt-bun-<PEER_ID>.db)
//
// Frames go out on a WebSocket this peer dials to each of PEERS (Bun's global
// WebSocket client) and come in on the server side. Reads that carry an
// x-quilt-token header wait for that write with replicator.waitFor().
const crypto = require('node:crypto')
const { Replicator } = require('../..') // in your app: require('quilt-sqlite')
const { migrations, todoFromBody, parsePeers, SELECT_ALL, SELECT_ONE, OPENMETRICS } = require('../shared/schema.js')

if (typeof Bun === 'undefined') {
  console.error('This example runs on Bun: bun examples/bun/server.js')
  process.exit(1)
}

const HOST = '127.0.0.1'
const PORT = Number(process.env.PORT ?? 3301)
const PEER_ID = process.env.PEER_ID ? Number(process.env.PEER_ID) : undefined
const PEERS = parsePeers(process.env.PEERS)
const DB = process.env.DB || `./quilt-bun-${PEER_ID ?? 'peer'}.db`

const replicator = new Replicator({ path: DB, peerId: PEER_ID, heartbeatMs: Number(process.env.HEARTBEAT_MS ?? 200) })
replicator.migrate(migrations)
replicator.on('error', (err) => console.error(`[quilt] ${err.code}: ${err.message}`))

const json = (body, status = 200, headers = {}) => Response.json(body, { status, headers })

const server = Bun.serve({
  hostname: HOST,
  port: PORT,
  async fetch (req, srv) {
    const url = new URL(req.url)
    if (url.pathname === '/quilt') {
      return srv.upgrade(req) ? undefined : new Response('expected a websocket', { status: 400 })
    }
    try {
      if (req.method === 'POST' && url.pathname === '/todos') {
        const row = todoFromBody(await req.json(), () => crypto.randomInt(1, 2 ** 47))
        const token = replicator.upsert('todo', row)
        return json({ token, todo: replicator.get(SELECT_ONE, [row.id, row.tenantId]) }, 201, { 'x-quilt-token': token })
      }
      if (req.method === 'GET' && url.pathname === '/todos') return json(replicator.all(SELECT_ALL))
      const m = /^\/todos\/(\d+)$/.exec(url.pathname)
      if (req.method === 'GET' && m) {
        const token = req.headers.get('x-quilt-token')
        if (token && !(await replicator.waitFor(token, 5000))) return json({ error: 'stale replica', code: 'E_STALE' }, 503)
        const row = replicator.get(SELECT_ONE, [Number(m[1]), Number(url.searchParams.get('tenantId') ?? 1)])
        return row ? json(row) : json({ error: 'not found' }, 404)
      }
      if (req.method === 'GET' && url.pathname === '/status') return json(replicator.status())
      if (req.method === 'GET' && url.pathname === '/metrics') {
        return new Response(replicator.metrics(), { headers: { 'content-type': OPENMETRICS } })
      }
      return json({ error: 'not found' }, 404)
    } catch (err) {
      const status = err instanceof SyntaxError || err instanceof TypeError || err instanceof RangeError || err.code === 'E_SCHEMA' ? 400 : 500
      return json({ error: err.message, code: err.code }, status)
    }
  },
  websocket: {
    maxPayloadLength: 8 << 20,
    message (ws, message) {
      if (typeof message === 'string') return
      try {
        replicator.applyPatches(message)
      } catch (err) {
        console.error(`[ws] rejected frame: ${err.code} ${err.message}`)
      }
    }
  }
})

let stopping = false
const sockets = new Map()
function dial (peer, attempt = 0) {
  if (stopping) return
  const ws = new WebSocket(`ws://${peer.host}:${peer.port}/quilt`)
  ws.binaryType = 'nodebuffer'
  sockets.set(peer.id, ws)
  ws.addEventListener('open', () => {
    attempt = 0
    replicator.addPeer(peer.id, (frame) => {
      if (ws.readyState !== WebSocket.OPEN) throw new Error(`peer ${peer.id} not connected`)
      ws.send(frame)
    })
  })
  ws.addEventListener('message', (ev) => {
    if (typeof ev.data === 'string') return
    try { replicator.applyPatches(new Uint8Array(ev.data)) } catch (err) { console.error(`[ws] rejected frame: ${err.code}`) }
  })
  ws.addEventListener('close', () => {
    if (stopping) return
    setTimeout(() => dial(peer, attempt + 1), Math.min(2000, 50 * 2 ** attempt))
  })
}
for (const peer of PEERS) {
  replicator.addPeer(peer.id, () => { throw new Error(`peer ${peer.id} not connected yet`) })
  dial(peer)
}

console.log(JSON.stringify({ ready: true, peerId: replicator.peerId, http: server.port, url: `http://${HOST}:${server.port}`, runtime: `bun ${Bun.version}` }))

async function shutdown () {
  if (stopping) return
  stopping = true
  await replicator.close({ timeoutMs: 1000 })
  for (const ws of sockets.values()) ws.close()
  server.stop(true)
  process.exit(0)
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
