'use strict'
// One command: two Bun peers (Bun.serve + Bun WebSockets), each in its own process.
//   bun examples/bun/start.js
// Peer 1: http://127.0.0.1:3301, peer 2: http://127.0.0.1:3302.
// Set BASE_PORT to move them, DATA_DIR for the database files.
const path = require('node:path')
const fs = require('node:fs')
const os = require('node:os')
const { spawnPeer, stop } = require('../shared/launch.js')

if (typeof Bun === 'undefined') {
  console.error('Run it with Bun: bun examples/bun/start.js')
  process.exit(1)
}

const BASE_PORT = Number(process.env.BASE_PORT ?? 3301)
const DATA_DIR = process.env.DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-bun-'))
const ids = [1, 2]

async function main () {
  const children = []
  const bye = async () => { await Promise.all(children.map((c) => stop(c))); process.exit(0) }
  process.on('SIGINT', bye)
  process.on('SIGTERM', bye)
  const settled = await Promise.allSettled(ids.map((id, i) => spawnPeer(process.execPath, [path.join(__dirname, 'server.js')], {
    PEER_ID: String(id),
    PORT: String(BASE_PORT + i),
    PEERS: ids.filter((o) => o !== id).map((o) => `${o}@127.0.0.1:${BASE_PORT + ids.indexOf(o)}`).join(','),
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
