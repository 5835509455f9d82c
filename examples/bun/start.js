'use strict'
// One command: two Bun peers (Bun.serve + Bun WebSockets), each in its own process.
//   bun examples/bun/start.js
// Peer 1: http://127.0.0.1:3301, peer 2: http://127.0.0.1:3302.
// Set BASE_PORT to move them, DATA_DIR for the database files.
const path = require('node:path')
const fs = require('node:fs')
const os = require('node:os')
const { startPeers, peerList } = require('../shared/launch.js')

if (typeof Bun === 'undefined') {
  console.error('Run it with Bun: bun examples/bun/start.js')
  process.exit(1)
}

const BASE_PORT = Number(process.env.BASE_PORT ?? 3301)
const DATA_DIR = process.env.DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-bun-'))
const ids = [1, 2]

async function main () {
  const [a, b] = await startPeers(ids, path.join(__dirname, 'server.js'), (id, i) => ({
    PORT: String(BASE_PORT + i),
    PEERS: peerList(ids, id, (o) => BASE_PORT + ids.indexOf(o)),
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
