'use strict'
// One command: three UDP peers with 10% artificial loss, 300 writes spread
// over them, then wait until all hold the same rows.
//   node examples/udp/start.js            (LOSS=0.3 for a rougher network)
// The peers keep running afterwards; Ctrl-C stops them.
const path = require('node:path')
const fs = require('node:fs')
const os = require('node:os')
const { freePort, startPeers, peerList } = require('../shared/launch.js')

const N = 3
const LOSS = process.env.LOSS ?? '0.1'
const DATA_DIR = process.env.DATA_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-udp-'))

async function getJson (url) {
  const r = await fetch(url)
  return r.json()
}

async function main () {
  const ids = Array.from({ length: N }, (_, i) => i + 1)
  const udp = []
  for (const _ of ids) udp.push(await freePort('udp'))
  const peers = await startPeers(ids, path.join(__dirname, 'peer.js'), (id, i) => ({
    UDP_PORT: String(udp[i]),
    PORT: '0',
    LOSS,
    PEERS: peerList(ids, id, (o) => udp[o - 1]),
    DB: path.join(DATA_DIR, `peer-${id}.db`)
  }))
  for (const p of peers) console.log(`peer ${p.peerId}: ${p.url} (udp ${p.udp})`)

  const t0 = Date.now()
  for (let i = 0; i < 300; i++) {
    const p = peers[i % N]
    await fetch(`${p.url}/todos`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: i + 1, title: `todo ${i + 1} from peer ${p.peerId}`, done: i % 2 })
    })
  }
  for (;;) {
    const all = await Promise.all(peers.map((p) => getJson(`${p.url}/todos`)))
    const same = all.every((rows) => JSON.stringify(rows) === JSON.stringify(all[0]))
    if (same && all[0].length === 300) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const stats = await Promise.all(peers.map((p) => getJson(`${p.url}/stats`)))
  const dropped = stats.reduce((n, s) => n + s.dropped, 0)
  const largest = Math.max(...stats.map((s) => s.maxDatagram))
  console.log(`converged: ${N} peers hold the same 300 rows after ${Date.now() - t0} ms; ` +
    `${dropped} datagrams were dropped on purpose, largest datagram ${largest} bytes.
Metrics: curl ${peers[0].url}/metrics   Ctrl-C stops the peers.`)
}
main().catch((e) => { console.error(e); process.exit(1) })
