'use strict'
// The runnable examples under examples/: each one is started on 127.0.0.1 as
// child processes, driven over HTTP, and checked for convergence, read-your-
// writes and a parseable /metrics. Everything is bounded; children are killed
// in after().
const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')
const parsePrometheus = require('parse-prometheus-text-format')
const { Replicator } = require('..')
const { freePort, spawnPeer, stop } = require('../examples/shared/launch.js')
const { migrations } = require('../examples/shared/schema.js')

const EXAMPLES = path.join(__dirname, '..', 'examples')
const OPENMETRICS = 'application/openmetrics-text; version=1.0.0; charset=utf-8'
const BUDGET = { timeout: 20000 }

function tmpDir (tag) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `quilt-ex-${tag}-`))
}

async function postJson (url, body, headers = {}) {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  return { status: r.status, headers: r.headers, body: await r.json() }
}

async function getJson (url, headers = {}) {
  const r = await fetch(url, { headers })
  return { status: r.status, headers: r.headers, body: await r.json() }
}

/** Poll until every peer's GET /todos is the same and has `count` rows. */
async function converge (urls, count, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    last = await Promise.all(urls.map(async (u) => (await getJson(`${u}/todos`)).body))
    const same = last.every((rows) => JSON.stringify(rows) === JSON.stringify(last[0]))
    if (same && last[0].length === count) return last[0]
    if (Date.now() > deadline) {
      assert.fail(`no convergence within ${timeoutMs} ms: row counts ${last.map((r) => r.length).join(' / ')} (want ${count})`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/**
 * Parse /metrics with a Prometheus text parser and check the OpenMetrics
 * framing on top (# EOF last, counter families expose `_total` samples).
 * Returns a map family name -> parsed family.
 */
function parseMetrics (text) {
  const lines = text.trimEnd().split('\n')
  assert.equal(lines[lines.length - 1], '# EOF', 'OpenMetrics text ends with # EOF')
  const families = parsePrometheus(text)
  const byName = new Map(families.map((f) => [f.name, f]))
  // OpenMetrics: "# TYPE quilt_frames counter" has samples quilt_frames_total.
  const counters = [...text.matchAll(/^# TYPE (\S+) counter$/gm)].map((m) => m[1])
  assert.ok(counters.length > 0, 'some counters')
  for (const c of counters) assert.ok(byName.has(`${c}_total`), `counter ${c} has ${c}_total samples`)
  return byName
}

function sample (families, name, labels = {}) {
  const f = families.get(name)
  assert.ok(f, `metric family ${name} exists`)
  const m = f.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels && x.labels[k] === v))
  assert.ok(m, `${name}${JSON.stringify(labels)} has a sample`)
  return Number(m.value)
}

function sum (families, name) {
  const f = families.get(name)
  assert.ok(f, `metric family ${name} exists`)
  return f.metrics.reduce((n, m) => n + Number(m.value), 0)
}

async function checkMetrics (url) {
  const r = await fetch(`${url}/metrics`)
  assert.equal(r.status, 200)
  assert.equal(r.headers.get('content-type'), OPENMETRICS)
  const fams = parseMetrics(await r.text())
  for (const name of ['quilt_peers', 'quilt_frames_total', 'quilt_bytes_total', 'quilt_rejected_frames_total', 'quilt_pending_patches', 'quilt_lag_seconds']) {
    assert.ok(fams.has(name), `family ${name} in /metrics`)
  }
  assert.equal(fams.get('quilt_peers').type, 'GAUGE')
  assert.ok(sample(fams, 'quilt_frames_total', { direction: 'in' }) > 0, 'frames came in')
  assert.ok(sample(fams, 'quilt_frames_total', { direction: 'out' }) > 0, 'frames went out')
  return fams
}

/** Start peers in parallel; on any failure stop the ones that did start. */
async function startAll (specs) {
  const settled = await Promise.allSettled(specs.map(({ cmd, args, env, tag }) =>
    spawnPeer(cmd, args, env, { prefix: `[${tag}] `, echo: !!process.env.QUILT_EXAMPLES_VERBOSE })))
  const ok = settled.filter((s) => s.status === 'fulfilled').map((s) => s.value)
  const failed = settled.find((s) => s.status === 'rejected')
  if (failed) {
    await Promise.all(ok.map((p) => stop(p.child)))
    throw failed.reason
  }
  return ok
}

// ---------------------------------------------------------------------------

describe('examples/express-ws', BUDGET, () => {
  let peers = []
  let a, b
  const dir = tmpDir('express')

  before(async () => {
    const ws = [await freePort(), await freePort()]
    peers = await startAll([1, 2].map((id, i) => ({
      tag: `express ${id}`,
      cmd: process.execPath,
      args: [path.join(EXAMPLES, 'express-ws', 'server.js')],
      env: {
        PEER_ID: String(id),
        PORT: '0',
        WS_PORT: String(ws[i]),
        PEERS: `${3 - id}@127.0.0.1:${ws[1 - i]}`,
        DB: path.join(dir, `peer-${id}.db`),
        HEARTBEAT_MS: '100',
        RYW_TIMEOUT_MS: '1000'
      }
    })))
    ;[a, b] = peers.map((p) => p.info.url)
  })

  after(async () => {
    await Promise.all(peers.map((p) => stop(p.child)))
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('a write on A is readable on B with its token (read-your-writes)', async () => {
    const w = await postJson(`${a}/todos`, { id: 42, title: 'write on A', done: false })
    assert.equal(w.status, 201)
    assert.match(w.body.token, /^1\.\d+$/)
    assert.equal(w.headers.get('x-quilt-token'), w.body.token)
    assert.deepEqual(w.body.todo, { id: 42, tenantId: 1, title: 'write on A', done: 0, deletedAt: null })
    // Read on B right away: the middleware holds the request until the write is there.
    const r = await getJson(`${b}/todos/42`, { 'x-quilt-token': w.body.token })
    assert.equal(r.status, 200)
    assert.equal(r.body.title, 'write on A')
  })

  it('a token that never arrives gives 503 E_STALE; no token passes straight through', async () => {
    const stale = await getJson(`${b}/todos/42`, { 'x-quilt-token': '1.999999' })
    assert.equal(stale.status, 503)
    assert.equal(stale.body.code, 'E_STALE')
    const plain = await getJson(`${b}/todos/424242`)
    assert.equal(plain.status, 404)
  })

  it('concurrent writes on both peers converge (last writer wins per column)', async () => {
    const writes = []
    for (let i = 1; i <= 30; i++) {
      writes.push(postJson(`${a}/todos`, { id: i, title: `A${i}`, done: 0 }))
      writes.push(postJson(`${b}/todos`, { id: 100 + i, title: `B${i}` }))
    }
    for (const w of await Promise.all(writes)) assert.equal(w.status, 201)
    // Same row, different columns on each peer: both changes survive.
    await postJson(`${a}/todos`, { id: 7, title: 'title from A' })
    const last = await postJson(`${b}/todos`, { id: 7, done: 1 })
    const rows = await converge([a, b], 61)
    assert.deepEqual(rows.find((r) => r.id === 7), { id: 7, tenantId: 1, title: 'title from A', done: 1, deletedAt: null })
    const seen = await getJson(`${a}/todos/7`, { 'x-quilt-token': last.body.token })
    assert.equal(seen.body.done, 1)
  })

  it('bad input is a 400 with a code, not a crash', async () => {
    const r = await postJson(`${a}/todos`, { id: 5, title: { nested: true } })
    assert.equal(r.status, 400)
    assert.equal(r.body.code, 'E_ARG')
    const notJson = await fetch(`${a}/todos`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{oops' })
    assert.equal(notJson.status, 400)
    assert.equal((await getJson(`${a}/status`)).status, 200)
  })

  it('/metrics is OpenMetrics that a real parser reads', async () => {
    const fams = await checkMetrics(b)
    assert.ok(sample(fams, 'quilt_peers', { state: 'connected' }) >= 1)
    const status = (await getJson(`${b}/status`)).body
    assert.equal(status.peerId, 2)
    assert.deepEqual(status.peers.map((p) => p.peerId), [1])
  })
})

// ---------------------------------------------------------------------------

describe('examples/udp', BUDGET, () => {
  let peers = []
  const dir = tmpDir('udp')
  const N = 3

  before(async () => {
    const udp = []
    for (let i = 0; i < N; i++) udp.push(await freePort('udp'))
    const ids = [1, 2, 3]
    peers = await startAll(ids.map((id, i) => ({
      tag: `udp ${id}`,
      cmd: process.execPath,
      args: [path.join(EXAMPLES, 'udp', 'peer.js')],
      env: {
        PEER_ID: String(id),
        PORT: '0',
        UDP_PORT: String(udp[i]),
        LOSS: '0.1',
        PEERS: ids.filter((o) => o !== id).map((o) => `${o}@127.0.0.1:${udp[o - 1]}`).join(','),
        DB: path.join(dir, `peer-${id}.db`)
      }
    })))
  })

  after(async () => {
    await Promise.all(peers.map((p) => stop(p.child)))
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('converges despite 10% datagram loss, with frames under 1200 bytes', async () => {
    const urls = peers.map((p) => p.info.url)
    // Single writes spread over the peers...
    for (let i = 1; i <= 150; i++) {
      const w = await postJson(`${urls[i % N]}/todos`, { id: i, title: `todo ${i}`, done: i % 2 })
      assert.equal(w.status, 201)
    }
    // ...and one big transaction whose frames must be split to fit a datagram.
    const big = Array.from({ length: 300 }, (_, k) => ({ id: 1000 + k, title: `batch row ${k} `.padEnd(120, 'x') }))
    assert.equal((await postJson(`${urls[0]}/todos`, big)).status, 201)

    const rows = await converge(urls, 450, 15000)
    assert.equal(rows.find((r) => r.id === 1299).title.length, 120)

    const stats = await Promise.all(urls.map(async (u) => (await getJson(`${u}/stats`)).body))
    const dropped = stats.reduce((n, s) => n + s.dropped, 0)
    assert.ok(dropped > 0, 'some datagrams were dropped on purpose')
    for (const s of stats) {
      assert.ok(s.maxDatagram <= 1200, `largest datagram ${s.maxDatagram} <= maxFrameBytes 1200`)
      assert.equal(s.rejected, 0)
    }
    assert.ok(Math.max(...stats.map((s) => s.maxDatagram)) > 600, 'the batch was sent in large (split) frames')

    // The loss was repaired by the gap protocol: retransmissions were requested.
    let requested = 0
    for (const u of urls) {
      const fams = await checkMetrics(u)
      requested += sample(fams, 'quilt_retransmissions_total', { kind: 'requested' })
    }
    assert.ok(requested > 0, `gap repair requested retransmissions (dropped ${dropped})`)
  })
})

// ---------------------------------------------------------------------------

describe('examples/http-post', BUDGET, () => {
  let peers = []
  let a, b
  const dir = tmpDir('http')
  const CLUSTER_KEY = 'example-cluster-key'

  before(async () => {
    const ports = [await freePort(), await freePort()]
    peers = await startAll([1, 2].map((id, i) => ({
      tag: `http ${id}`,
      cmd: process.execPath,
      args: [path.join(EXAMPLES, 'http-post', 'peer.js')],
      env: {
        PEER_ID: String(id),
        PORT: String(ports[i]),
        PEERS: `${3 - id}@127.0.0.1:${ports[1 - i]}`,
        CLUSTER_KEY,
        HEARTBEAT_MS: '100',
        DB: path.join(dir, `peer-${id}.db`)
      }
    })))
    ;[a, b] = peers.map((p) => p.info.url)
  })

  after(async () => {
    await Promise.all(peers.map((p) => stop(p.child)))
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('writes on A reach B through POST /quilt/frames, and back', async () => {
    const w = await postJson(`${a}/todos`, { id: 1, title: 'via http' })
    assert.equal(w.status, 201)
    assert.equal(w.headers.get('x-quilt-token'), w.body.token)
    const r = await getJson(`${b}/todos/1`, { 'x-quilt-token': w.body.token })
    assert.equal(r.status, 200)
    assert.equal(r.body.title, 'via http')

    await Promise.all(Array.from({ length: 40 }, (_, i) => postJson(`${i % 2 ? a : b}/todos`, { id: 10 + i, title: `t${i}` })))
    await converge([a, b], 41)
    await checkMetrics(a)
  })

  it('refuses garbage (E_FRAME) and frames signed with another key (E_AUTH)', async () => {
    const garbage = await fetch(`${b}/quilt/frames`, { method: 'POST', body: Buffer.from('not a frame at all') })
    assert.equal(garbage.status, 400)
    assert.equal((await garbage.json()).code, 'E_FRAME')

    // A genuine frame from a replicator with the wrong cluster key.
    const rogue = new Replicator({ path: ':memory:', peerId: 99, heartbeatMs: 0, clusterKey: 'wrong key' })
    try {
      rogue.migrate(migrations)
      const frames = []
      rogue.addPeer(2, (f) => frames.push(Buffer.from(f)))
      rogue.upsert('todo', { id: 666, tenantId: 1, title: 'forged' })
      rogue.flush()
      assert.ok(frames.length > 0)
      for (const f of frames) {
        const r = await fetch(`${b}/quilt/frames`, { method: 'POST', body: f })
        assert.equal(r.status, 400)
        assert.equal((await r.json()).code, 'E_AUTH')
      }
    } finally {
      await rogue.close({ timeoutMs: 0 })
    }
    assert.equal((await getJson(`${b}/todos/666`)).status, 404)
    const fams = parseMetrics(await (await fetch(`${b}/metrics`)).text())
    assert.ok(sample(fams, 'quilt_rejected_frames_total', { reason: 'E_FRAME' }) >= 1)
    assert.ok(sample(fams, 'quilt_rejected_frames_total', { reason: 'E_AUTH' }) >= 1)
  })
})

// ---------------------------------------------------------------------------

/** A runnable bun binary: $BUN_BIN, bun on PATH, or the npm package via npx. */
function findBun () {
  const tries = []
  if (process.env.BUN_BIN) tries.push([process.env.BUN_BIN, []])
  tries.push(['bun', []])
  tries.push(['npx', ['--yes', 'bun']])
  for (const [cmd, pre] of tries) {
    try {
      const out = execFileSync(cmd, [...pre, '-e', 'console.log(process.execPath + "\\n" + Bun.version)'], {
        encoding: 'utf8', timeout: 60000, stdio: ['ignore', 'pipe', 'ignore']
      }).trim().split('\n')
      if (out.length >= 2 && fs.existsSync(out[out.length - 2])) return { bin: out[out.length - 2], version: out[out.length - 1] }
    } catch {}
  }
  return null
}

// No suite-wide budget here: finding Bun may fetch it from npm once (bounded
// at 80 s in before()); the test itself has the usual 20 s.
describe('examples/bun', () => {
  let peers = []
  let bun = null
  let a, b
  const dir = tmpDir('bun')

  before(async () => {
    bun = findBun()
    if (!bun) return
    const ports = [await freePort(), await freePort()]
    peers = await startAll([1, 2].map((id, i) => ({
      tag: `bun ${id}`,
      cmd: bun.bin,
      args: [path.join(EXAMPLES, 'bun', 'server.js')],
      env: {
        PEER_ID: String(id),
        PORT: String(ports[i]),
        PEERS: `${3 - id}@127.0.0.1:${ports[1 - i]}`,
        HEARTBEAT_MS: '100',
        DB: path.join(dir, `peer-${id}.db`)
      }
    })))
    ;[a, b] = peers.map((p) => p.info.url)
  }, { timeout: 80000 })

  after(async () => {
    await Promise.all(peers.map((p) => stop(p.child)))
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('runs under Bun: write on A, waitFor on B, convergence, metrics', BUDGET, async (t) => {
    if (!bun) return t.skip('Bun is not available here (no $BUN_BIN, no bun on PATH, `npx --yes bun` failed)')
    assert.match(peers[0].info.runtime, /^bun /)
    const w = await postJson(`${a}/todos`, { id: 1, title: 'from bun' })
    assert.equal(w.status, 201)
    assert.equal(w.headers.get('x-quilt-token'), w.body.token)
    const r = await getJson(`${b}/todos/1`, { 'x-quilt-token': w.body.token })
    assert.equal(r.status, 200)
    assert.equal(r.body.title, 'from bun')
    await Promise.all(Array.from({ length: 30 }, (_, i) => postJson(`${i % 2 ? a : b}/todos`, { id: 10 + i, title: `t${i}` })))
    await converge([a, b], 31)
    await checkMetrics(b)
  })
})
