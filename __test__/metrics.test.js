'use strict'
// metrics() (API.md, Cluster): OpenMetrics text with peers, lag per peer,
// frames and bytes in/out, retransmissions, rejected frames by reason,
// pending patches and last snapshot age. Parsed with a real parser after
// real traffic between two replicators; values must match what was sent and
// move in the right direction.
const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { pathToFileURL } = require('node:url')
const parsePrometheus = require('parse-prometheus-text-format')
const { Replicator } = require('..')

const KEY = 'metrics-test-key'
const V1 = {
  up: `CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, done INTEGER, deletedAt INTEGER,
         PRIMARY KEY (id, tenantId)) STRICT;
       CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, tenantId INTEGER, title TEXT, done INTEGER, deletedAt INTEGER) STRICT;`,
  down: 'DROP TABLE todo; DROP TABLE todo_patches;'
}
const V2 = {
  up: 'ALTER TABLE todo ADD COLUMN prio INTEGER; ALTER TABLE todo_patches ADD COLUMN prio INTEGER;',
  down: 'ALTER TABLE todo DROP COLUMN prio; ALTER TABLE todo_patches DROP COLUMN prio;'
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Parse `metrics()` with parse-prometheus-text-format. The text is
 * OpenMetrics: it must end with `# EOF`. Counter families are declared
 * OpenMetrics-style (`# TYPE quilt_frames counter`, samples
 * `quilt_frames_total`); this Prometheus-format parser then yields an empty
 * COUNTER family plus an UNTYPED `_total` family, which are merged back here.
 * Returns Map name -> { type, help, samples: [{ labels, value }] }.
 */
function scrape (r) {
  const text = r.metrics()
  assert.equal(typeof text, 'string')
  const lines = text.split('\n')
  if (lines[lines.length - 1] === '') lines.pop()
  assert.equal(lines[lines.length - 1], '# EOF', 'OpenMetrics text ends with "# EOF"')
  assert.equal(lines.filter((l) => l === '# EOF').length, 1, '"# EOF" appears once')
  let parsed
  try {
    parsed = parsePrometheus(text)
  } catch {
    parsed = parsePrometheus(lines.slice(0, -1).join('\n') + '\n') // parser without "# EOF" support
  }
  const raw = new Map()
  for (const f of parsed) {
    assert.ok(!raw.has(f.name), `family ${f.name} declared twice`)
    raw.set(f.name, f)
  }
  const out = new Map()
  for (const f of parsed) {
    let type = f.type
    let help = f.help
    if (f.name.endsWith('_total') && type === 'UNTYPED') {
      const decl = raw.get(f.name.slice(0, -'_total'.length))
      if (decl && decl.type === 'COUNTER' && decl.metrics.length === 0) {
        type = 'COUNTER'
        help = decl.help
      }
    }
    if (type === 'COUNTER' && f.metrics.length === 0 && raw.has(`${f.name}_total`)) continue // merged above
    out.set(f.name, {
      type,
      help,
      samples: f.metrics.map((m) => ({ labels: m.labels || {}, value: num(m.value) }))
    })
  }
  return out
}

function num (s) {
  if (s === '+Inf' || s === 'Inf') return Infinity
  if (s === '-Inf') return -Infinity
  if (s === 'NaN') return NaN
  const v = Number(s)
  assert.ok(!Number.isNaN(v), `sample value ${JSON.stringify(s)} is a number`)
  return v
}

/** The one sample of `name` whose labels include `labels`. */
function val (m, name, labels = {}) {
  const f = m.get(name)
  assert.ok(f, `family ${name} present (have: ${[...m.keys()].join(', ')})`)
  const hits = f.samples.filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === String(v)))
  assert.equal(hits.length, 1, `exactly one ${name}${JSON.stringify(labels)} sample (got ${JSON.stringify(f.samples)})`)
  return hits[0].value
}
const has = (m, name, labels) => {
  const f = m.get(name)
  return !!f && f.samples.some((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === String(v)))
}

