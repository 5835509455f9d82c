'use strict'
// One command: two peers of the Express + ws example, each in its own process.
//   node examples/express-ws/start.js
// Peer 1: http://127.0.0.1:3001 (ws 4001), peer 2: http://127.0.0.1:3002 (ws 4002).
// Set BASE_PORT / BASE_WS_PORT to move them, DATA_DIR for the database files.
const path = require('node:path')
const fs = require('node:fs')
const os = require('node:os')
const { spawnPeer, stop } = require('../shared/launch.js')

const BASE_PORT = Number(process.env.BASE_PORT ?? 3001)
const BASE_WS_PORT = Number(process.env.BASE_WS_PORT ?? 4001)
const DATA_DIR = process.env.DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-express-ws-'))
const ids = [1, 2]

async function main () {
  const children = []
  const bye = async () => { await Promise.all(children.map((c) => stop(c))); process.exit(0) }
  process.on('SIGINT', bye)
  process.on('SIGTERM', bye)
  const settled = await Promise.allSettled(ids.map((id, i) => spawnPeer(process.execPath, [path.join(__dirname, 'server.js')], {
    PEER_ID: String(id),
    PORT: String(BASE_PORT + i),
    WS_PORT: String(BASE_WS_PORT + i),
    PEERS: ids.filter((o) => o !== id).map((o) => `${o}@127.0.0.1:${BASE_WS_PORT + ids.indexOf(o)}`).join(','),
    DB: path.join(DATA_DIR, `peer-${id}.db`)
  }, { prefix: `[peer ${id}] ` })))
  for (const s of settled) if (s.status === 'fulfilled') children.push(s.value.child)
  const failed = settled.find((s) => s.status === 'rejected')
  if (failed) { await Promise.all(children.map((c) => stop(c))); throw failed.reason }
  const started = settled.map((s) => s.value)
  const [a, b] = started.map((s) => s.info)
  console.log(`peer ${a.peerId}: ${a.url}   peer ${b.peerId}: ${b.url}   (data in ${DATA_DIR})
Try:
  TOKEN=$(curl -s -XPOST ${a.url}/todos -H 'content-type: application/json' -d '{"id":1,"title":"hello"}' -D - -o /dev/null | awk 'tolower($1)=="x-quilt-token:"{print $2}' | tr -d '\\r')
  curl -s ${b.url}/todos/1 -H "x-quilt-token: $TOKEN"
  curl -s ${b.url}/metrics
Ctrl-C stops both peers.`)
}
main().catch((e) => { console.error(e); process.exit(1) })
