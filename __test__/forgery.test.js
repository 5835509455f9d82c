'use strict'
// Bad input (API.md, Guarantees 5 and Errors): with a clusterKey, forged,
// tampered, truncated, replayed-from-elsewhere, oversize and garbage frames
// throw with the right code and change nothing; non-Buffer arguments throw
// TypeError; a valid frame applied twice is idempotent; no input crashes the
// process.
//
// Frame layout (src/core/protocol.rs): "QLT" | version u8 | flags u8 (bit0 =
// MAC) | sender u32 BE | MessagePack body | [32-byte HMAC-SHA256 tag over all
// preceding bytes].
const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const { Replicator } = require('..')
const { rng: prng } = require('./helpers/rng.js')

const KEY = 'forgery-test-cluster-key'
const OTHER_KEY = 'some-other-cluster-key'
const HEADER_LEN = 9
const TAG_LEN = 32

const V1 = {
  up: `CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, done INTEGER, deletedAt INTEGER,
         PRIMARY KEY (id, tenantId)) STRICT;
       CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, tenantId INTEGER, title TEXT, done INTEGER, deletedAt INTEGER) STRICT;`,
  down: 'DROP TABLE todo; DROP TABLE todo_patches;'
}

const ROWS = [
  { id: 1, tenantId: 7, title: 'buy milk', done: 0 },
  { id: 2, tenantId: 7, title: 'héllo wörld ✓', done: 1 },
  { id: 3, tenantId: 7, title: 'x'.repeat(300), done: 0 },
  { id: 4, tenantId: 8, title: null, done: 1 },
  { id: -5, tenantId: 8, title: '', done: 9007199254740991 }
]

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-forgery-'))
let nextFile = 0
function open (opts) {
  const r = new Replicator({ path: path.join(dir, `r${nextFile++}.db`), heartbeatMs: 0, ...opts })
  r.migrate([V1])
  opened.push(r)
  return r
}
const opened = []

/** A sender that writes ROWS and the frames it hands to peer 2. */
function capture (opts) {
  const s = open({ peerId: 1, ...opts })
  const out = []
  s.addPeer(2, (f) => out.push(Buffer.from(f)))
  const pings = out.length
  for (const row of ROWS) s.upsert('todo', row)
  s.flush()
  const data = out.slice(pings)
  assert.ok(data.length >= 1, 'the sender handed a patch frame to send')
  return { sender: s, all: out, pings: out.slice(0, pings), data }
}

/** sha256 of everything a reader sees: the user table, its twin, kept patches. */
function dbHash (r) {
  const h = crypto.createHash('sha256')
  const dump = (sql) => h.update(JSON.stringify(r.all(sql), (k, v) => (typeof v === 'bigint' ? `${v}n` : v)) + '\n')
  dump('SELECT * FROM todo ORDER BY id, tenantId')
  dump('SELECT * FROM todo_patches ORDER BY _peerId, _sequenceId')
  dump('SELECT origin, seq, at, tbl FROM _quilt_kept ORDER BY origin, seq')
  return h.digest('hex')
}

function sign (unsigned, key) {
  return Buffer.concat([unsigned, crypto.createHmac('sha256', key).update(unsigned).digest()])
}
const stripTag = (f) => f.subarray(0, f.length - TAG_LEN)

function randomBytes (rnd, n) {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = Math.floor(rnd() * 256)
  return b
}

/** Apply and require a thrown Error with one of `codes`; returns the code. */
function refuse (r, frame, codes, what) {
  codes = [].concat(codes)
  let err = null
  let result
  try {
    result = r.applyPatches(frame)
  } catch (e) {
    err = e
  }
  assert.ok(err, `${what}: expected ${codes.join('|')}, but the frame was accepted: ${JSON.stringify(result)}`)
  assert.ok(err instanceof Error, `${what}: threw a non-Error ${String(err)}`)
  assert.ok(codes.includes(err.code), `${what}: expected code ${codes.join('|')}, got ${err.code} (${err.message})`)
  return err.code
}

// ---------------------------------------------------------------------------
// Shared cluster: A (sender, peer 1) and B (receiver, peer 2), same key. B
// never gets A's patches until the idempotency test, so any forged frame
// that slipped through would change B's content.