/** Two replicators joined by queues we control (drop, hold, deliver). */
function setup (dir, { aMigrations = [V1], bMigrations = [V1] } = {}) {
  const a = new Replicator({ path: path.join(dir, 'a.db'), peerId: 1, heartbeatMs: 0, clusterKey: KEY })
  const b = new Replicator({
    path: path.join(dir, 'b.db'),
    peerId: 2,
    heartbeatMs: 0,
    clusterKey: KEY,
    snapshot: { url: pathToFileURL(path.join(dir, 'snaps')).href }
  })
  a.migrate(aMigrations)
  b.migrate(bMigrations)
  const net = {
    a,
    b,
    queue: [], // [to, frame]
    sent: { 1: { frames: 0, bytes: 0 }, 2: { frames: 0, bytes: 0 } },
    accepted: { 1: { frames: 0, bytes: 0 }, 2: { frames: 0, bytes: 0 } },
    connect () {
      a.addPeer(2, (f) => { this.note(a, f); this.queue.push([b, f]) })
      b.addPeer(1, (f) => { this.note(b, f); this.queue.push([a, f]) })
    },
    note (from, f) {
      this.sent[from.peerId].frames++
      this.sent[from.peerId].bytes += f.length
    },
    deliver (to, f) {
      const r = to.applyPatches(f)
      this.accepted[to.peerId].frames++
      this.accepted[to.peerId].bytes += f.length
      return r
    },
    /** Deliver everything (and what it provokes), ticking both sides. */
    pump (rounds = 20) {
      for (let i = 0; i < rounds; i++) {
        a.flush()
        b.flush()
        if (this.queue.length === 0) {
          a.tick()
          b.tick()
          if (this.queue.length === 0) return
        }
        while (this.queue.length) {
          const [to, f] = this.queue.shift()
          this.deliver(to, f)
        }
      }
    },
    /** Hand A's queued patches to send and return (and remove) what went to B. */
    takeFromA () {
      a.flush()
      const taken = this.queue.filter(([to]) => to === b).map(([, f]) => f)
      this.queue = this.queue.filter(([to]) => to !== b)
      return taken
    }
  }
  return net
}

const FAMILIES = {
  quilt_peers: 'GAUGE',
  quilt_lag_seconds: 'GAUGE',
  quilt_frames_total: 'COUNTER',
  quilt_bytes_total: 'COUNTER',
  quilt_retransmissions_total: 'COUNTER',
  quilt_rejected_frames_total: 'COUNTER',
  quilt_pending_patches: 'GAUGE',
  quilt_last_snapshot_age_seconds: 'GAUGE'
}

let dir
test.beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-metrics-')) })
test.afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }) })

test('families, types and a quiet start', async () => {
  const net = setup(dir)
  const m = scrape(net.a)
  for (const [name, type] of Object.entries(FAMILIES)) {
    assert.ok(m.has(name), `family ${name} present`)
    assert.equal(m.get(name).type, type, `${name} is a ${type}`)
    assert.ok(m.get(name).help.length > 0, `${name} has HELP`)
  }
  assert.equal(val(m, 'quilt_peers', { state: 'connected' }), 0)
  for (const d of ['in', 'out']) {
    assert.equal(val(m, 'quilt_frames_total', { direction: d }), 0)
    assert.equal(val(m, 'quilt_bytes_total', { direction: d }), 0)
  }
  assert.equal(val(m, 'quilt_retransmissions_total', { kind: 'requested' }), 0)
  assert.equal(val(m, 'quilt_retransmissions_total', { kind: 'served' }), 0)
  for (const reason of ['E_FRAME', 'E_AUTH', 'E_VERSION']) {
    assert.equal(val(m, 'quilt_rejected_frames_total', { reason }), 0, `rejected ${reason} at start`)
  }
  assert.equal(val(m, 'quilt_pending_patches'), 0)
  // no snapshot yet: no age (NaN or no sample), never a finite number
  const age = m.get('quilt_last_snapshot_age_seconds').samples
  assert.ok(age.length === 0 || Number.isNaN(age[0].value), `snapshot age before any snapshot: ${JSON.stringify(age)}`)
  for (const r of [net.a, net.b]) await r.close({ timeoutMs: 0 })
})

