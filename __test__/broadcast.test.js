'use strict'
// addBroadcast (API.md Next; issue 13): one send that reaches every peer.
// Replicators in one process; a "bus" hands every broadcast frame to every
// other replicator, directed frames to one. Checks: patches and pings are
// handed to the broadcast send once (not once per peer), gap requests and
// answers stay directed, a cluster mixing broadcast and per-peer sends
// converges, and a lost broadcast is repaired through directed traffic.
// heartbeatMs: 0 and explicit tick()/flush(); loops bounded in rounds.
const test = require('node:test')
const assert = require('node:assert/strict')
const { Replicator } = require('..')

const T = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, v TEXT) STRICT;`
}

const opened = []
function open (peerId) {
  const r = new Replicator({ path: ':memory:', peerId, heartbeatMs: 0, clusterKey: 'k' })
  r.migrate([T])
  opened.push(r)
  return r
}
test.after(async () => { for (const r of opened) await r.close({ timeoutMs: 0 }).catch(() => {}) })

/** Queued delivery: `broadcast[]` and `directed[]` counted per sender. */
class Bus {
  constructor () {
    this.queue = []
    this.nodes = new Map()
    this.stats = new Map()
    this.dropBroadcast = false
  }

  stat (id) {
    if (!this.stats.has(id)) this.stats.set(id, { broadcast: 0, directed: 0, bytes: 0, kinds: [] })
    return this.stats.get(id)
  }

  join (r, { broadcast = true } = {}) {
    this.nodes.set(r.peerId, r)
    if (broadcast) {
      r.addBroadcast((frame, kind) => {
        const s = this.stat(r.peerId)
        s.broadcast++
        s.kinds.push(kind)
        s.bytes += frame.length
        if (this.dropBroadcast) return
        for (const id of this.nodes.keys()) if (id !== r.peerId) this.queue.push({ to: id, frame })
      })
    }
  }

  /** Every node addPeers every other, with a directed send. */
  mesh () {
    for (const a of this.nodes.values()) {
      for (const b of this.nodes.values()) {
        if (a === b) continue
        a.addPeer(b.peerId, (frame) => {
          const s = this.stat(a.peerId)
          s.directed++
          s.bytes += frame.length
          this.queue.push({ to: b.peerId, frame })
        })
      }
    }
  }

  deliver (rounds = 50) {
    for (let i = 0; i < rounds && this.queue.length > 0; i++) {
      const q = this.queue
      this.queue = []
      for (const { to, frame } of q) this.nodes.get(to).applyPatches(frame)
    }
  }

  settle (rounds = 20) {
    for (let i = 0; i < rounds; i++) {
      for (const r of this.nodes.values()) r.flush()
      this.deliver()
      for (const r of this.nodes.values()) r.tick()
      this.deliver()
    }
  }
}

const rows = (r) => r.all('SELECT id, v FROM t ORDER BY id')

test('patches and pings go once to the broadcast send, whatever the number of peers', () => {
  const bus = new Bus()
  const peers = [1, 2, 3, 4, 5, 6].map(open)
  for (const r of peers) bus.join(r)
  bus.mesh()
  bus.deliver()
  bus.stats.clear()
  peers[0].upsertMany('t', [{ id: 1, v: 'a' }, { id: 2, v: 'b' }])
  peers[0].flush()
  assert.deepEqual(bus.stat(1), { broadcast: 1, directed: 0, bytes: bus.stat(1).bytes, kinds: ['patches'] }, 'one patch frame, sent once')
  bus.deliver()
  bus.stats.clear()
  peers[0].tick()
  assert.equal(bus.stat(1).broadcast, 1, 'one ping for five peers')
  assert.deepEqual(bus.stat(1).kinds, ['ping'])
  assert.equal(bus.stat(1).directed, 0)
  // A write and a heartbeat in the same turn: the patches, then the ping.
  bus.stats.clear()
  peers[0].upsert('t', { id: 3, v: 'c' })
  peers[0].tick()
  assert.deepEqual(bus.stat(1).kinds, ['patches', 'ping'])
  bus.settle(3)
  for (const r of peers) assert.deepEqual(rows(r), [{ id: 1, v: 'a' }, { id: 2, v: 'b' }, { id: 3, v: 'c' }])
})

test('broadcast sends fewer bytes than per-peer sends for the same writes', () => {
  const run = (broadcast) => {
    const bus = new Bus()
    const peers = [11, 12, 13, 14, 15, 16, 17, 18].map((id) => open(id + (broadcast ? 100 : 0)))
    for (const r of peers) bus.join(r, { broadcast })
    bus.mesh()
    bus.settle(2)
    bus.stats.clear()
    for (let i = 0; i < 40; i++) peers[i % peers.length].upsert('t', { id: i, v: `v${i}` })
    bus.settle(5)
    for (const r of peers) assert.equal(rows(r).length, 40)
    let bytes = 0
    for (const s of bus.stats.values()) bytes += s.bytes
    return bytes
  }
  const mesh = run(false)
  const bc = run(true)
  assert.ok(bc * 3 < mesh, `broadcast ${bc} bytes vs per-peer ${mesh} bytes`)
})

test('a lost broadcast is repaired by directed gap requests and answers', () => {
  const bus = new Bus()
  const peers = [21, 22, 23].map(open)
  for (const r of peers) bus.join(r)
  bus.mesh()
  bus.settle(2)
  bus.dropBroadcast = true
  peers[0].upsert('t', { id: 1, v: 'lost' })
  peers[0].flush()
  bus.dropBroadcast = false
  bus.stats.clear()
  bus.settle(6)
  for (const r of peers) assert.deepEqual(rows(r), [{ id: 1, v: 'lost' }])
  // The repair went as requests from 22/23 and answers from 21, directed.
  assert.ok(bus.stat(22).directed > 0 && bus.stat(23).directed > 0, JSON.stringify([...bus.stats]))
  assert.ok(bus.stat(21).directed > 0, 'answers are directed')
})

test('a cluster mixing broadcast and per-peer sends converges', () => {
  const bus = new Bus()
  const a = open(31)
  const b = open(32)
  const c = open(33)
  bus.join(a)
  bus.join(b, { broadcast: false })
  bus.join(c, { broadcast: false })
  bus.mesh()
  a.upsert('t', { id: 1, v: 'from a' })
  b.upsert('t', { id: 2, v: 'from b' })
  c.upsert('t', { id: 3, v: 'from c' })
  bus.settle(4)
  for (const r of [a, b, c]) assert.equal(rows(r).length, 3)
  assert.equal(a.status().peers.find((p) => p.peerId === 32).ackedSeq, 1)
})

test('addBroadcast checks its argument and can be turned off', () => {
  const r = open(41)
  assert.throws(() => r.addBroadcast(42), { name: 'TypeError', code: 'E_ARG' })
  let n = 0
  r.addBroadcast(() => { n++ })
  r.addPeer(42, () => {})
  r.addPeer(43, () => {})
  r.upsert('t', { id: 1, v: 'x' })
  r.flush()
  assert.equal(n, 1)
  r.addBroadcast(null)
  const sent = []
  r.addPeer(42, (f) => sent.push(42))
  r.addPeer(43, (f) => sent.push(43))
  sent.length = 0
  r.upsert('t', { id: 2, v: 'y' })
  r.flush()
  assert.equal(n, 1)
  assert.deepEqual(sent.sort(), [42, 43])
})