let A, B, P, PINGS, bOut, baseline

test.before(() => {
  const cap = capture({ clusterKey: KEY })
  A = cap.sender
  P = cap.data[cap.data.length - 1]
  PINGS = cap.pings
  B = open({ peerId: 2, clusterKey: KEY })
  bOut = []
  B.addPeer(1, (f) => bOut.push(f))
  bOut.length = 0
  baseline = dbHash(B)
})

test.after(async () => {
  for (const r of opened) {
    try { await r.close({ timeoutMs: 0 }) } catch {}
  }
  fs.rmSync(dir, { recursive: true, force: true })
})

function assertUnchanged (what) {
  assert.equal(dbHash(B), baseline, `${what}: the receiver's content changed`)
  assert.equal(bOut.length, 0, `${what}: the receiver sent ${bOut.length} frame(s) in answer to refused input`)
}

test('layout check: the captured frame is "QLT" v1 with a MAC we can recompute, and a fresh peer accepts it', () => {
  assert.equal(P.subarray(0, 3).toString('latin1'), 'QLT')
  assert.equal(P[3], 1)
  assert.equal(P[4] & 1, 1, 'MAC flag set')
  assert.equal(P.readUInt32BE(5), 1, 'sender = peer 1')
  assert.deepEqual(sign(stripTag(P), KEY), P, 'tag = HMAC-SHA256(clusterKey, all preceding bytes)')
  const fresh = open({ peerId: 3, clusterKey: KEY })
  const r = fresh.applyPatches(P)
  assert.equal(r.applied, ROWS.length)
  assert.equal(fresh.all('SELECT * FROM todo').length, ROWS.length)
  // and the re-signed copy (our own signer) is accepted too
  const fresh2 = open({ peerId: 4, clusterKey: KEY })
  assert.equal(fresh2.applyPatches(sign(stripTag(P), KEY)).applied, ROWS.length)
})

test('tampering with any byte (header, body, tag) is refused with the right code and never applied', () => {
  for (const frame of [P, ...PINGS]) {
    for (let i = 0; i < frame.length; i++) {
      for (const mask of [0x01, 0x80, 0xff, 0x5a]) {
        const t = Buffer.from(frame)
        t[i] ^= mask
        let codes
        if (i < 3) codes = ['E_FRAME'] // magic
        else if (i === 3) codes = ['E_VERSION'] // protocol version
        else if (i === 4) {
          // flags: clearing bit0 drops the MAC (E_AUTH); unknown bits are malformed
          // (or an unknown protocol), and a MAC that covers them would not match either
          codes = (t[4] & ~1) === 0 ? ['E_AUTH'] : ['E_FRAME', 'E_VERSION', 'E_AUTH']
        } else codes = ['E_AUTH'] // sender, body, tag: all covered by the MAC
        refuse(B, t, codes, `byte ${i}/${frame.length} ^ 0x${mask.toString(16)}`)
      }
    }
  }
  assertUnchanged('tampered frames')
})

test('truncated frames at every length are refused', () => {
  for (const frame of [P, ...PINGS]) {
    for (let n = 0; n < frame.length; n++) {
      const cut = frame.subarray(0, n)
      refuse(B, cut, n < HEADER_LEN ? ['E_FRAME'] : ['E_AUTH'], `first ${n} of ${frame.length} bytes`)
      // a copy (not a view into a larger buffer) behaves the same
      refuse(B, Buffer.from(cut), n < HEADER_LEN ? ['E_FRAME'] : ['E_AUTH'], `copy of first ${n} bytes`)
    }
    // dropping bytes from the front (misaligned stream) is refused as well
    for (let n = 1; n < frame.length; n++) refuse(B, frame.subarray(n), ['E_FRAME', 'E_VERSION', 'E_AUTH'], `without first ${n} bytes`)
  }
  assertUnchanged('truncated frames')
})

