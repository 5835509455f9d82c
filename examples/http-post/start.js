'use strict'
// One command: two peers that POST frames to each other's /quilt/frames.
//   node examples/http-post/start.js
// Peer 1: http://127.0.0.1:3201, peer 2: http://127.0.0.1:3202 (BASE_PORT moves them).
const path = require('node:path')
const fs = require('node:fs')
const os = require('node:os')
const crypto = require('node:crypto')
const { spawnPeer, stop } = require('../shared/launch.js')

const BASE_PORT = Number(process.env.BASE_PORT ?? 3201)
const DATA_DIR = process.env.DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-http-post-'))
const CLUSTER_KEY = process.env.CLUSTER_KEY || crypto.randomBytes(16).toString('hex')
const ids = [1, 2]

async function main () {
  const children = []
  const bye = async () => { await Promise.all(children.map((c) => stop(c))); process.exit(0) }
  process.on('SIGINT', bye)
  process.on('SIGTERM', bye)
  const settled = await Promise.allSettled(ids.map((id, i) => spawnPeer(process.execPath, [path.join(__dirname, 'peer.js')], {
    PEER_ID: String(id),
    PORT: String(BASE_PORT + i),
    CLUSTER_KEY,
    PEERS: ids.filter((o) => o !== id).map((o) => `${o}@127.0.0.1:${BASE_PORT + ids.indexOf(o)}`).join(','),
    DB: path.join(DATA_DIR, `peer-${id}.db`)
  }, { prefix: `[peer ${id}] ` })))
  for (const s of settled) if (s.status === 'fulfilled') children.push(s.value.child)
  const failed = settled.find((s) => s.status === 'rejected')
  if (failed) { await Promise.all(children.map((c) => stop(c))); throw failed.reason }
  const [a, b] = settled.map((s) => s.value.info)
  console.log(`peer ${a.peerId}: ${a.url}   peer ${b.peerId}: ${b.url}   (data in ${DATA_DIR})
Try:
  curl -s -XPOST ${a.url}/todos -H 'content-type: application/json' -d '{"id":1,"title":"hello"}'
  curl -s ${b.url}/todos
Ctrl-C stops both peers.`)
}
main().catch((e) => { console.error(e); process.exit(1) })
