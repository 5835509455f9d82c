'use strict'
// One command: two peers that POST frames to each other's /quilt/frames.
//   node examples/http-post/start.js
// Peer 1: http://127.0.0.1:3201, peer 2: http://127.0.0.1:3202 (BASE_PORT moves them).
const path = require('node:path')
const fs = require('node:fs')
const os = require('node:os')
const crypto = require('node:crypto')
const { startPeers, peerList } = require('../shared/launch.js')

const BASE_PORT = Number(process.env.BASE_PORT ?? 3201)
const DATA_DIR = process.env.DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-http-post-'))
const CLUSTER_KEY = process.env.CLUSTER_KEY || crypto.randomBytes(16).toString('hex')
const ids = [1, 2]

async function main () {
  const [a, b] = await startPeers(ids, path.join(__dirname, 'peer.js'), (id, i) => ({
    PORT: String(BASE_PORT + i),
    CLUSTER_KEY,
    PEERS: peerList(ids, id, (o) => BASE_PORT + ids.indexOf(o)),
    DB: path.join(DATA_DIR, `peer-${id}.db`)
  }))
  console.log(`peer ${a.peerId}: ${a.url}   peer ${b.peerId}: ${b.url}   (data in ${DATA_DIR})
Try:
  curl -s -XPOST ${a.url}/todos -H 'content-type: application/json' -d '{"id":1,"title":"hello"}'
  curl -s ${b.url}/todos
Ctrl-C stops both peers.`)
}
main().catch((e) => { console.error(e); process.exit(1) })