test('frames signed with another key are refused with E_AUTH', () => {
  const unsigned = stripTag(P)
  for (const key of [OTHER_KEY, KEY + 'x', KEY.slice(0, -1), KEY.toUpperCase(), Buffer.alloc(32), 'k']) {
    refuse(B, sign(unsigned, key), 'E_AUTH', `signed with ${JSON.stringify(String(key))}`)
  }
  // an all-zero tag, a tag of another frame, a tag of the body only (without header)
  refuse(B, Buffer.concat([unsigned, Buffer.alloc(TAG_LEN)]), 'E_AUTH', 'zero tag')
  refuse(B, Buffer.concat([unsigned, PINGS[0].subarray(PINGS[0].length - TAG_LEN)]), 'E_AUTH', 'tag of another frame')
  refuse(B, Buffer.concat([unsigned, crypto.createHmac('sha256', KEY).update(unsigned.subarray(HEADER_LEN)).digest()]), 'E_AUTH', 'tag over the body only')
  // a sender id changed and re-signed with another key
  const u2 = Buffer.from(unsigned)
  u2.writeUInt32BE(3, 5)
  refuse(B, sign(u2, OTHER_KEY), 'E_AUTH', 'other sender, other key')
  // a sender of 0 with a wrong MAC is still a MAC failure (MAC checked first)
  const u0 = Buffer.from(unsigned)
  u0.writeUInt32BE(0, 5)
  refuse(B, sign(u0, OTHER_KEY), 'E_AUTH', 'sender 0, other key')
  assertUnchanged('frames signed with another key')
})

test('frames replayed from another cluster (same data, other key) are refused with E_AUTH', () => {
  const other = capture({ clusterKey: OTHER_KEY })
  // same data: a peer of that cluster decodes the same rows
  const peer = open({ peerId: 2, clusterKey: OTHER_KEY })
  for (const f of other.data) peer.applyPatches(f)
  assert.deepEqual(peer.all('SELECT id, tenantId, title, done FROM todo ORDER BY id, tenantId'),
    ROWS.map((r) => ({ ...r })).sort((x, y) => x.id - y.id || x.tenantId - y.tenantId))
  for (const f of other.all) refuse(B, f, 'E_AUTH', 'frame from a cluster with another key')
  // also a string key given as a Buffer of the same bytes is the same key (sanity, other side)
  const same = open({ peerId: 5, clusterKey: Buffer.from(OTHER_KEY) })
  assert.equal(same.applyPatches(other.data[other.data.length - 1]).applied, ROWS.length)
  assertUnchanged('frames from another cluster')
})

test('a frame without a MAC is refused with E_AUTH when a key is set', () => {
  const plain = capture({}) // a keyless cluster writing the same data
  for (const f of plain.all) {
    assert.equal(f[4] & 1, 0, 'keyless frames carry no MAC flag')
    refuse(B, f, 'E_AUTH', 'keyless frame')
  }
  // our own frame with its tag stripped and the flag cleared
  const noTag = Buffer.from(stripTag(P))
  noTag[4] &= ~1
  refuse(B, noTag, 'E_AUTH', 'tag stripped, flag cleared')
  // tag stripped, flag still set: the last 32 body bytes are read as the tag
  refuse(B, stripTag(P), 'E_AUTH', 'tag stripped, flag set')
  // flag cleared but the tag left in place
  const flagOff = Buffer.from(P)
  flagOff[4] &= ~1
  refuse(B, flagOff, 'E_AUTH', 'flag cleared, tag kept')
  // a header-only frame without MAC
  refuse(B, Buffer.from([0x51, 0x4c, 0x54, 1, 0, 0, 0, 0, 1]), 'E_AUTH', 'header only, no MAC')
  assertUnchanged('frames without MAC')
})