test('peers, frames and bytes in/out match the real traffic; lag per origin is 0 when caught up', async () => {
  const net = setup(dir)
  net.connect()
  let m = scrape(net.a)
  assert.equal(val(m, 'quilt_peers', { state: 'connected' }), 1, 'A: one peer connected after addPeer')

  for (let i = 1; i <= 20; i++) net.a.upsert('todo', { id: i, tenantId: 1, title: `a${i}`, done: 0 })
  for (let i = 1; i <= 5; i++) net.b.upsert('todo', { id: 100 + i, tenantId: 1, title: `b${i}` })
  net.pump()
  assert.equal(net.b.all('SELECT count(*) AS n FROM todo')[0].n, 25)
  assert.deepEqual(net.a.all('SELECT * FROM todo ORDER BY id'), net.b.all('SELECT * FROM todo ORDER BY id'))

  const ma = scrape(net.a)
  const mb = scrape(net.b)
  for (const [r, mm] of [[net.a, ma], [net.b, mb]]) {
    const id = r.peerId
    assert.ok(net.sent[id].frames > 0 && net.accepted[id].frames > 0)
    assert.equal(val(mm, 'quilt_frames_total', { direction: 'out' }), net.sent[id].frames, `peer ${id}: frames out = frames handed to send`)
    assert.equal(val(mm, 'quilt_bytes_total', { direction: 'out' }), net.sent[id].bytes, `peer ${id}: bytes out = bytes handed to send`)
    assert.equal(val(mm, 'quilt_frames_total', { direction: 'in' }), net.accepted[id].frames, `peer ${id}: frames in = frames applied`)
    assert.equal(val(mm, 'quilt_bytes_total', { direction: 'in' }), net.accepted[id].bytes, `peer ${id}: bytes in = bytes applied`)
    assert.equal(val(mm, 'quilt_peers', { state: 'connected' }), 1)
    if (has(mm, 'quilt_peers', { state: 'live' })) assert.equal(val(mm, 'quilt_peers', { state: 'live' }), 1, `peer ${id}: the other peer is live`)
  }
  assert.equal(val(mb, 'quilt_lag_seconds', { origin: 1 }), 0, 'B: caught up with A')
  assert.equal(val(ma, 'quilt_lag_seconds', { origin: 2 }), 0, 'A: caught up with B')
  assert.ok(!has(ma, 'quilt_lag_seconds', { origin: 1 }), 'no lag sample for the local peer itself')

  // more traffic: every counter moves up, none goes down
  for (let i = 21; i <= 30; i++) net.a.upsert('todo', { id: i, tenantId: 1, title: 'x'.repeat(200) })
  net.pump()
  const ma2 = scrape(net.a)
  const mb2 = scrape(net.b)
  assert.ok(val(ma2, 'quilt_frames_total', { direction: 'out' }) > val(ma, 'quilt_frames_total', { direction: 'out' }))
  assert.ok(val(ma2, 'quilt_bytes_total', { direction: 'out' }) >= val(ma, 'quilt_bytes_total', { direction: 'out' }) + 10 * 200, 'bytes out grew by at least the payload')
  assert.ok(val(mb2, 'quilt_frames_total', { direction: 'in' }) > val(mb, 'quilt_frames_total', { direction: 'in' }))
  assert.ok(val(mb2, 'quilt_bytes_total', { direction: 'in' }) >= val(mb, 'quilt_bytes_total', { direction: 'in' }) + 10 * 200, 'bytes in grew by at least the payload')
  assert.equal(val(mb2, 'quilt_bytes_total', { direction: 'in' }), net.accepted[2].bytes)

  // removing the peer drops it from quilt_peers
  net.a.removePeer(2)
  m = scrape(net.a)
  assert.equal(val(m, 'quilt_peers', { state: 'connected' }), 0, 'A: no peer connected after removePeer')
  for (const r of [net.a, net.b]) await r.close({ timeoutMs: 0 })
})

