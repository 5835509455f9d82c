'use strict'
// Two peers in two child processes (examples/demo-peer.js), each with its own
// SQLite file, talking over real `ws` sockets on 127.0.0.1. Both write the
// same rows at the same time; once they report the same rows they are closed,
// and their files are opened read-only with better-sqlite3 and compared:
// same rows, same set of patches. Bounded: 30 s in all; temp dirs removed.
const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const Database = require('./helpers/sqlite.js') // better-sqlite3 under Node, bun:sqlite under Bun

const PEER = path.join(__dirname, '..', 'examples', 'demo-peer.js')
const IDS = [1, 2]
const BUDGET = { timeout: 30000 }

/** A forked peer with a "next message of type" helper. */
function startPeer (id, db) {
  const child = fork(PEER, [], {
    env: { ...process.env, PEER_ID: String(id), DB: db, HEARTBEAT_MS: '100' },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc']
  })
  let output = ''
  child.stdout.on('data', (d) => { output += d })
  child.stderr.on('data', (d) => { output += d })
  const waiting = new Map()
  child.on('message', (msg) => {
    const w = waiting.get(msg.type)
    if (w) { waiting.delete(msg.type); w.resolve(msg) }
  })
  child.on('exit', (code, signal) => {
    for (const w of waiting.values()) w.reject(new Error(`peer ${id} exited (${code ?? signal}) while waiting\n${output}`))
    waiting.clear()
  })
  const next = (type, timeoutMs = 10000) => new Promise((resolve, reject) => {
    const t = setTimeout(() => { waiting.delete(type); reject(new Error(`peer ${id}: no '${type}' within ${timeoutMs} ms\n${output}`)) }, timeoutMs)
    waiting.set(type, { resolve: (m) => { clearTimeout(t); resolve(m) }, reject: (e) => { clearTimeout(t); reject(e) } })
  })
  const ask = (msg, type, timeoutMs) => { const p = next(type, timeoutMs); child.send(msg); return p }
  return { id, db, child, next, ask, output: () => output }
}

function exited (child, timeoutMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode)
  return new Promise((resolve) => {
    const t = setTimeout(() => { child.kill('SIGKILL'); resolve(null) }, timeoutMs)
    child.once('exit', (code) => { clearTimeout(t); resolve(code) })
  })
}

function readFile (file) {
  const db = new Database(file, { readonly: true, fileMustExist: true })
  try {
    return {
      rows: db.prepare('SELECT id, tenantId, title, done, deletedAt FROM todo ORDER BY tenantId, id').all(),
      patches: db.prepare('SELECT _peerId, _sequenceId FROM todo_patches ORDER BY _peerId, _sequenceId').all().map((p) => `${p._peerId}.${p._sequenceId}`)
    }
  } finally {
    db.close()
  }
}

describe('two child processes over ws on 127.0.0.1', BUDGET, () => {
  let dir
  let peers = []

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-ws-children-'))
  })

  after(async () => {
    for (const p of peers) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL')
    await Promise.all(peers.map((p) => exited(p.child, 2000)))
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('concurrent writes to the same rows converge in both SQLite files', BUDGET, async () => {
    peers = IDS.map((id) => startPeer(id, path.join(dir, `peer-${id}.db`)))
    const ready = await Promise.all(peers.map((p) => p.next('ready')))
    const addrs = ready.map((m) => ({ id: m.peerId, port: m.port }))
    assert.deepEqual(addrs.map((a) => a.id), IDS)
    await Promise.all(peers.map((p) => p.ask({ type: 'connect', peers: addrs }, 'connected')))

    // Both write the same 6 rows (ids 1..3 x tenants 1..2) for 1.5 s.
    const wrote = await Promise.all(peers.map((p) => p.ask({ type: 'write', ms: 1500, ids: 3, tenants: 2 }, 'wrote', 15000)))
    for (const w of wrote) assert.ok(w.writes > 0, `peer ${w.peerId} wrote`)

    // Wait (bounded) until both report the same rows.
    const deadline = Date.now() + 15000
    let dumps
    for (;;) {
      dumps = await Promise.all(peers.map((p) => p.ask({ type: 'dump' }, 'rows')))
      // Same rows is not enough: a lost tail can be hidden by the other
      // peer's later writes. Each must also hold every patch of the other.
      const holdsAll = dumps.every((d) => dumps.every((o) => o.peerId === d.peerId || d.holds[o.peerId] === o.seq))
      if (dumps[0].hash === dumps[1].hash && dumps.every((d) => d.missing === 0) && holdsAll) break
      if (Date.now() > deadline) assert.fail(`no convergence: ${dumps.map((d) => `peer ${d.peerId} ${d.rows.length} rows #${d.hash.slice(0, 8)} missing ${d.missing}`).join(', ')}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    for (const d of dumps) assert.equal(d.rejected, 0, `peer ${d.peerId} rejected no frame`)
    assert.equal(dumps[0].rows.length, 6)

    // Close both (flush, wait for acks, close) and let the processes exit.
    await Promise.all(peers.map((p) => p.ask({ type: 'stop' }, 'closed')))
    const codes = await Promise.all(peers.map((p) => exited(p.child)))
    assert.deepEqual(codes, [0, 0])

    // The files themselves, read by another SQLite library.
    const [a, b] = peers.map((p) => readFile(p.db))
    assert.equal(a.rows.length, 6)
    assert.deepEqual(a.rows, b.rows, 'same rows in both files')
    assert.deepEqual(a.rows, dumps[0].rows, 'the files hold what the peers reported')
    assert.deepEqual(a.patches, b.patches, 'same patches in both files')
    const total = wrote.reduce((n, w) => n + w.writes, 0)
    assert.ok(a.patches.length >= total, `every write is a patch (${a.patches.length} >= ${total})`)
    for (const id of IDS) assert.ok(a.patches.some((p) => p.startsWith(`${id}.`)), `patches from peer ${id}`)
  })
})