test('oversize frames (bigger than maxFrameBytes) are refused with E_FRAME', () => {
  const LIMIT = 1048576 // default maxFrameBytes
  refuse(B, Buffer.alloc(LIMIT + 1), 'E_FRAME', 'zeros, limit + 1')
  refuse(B, Buffer.concat([P, Buffer.alloc(LIMIT + 1 - P.length)]), 'E_FRAME', 'valid frame padded to limit + 1')
  const big = Buffer.alloc(4 * LIMIT, 0x41)
  P.copy(big)
  refuse(B, big, 'E_FRAME', '4 MiB starting with a valid frame')
  refuse(B, sign(Buffer.concat([stripTag(P), Buffer.alloc(LIMIT)]), KEY), 'E_FRAME', 'oversize, correctly signed')
  assertUnchanged('oversize frames')

  // A genuine, correctly signed frame of exactly the limit is accepted; one
  // byte more is refused with E_FRAME by a receiver with a small limit.
  const SMALL = 4096
  const s = open({ peerId: 11, clusterKey: KEY })
  const sent = []
  s.addPeer(12, (f) => sent.push(Buffer.from(f)))
  const frameFor = (id, len) => {
    sent.length = 0
    s.upsert('todo', { id, tenantId: 1, title: 'y'.repeat(len) })
    s.flush()
    assert.equal(sent.length, 1)
    return sent[0]
  }
  // frame length grows one for one with the title length in this range;
  // stamps and seqs may vary by a byte, so adjust until it fits exactly
  let id = 100
  const frameOfSize = (target) => {
    let len = 3000
    let f = frameFor(id++, len)
    for (let tries = 0; f.length !== target && tries < 8; tries++) {
      len += target - f.length
      f = frameFor(id++, len)
    }
    assert.equal(f.length, target, `built a frame of exactly ${target} bytes`)
    return { f, len }
  }
  const { f: exact, len } = frameOfSize(SMALL)
  const { f: over } = frameOfSize(SMALL + 1)

  const r = open({ peerId: 12, clusterKey: KEY, maxFrameBytes: SMALL })
  const before = dbHash(r)
  refuse(r, over, 'E_FRAME', 'genuine signed frame of maxFrameBytes + 1')
  assert.equal(dbHash(r), before, 'oversize genuine frame changed the receiver')
  assert.equal(r.applyPatches(exact).applied, 1, 'a frame of exactly maxFrameBytes is accepted')
  assert.equal(r.get('SELECT length(title) AS n FROM todo').n, len)
})

test('random garbage (seeded, thousands of buffers) is refused with a code and changes nothing', () => {
  const rnd = prng(0xC0FFEE)
  const codes = new Map()
  const count = (c) => codes.set(c, (codes.get(c) || 0) + 1)
  for (let i = 0; i < 4000; i++) {
    const n = Math.floor(rnd() * (rnd() < 0.9 ? 300 : 5000))
    const g = randomBytes(rnd, n)
    const kind = i % 4
    if (kind >= 1 && n >= 3) g.write('QLT', 0, 'latin1') // past the magic check
    if (kind >= 2 && n >= 5) { g[3] = 1; g[4] = kind === 2 ? 1 : 0 } // right version, MAC flag on/off
    count(refuse(B, g, ['E_FRAME', 'E_AUTH', 'E_VERSION'], `garbage #${i} (${n} bytes)`))
    // half the time behind a non-zero byteOffset inside a larger ArrayBuffer
    if (i % 2 === 0) {
      const host = new Uint8Array(n + 13)
      host.set(g, 7)
      refuse(B, host.subarray(7, 7 + n), ['E_FRAME', 'E_AUTH', 'E_VERSION'], `garbage view #${i}`)
    }
  }
  assert.ok(codes.get('E_FRAME') > 0 && codes.get('E_AUTH') > 0, `codes seen: ${JSON.stringify([...codes])}`)
  assertUnchanged('garbage')
})