test('a forced gap: lag rises then falls back to 0; retransmissions requested (B) and served (A)', async () => {
  const net = setup(dir)
  net.connect()
  net.a.upsert('todo', { id: 1, tenantId: 1, title: 'first' })
  net.pump()
  const a0 = scrape(net.a)
  const b0 = scrape(net.b)
  assert.equal(val(b0, 'quilt_lag_seconds', { origin: 1 }), 0)

  // three patches lost on the way to B
  for (let i = 2; i <= 4; i++) net.a.upsert('todo', { id: i, tenantId: 1, title: `lost${i}` })
  const lost = net.takeFromA()
  assert.ok(lost.length >= 1)
  // the next one arrives: B sees seqs it lacks and asks for them at once
  net.a.upsert('todo', { id: 5, tenantId: 1, title: 'after' })
  const next = net.takeFromA()
  let requested = 0
  for (const f of next) requested += net.deliver(net.b, f).requested
  assert.ok(requested > 0, 'applyPatches reports the gap request')
  const b1 = scrape(net.b)
  assert.ok(val(b1, 'quilt_retransmissions_total', { kind: 'requested' }) > val(b0, 'quilt_retransmissions_total', { kind: 'requested' }),
    'B: retransmissions requested went up')
  assert.equal(net.b.all('SELECT count(*) AS n FROM todo')[0].n, 2, 'B holds 1 and 5 only')

  // hold B's request back for a while: B's lag for origin 1 becomes > 0 and grows
  const held = net.queue.splice(0)
  assert.ok(held.some(([to]) => to === net.a), 'B handed a request for A to send')
  await sleep(150)
  net.b.tick()
  const lag1 = val(scrape(net.b), 'quilt_lag_seconds', { origin: 1 })
  assert.ok(lag1 > 0, `B: lag for origin 1 is > 0 while patches are missing (got ${lag1})`)
  await sleep(150)
  net.b.tick()
  net.b.tick()
  const lag2 = val(scrape(net.b), 'quilt_lag_seconds', { origin: 1 })
  assert.ok(lag2 > lag1, `B: lag grows while the gap stays open (${lag1} -> ${lag2})`)

  // now let the request (and any repeats) through
  net.queue.push(...held)
  net.pump()
  assert.equal(net.b.all('SELECT count(*) AS n FROM todo')[0].n, 5, 'B repaired the gap')
  const a2 = scrape(net.a)
  const b2 = scrape(net.b)
  const served = val(a2, 'quilt_retransmissions_total', { kind: 'served' }) - val(a0, 'quilt_retransmissions_total', { kind: 'served' })
  assert.ok(served >= 3, `A: served at least the 3 lost patches (got ${served})`)
  assert.ok(served <= 6, `A: served about the 3 lost patches, not everything (got ${served})`)
  assert.equal(val(b2, 'quilt_lag_seconds', { origin: 1 }), 0, 'B: lag back to 0 once repaired')
  assert.equal(val(a2, 'quilt_retransmissions_total', { kind: 'requested' }), val(a0, 'quilt_retransmissions_total', { kind: 'requested' }),
    'A asked for nothing')
  for (const r of [net.a, net.b]) await r.close({ timeoutMs: 0 })
})

test('quilt_lag_seconds is in seconds of wall-clock time, also with heartbeatMs: 0', async () => {
  const net = setup(dir)
  net.connect()
  net.a.upsert('todo', { id: 1, tenantId: 1, title: 'first' })
  net.pump()
  net.a.upsert('todo', { id: 2, tenantId: 1, title: 'lost' })
  net.takeFromA()
  net.a.upsert('todo', { id: 3, tenantId: 1, title: 'after' })
  const t0 = Date.now()
  for (const f of net.takeFromA()) net.deliver(net.b, f) // B notices the gap now
  net.queue.length = 0 // its requests are lost too
  await sleep(300)
  net.b.tick()
  net.b.tick()
  const missingFor = (Date.now() - t0) / 1000
  const lag = val(scrape(net.b), 'quilt_lag_seconds', { origin: 1 })
  assert.ok(lag >= missingFor * 0.5 && lag <= missingFor + 2,
    `B: quilt_lag_seconds{origin="1"} = ${lag} after the patch has been missing for ${missingFor.toFixed(3)} s (2 ticks)`)
  for (const r of [net.a, net.b]) await r.close({ timeoutMs: 0 })
})

