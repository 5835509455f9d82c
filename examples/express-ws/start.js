'use strict'
// One command: two peers of the Express + ws example, each in its own process.
//   node examples/express-ws/start.js
// Peer 1: http://127.0.0.1:3001 (ws 4001), peer 2: http://127.0.0.1:3002 (ws 4002).
// Set BASE_PORT / BASE_WS_PORT to move them, DATA_DIR for the database files.
const path = require('node:path')
const fs = require('node:fs')
const os = require('node:os')
const { startPeers, peerList } = require('../shared/launch.js')

const BASE_PORT = Number(process.env.BASE_PORT ?? 3001)
const BASE_WS_PORT = Number(process.env.BASE_WS_PORT ?? 4001)
const DATA_DIR = process.env.DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-express-ws-'))
const ids = [1, 2]

async function main () {
  const [a, b] = await startPeers(ids, path.join(__dirname, 'server.js'), (id, i) => ({
    PORT: String(BASE_PORT + i),
    WS_PORT: String(BASE_WS_PORT + i),
    PEERS: peerList(ids, id, (o) => BASE_WS_PORT + ids.indexOf(o)),
    DB: path.join(DATA_DIR, `peer-${id}.db`)
  }))
  console.log(`peer ${a.peerId}: ${a.url}   peer ${b.peerId}: ${b.url}   (data in ${DATA_DIR})
Try:
  TOKEN=$(curl -s -XPOST ${a.url}/todos -H 'content-type: application/json' -d '{"id":1,"title":"hello"}' -D - -o /dev/null | awk 'tolower($1)=="x-quilt-token:"{print $2}' | tr -d '\\r')
  curl -s ${b.url}/todos/1 -H "x-quilt-token: $TOKEN"
  curl -s ${b.url}/metrics
Ctrl-C stops both peers.`)
}
main().catch((e) => { console.error(e); process.exit(1) })