test('malformed bodies under a valid MAC (an insider with the key) throw E_FRAME and change nothing', () => {
  const C = open({ peerId: 6, clusterKey: KEY })
  const before = dbHash(C)
  const unsigned = stripTag(P)
  const header = unsigned.subarray(0, HEADER_LEN)
  const body = unsigned.subarray(HEADER_LEN)
  // every strict prefix of the MessagePack body
  for (let n = 0; n < body.length; n++) {
    refuse(C, sign(Buffer.concat([header, body.subarray(0, n)]), KEY), 'E_FRAME', `body cut to ${n}/${body.length}`)
  }
  // trailing bytes after a complete body
  refuse(C, sign(Buffer.concat([unsigned, Buffer.from([0xc0])]), KEY), 'E_FRAME', 'trailing byte')
  // sender 0
  const s0 = Buffer.from(unsigned)
  s0.writeUInt32BE(0, 5)
  refuse(C, sign(s0, KEY), 'E_FRAME', 'sender 0, valid MAC')
  // not MessagePack at all / wrong shapes
  for (const b of [[0xc1], [0x90], [0x95, 0, 0, 0, 0, 0], [0xa3, 0x61, 0x62, 0x63], [0xdd, 0xff, 0xff, 0xff, 0xff], [0xdb, 0xff, 0xff, 0xff, 0xff, 0x61],
    [0xc6, 0xff, 0xff, 0xff, 0xff], [0xde, 0xff, 0xff], [0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]]) {
    refuse(C, sign(Buffer.concat([header, Buffer.from(b)]), KEY), 'E_FRAME', `body ${Buffer.from(b).toString('hex')}`)
  }
  // deep nesting must not overflow the stack
  refuse(C, sign(Buffer.concat([header, Buffer.alloc(200000, 0x91)]), KEY), 'E_FRAME', 'nesting bomb')
  assert.equal(dbHash(C), before, 'malformed bodies changed the receiver')

  // Single-byte mutations of the body, re-signed: each either throws with a
  // code and changes nothing, or is a valid frame.
  const rnd = prng(42)
  const allowed = ['E_FRAME', 'E_SCHEMA', 'E_DRIFT', 'E_VERSION', 'E_SQLITE']
  let refused = 0
  for (let i = 0; i < 1500; i++) {
    const R = i % 100 === 0 ? open({ peerId: 7, clusterKey: KEY }) : null
    const target = R || C
    const m = Buffer.from(body)
    const pos = Math.floor(rnd() * m.length)
    m[pos] = Math.floor(rnd() * 256)
    const h0 = dbHash(target)
    try {
      target.applyPatches(sign(Buffer.concat([header, m]), KEY))
    } catch (e) {
      refused++
      assert.ok(allowed.includes(e.code), `mutation at ${pos}: unexpected ${e.code} ${e.message}`)
      assert.equal(dbHash(target), h0, `mutation at ${pos}: threw ${e.code} but changed the database`)
    }
  }
  assert.ok(refused > 0)
})

test('non-Buffer arguments throw TypeError', () => {
  const inputs = [undefined, null, 0, 1, NaN, true, 'QLT', P.toString('latin1'), P.toString('base64'), [...P], { length: 10 },
    { buffer: P.buffer }, P.buffer, new ArrayBuffer(64), new DataView(P.buffer, P.byteOffset, P.length), new Uint16Array(8),
    new Int8Array(P), new Uint8ClampedArray(P), new Float64Array(4), Symbol('x'), 1n, () => P, new Date(), new Map(), Promise.resolve(P)]
  for (const x of inputs) {
    let err
    try { B.applyPatches(x) } catch (e) { err = e }
    const name = typeof x === 'symbol' ? 'symbol' : (x && x.constructor ? x.constructor.name : String(x))
    assert.ok(err instanceof TypeError, `applyPatches(${name}): expected TypeError, got ${err && err.constructor.name} ${err && err.code}`)
    assert.equal(err.code, 'E_ARG', `applyPatches(${name}): code`)
  }
  let err
  try { B.applyPatches() } catch (e) { err = e }
  assert.ok(err instanceof TypeError, 'applyPatches() with no argument')
  assertUnchanged('non-Buffer arguments')
})

test('a valid frame replayed is idempotent (duplicates > 0, nothing changes)', () => {
  const pings = PINGS.map((f) => B.applyPatches(f))
  for (const r of pings) assert.equal(r.applied, 0)
  const first = B.applyPatches(P)
  assert.equal(first.applied, ROWS.length)
  assert.equal(first.stored, ROWS.length)
  assert.equal(first.duplicates, 0)
  const after = dbHash(B)
  assert.notEqual(after, baseline)
  assert.deepEqual(B.all('SELECT id, tenantId, title, done FROM todo ORDER BY id, tenantId'),
    A.all('SELECT id, tenantId, title, done FROM todo ORDER BY id, tenantId'))
  const n = B.all('SELECT count(*) AS n FROM todo_patches')[0].n
  assert.equal(n, ROWS.length)
  // the same frame again, as a Buffer, as a plain Uint8Array copy, as a view at an offset
  const host = new Uint8Array(P.length + 9)
  host.set(P, 5)
  for (const again of [P, Buffer.from(P), new Uint8Array(P), host.subarray(5, 5 + P.length)]) {
    const r = B.applyPatches(again)
    assert.equal(r.applied, 0, 'nothing applied the second time')
    assert.equal(r.stored, 0, 'nothing stored the second time')
    assert.ok(r.duplicates > 0, `duplicates counted: ${JSON.stringify(r)}`)
    assert.equal(r.duplicates, ROWS.length)
    assert.equal(dbHash(B), after, 'a replay changed the database')
  }
  // after the patches are held, forgeries are still refused and change nothing
  const t = Buffer.from(P)
  t[t.length - 40] ^= 1
  refuse(B, t, 'E_AUTH', 'tampered after acceptance')
  refuse(B, sign(stripTag(P), OTHER_KEY), 'E_AUTH', 'other key after acceptance')
  assert.equal(dbHash(B), after)
})