test('rejected frames are counted by reason (malformed, forged, wrong version)', async () => {
  const net = setup(dir)
  net.connect()
  net.a.upsert('todo', { id: 1, tenantId: 1, title: 'ok' })
  const good = net.takeFromA()
  net.queue.length = 0
  const valid = good[good.length - 1]
  const before = scrape(net.b)
  const r0 = (reason) => val(before, 'quilt_rejected_frames_total', { reason })
  const expect = (m, deltas) => {
    for (const reason of ['E_FRAME', 'E_AUTH', 'E_VERSION', 'E_DRIFT']) {
      if (!has(m, 'quilt_rejected_frames_total', { reason }) && !deltas[reason]) continue
      assert.equal(val(m, 'quilt_rejected_frames_total', { reason }) - (has(before, 'quilt_rejected_frames_total', { reason }) ? r0(reason) : 0),
        deltas[reason] || 0, `rejected{reason="${reason}"}`)
    }
  }

  // a bad (malformed) frame
  assert.throws(() => net.b.applyPatches(Buffer.from('definitely not a frame')), { code: 'E_FRAME' })
  let m = scrape(net.b)
  expect(m, { E_FRAME: 1 })
  // a forged one: valid layout, signed with another key
  const unsigned = valid.subarray(0, valid.length - 32)
  const forged = Buffer.concat([unsigned, crypto.createHmac('sha256', 'not-the-key').update(unsigned).digest()])
  assert.throws(() => net.b.applyPatches(forged), { code: 'E_AUTH' })
  // a tampered one: one body byte flipped
  const tampered = Buffer.from(valid)
  tampered[12] ^= 0x20
  assert.throws(() => net.b.applyPatches(tampered), { code: 'E_AUTH' })
  m = scrape(net.b)
  expect(m, { E_FRAME: 1, E_AUTH: 2 })
  // an unknown protocol version
  const v9 = Buffer.from(valid)
  v9[3] = 9
  assert.throws(() => net.b.applyPatches(v9), { code: 'E_VERSION' })
  // oversize
  assert.throws(() => net.b.applyPatches(Buffer.alloc(1048577)), { code: 'E_FRAME' })
  m = scrape(net.b)
  expect(m, { E_FRAME: 2, E_AUTH: 2, E_VERSION: 1 })
  // a TypeError is not a rejected frame
  assert.throws(() => net.b.applyPatches('nope'), TypeError)
  m = scrape(net.b)
  expect(m, { E_FRAME: 2, E_AUTH: 2, E_VERSION: 1 })
  // refused frames are not counted as frames in
  assert.equal(val(m, 'quilt_frames_total', { direction: 'in' }), val(before, 'quilt_frames_total', { direction: 'in' }))
  // and the valid frame still goes through afterwards
  net.b.applyPatches(valid)
  assert.equal(val(scrape(net.b), 'quilt_frames_total', { direction: 'in' }), val(before, 'quilt_frames_total', { direction: 'in' }) + 1)
  for (const r of [net.a, net.b]) await r.close({ timeoutMs: 0 })
})

test('pending patches rise when a newer peer writes a column this one lacks, and fall to 0 on migrate', async () => {
  const net = setup(dir, { aMigrations: [V1, V2], bMigrations: [V1] })
  net.connect()
  net.a.upsert('todo', { id: 1, tenantId: 1, title: 'plain' })
  net.pump()
  assert.equal(val(scrape(net.b), 'quilt_pending_patches'), 0)
  net.a.upsert('todo', { id: 2, tenantId: 1, title: 'p', prio: 5 })
  net.a.upsert('todo', { id: 3, tenantId: 1, prio: 7 })
  net.pump()
  const pending = val(scrape(net.b), 'quilt_pending_patches')
  assert.equal(pending, 2, 'B keeps the 2 patches naming prio')
  assert.equal(pending, net.b.status().pending, 'metric agrees with status().pending')
  net.b.migrate([V1, V2])
  assert.equal(val(scrape(net.b), 'quilt_pending_patches'), 0, 'applied after migrate')
  assert.equal(net.b.get('SELECT prio FROM todo WHERE id = 3').prio, 7)
  for (const r of [net.a, net.b]) await r.close({ timeoutMs: 0 })
})

test('last snapshot age: set by a snapshot, then grows with time', async () => {
  const net = setup(dir)
  net.b.upsert('todo', { id: 1, tenantId: 1, title: 'snap me' })
  const info = await net.b.snapshot()
  assert.ok(info && info.sha256)
  const age1 = val(scrape(net.b), 'quilt_last_snapshot_age_seconds')
  assert.ok(Number.isFinite(age1) && age1 >= 0 && age1 < 5, `age right after a snapshot: ${age1}`)
  await sleep(400)
  const age2 = val(scrape(net.b), 'quilt_last_snapshot_age_seconds')
  assert.ok(age2 >= age1 + 0.3, `age grows with time (${age1} -> ${age2})`)
  assert.ok(age2 < age1 + 5)
  // a second snapshot resets it
  await net.b.snapshot()
  const age3 = val(scrape(net.b), 'quilt_last_snapshot_age_seconds')
  assert.ok(age3 < age2, `a new snapshot resets the age (${age2} -> ${age3})`)
  // A (no snapshot taken) still reports none
  const a = scrape(net.a).get('quilt_last_snapshot_age_seconds').samples
  assert.ok(a.length === 0 || Number.isNaN(a[0].value))
  for (const r of [net.a, net.b]) await r.close({ timeoutMs: 0 })
})