test('no input crashes the process (hostile inputs in a child process; this one survives too)', () => {
  // The nastiest inputs, in a child so a crash is reported as a signal.
  const script = `
    const { Replicator } = require(${JSON.stringify(path.resolve(__dirname, '..'))})
    const crypto = require('node:crypto')
    const V1 = ${JSON.stringify(V1)}
    const seen = {}
    for (const key of ['k', undefined]) {
      const r = new Replicator({ path: ':memory:', peerId: 2, heartbeatMs: 0, clusterKey: key })
      r.migrate([V1])
      const hdr = Buffer.from([0x51, 0x4c, 0x54, 1, key ? 1 : 0, 0, 0, 0, 1])
      const seal = (b) => { const u = Buffer.concat([hdr, b]); return key ? Buffer.concat([u, crypto.createHmac('sha256', key).update(u).digest()]) : u }
      const bodies = [Buffer.alloc(500000, 0x91), Buffer.alloc(500000, 0x81), Buffer.concat([Buffer.alloc(100000, 0xdc), Buffer.alloc(10)]),
        Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), Buffer.from([0xdb, 0xff, 0xff, 0xff, 0xff]), Buffer.from([0xc6, 0xff, 0xff, 0xff, 0xff]),
        Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff]), Buffer.from([0x95, 0xce, 0xff, 0xff, 0xff, 0xff, 0xdd, 0xff, 0xff, 0xff, 0xff]),
        Buffer.from([0x95, 0x01, 0x91, 0x94, 0xa1, 0x74, 0xce, 0xff, 0xff, 0xff, 0xff, 0xdc, 0xff, 0xff]),
        Buffer.from([0x95, 0x01, 0x91, 0x94, 0xa4, 0x74, 0x6f, 0x64, 0x6f, 0x01, 0x91, 0xa2, 0x69, 0x64, 0x91, 0x93, 0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x91, 0x01, 0xc0, 0x90, 0x90])]
      let s = 0x1234
      const rnd = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 4294967296 }
      for (let i = 0; i < 3000; i++) {
        const n = Math.floor(rnd() * 200)
        const b = Buffer.alloc(n)
        for (let j = 0; j < n; j++) b[j] = rnd() < 0.3 ? [0x90, 0x91, 0x95, 0xc0, 0xdc, 0xdd, 0xd3, 0xcf, 0xa1, 0x01][Math.floor(rnd() * 10)] : Math.floor(rnd() * 256)
        bodies.push(b)
      }
      for (const b of bodies) {
        try { r.applyPatches(seal(b)); seen.ok = (seen.ok || 0) + 1 } catch (e) { seen[e.code] = (seen[e.code] || 0) + 1 }
      }
      r.tick(); r.status(); r.metrics()
    }
    process.stdout.write(JSON.stringify(seen))
  `
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60000 })
  assert.equal(res.signal, null, `child killed by ${res.signal}: ${res.stderr.slice(-2000)}`)
  assert.equal(res.status, 0, `child exited ${res.status}: ${res.stderr.slice(-2000)}`)
  const seen = JSON.parse(res.stdout)
  for (const code of Object.keys(seen)) assert.ok(['ok', 'E_FRAME', 'E_SCHEMA', 'E_DRIFT', 'E_VERSION', 'E_SQLITE'].includes(code), `unexpected ${code}: ${res.stdout}`)
  // and this process is still alive and B still works
  assert.equal(typeof B.metrics(), 'string')
  assert.equal(B.status().peerId, 2)
  B.tick()
})
