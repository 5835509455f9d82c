'use strict'
// Bad frames (API.md "Bad input" and "Errors"): malformed or truncated frames
// throw E_FRAME, a wrong version byte E_VERSION, frames with a missing or bad
// HMAC under a clusterKey E_AUTH, frames stamped too far ahead E_DRIFT; every
// refused frame changes nothing; no input crashes the process.
//
// Frame layout: "QLT" | version u8 | flags u8 | sender u32 BE | msgpack body
// | optional 32-byte HMAC.
const test = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('..')

const HLC_EPOCH = 1735689600000
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-err-'))
let fileNo = 0
const opened = []

const T = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER, deletedAt INTEGER) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, a TEXT, b INTEGER, deletedAt INTEGER) STRICT;`,
  down: 'DROP TABLE t_patches; DROP TABLE t;'
}

function open (opts = {}) {
  const r = new Replicator({ path: path.join(TMP, `e-${fileNo++}.db`), heartbeatMs: 0, ...opts })
  opened.push(r)
  r.migrate([T])
  return r
}

test.after(async () => {
  for (const r of opened) await r.close({ timeoutMs: 0 }).catch(() => {})
  fs.rmSync(TMP, { recursive: true, force: true })
})

/** Everything a refused frame must leave alone. */
function fingerprint (r, tablesOnly = false) {
  const h = crypto.createHash('sha256')
  h.update(JSON.stringify(r.all('SELECT * FROM t ORDER BY id')))
  h.update(JSON.stringify(r.all('SELECT * FROM t_patches ORDER BY _peerId, _sequenceId')))
  if (tablesOnly) return h.digest('hex')
  const s = r.status()
  h.update(JSON.stringify({ seq: s.seq, pending: s.pending, peers: s.peers.map((p) => [p.peerId, p.lastSeq, p.contiguousSeq, p.missing]) }))
  return h.digest('hex')
}

/**
 * A sender (peer `id`) writes `rows` with a capturing peer 999 registered;
 * returns the data frames it handed to send (hello pings excluded).
 */
function capture (opts, rows) {
  const s = open(opts)
  const out = []
  s.addPeer(999, (f) => out.push(Buffer.from(f)))
  const hello = out.length
  for (const row of rows) s.upsert('t', row)
  s.flush()
  const data = out.slice(hello)
  assert.ok(data.length >= 1, 'sender produced a patch frame')
  for (const f of data) assert.equal(f.subarray(0, 3).toString('latin1'), 'QLT', 'frames start with QLT')
  return { s, data, hello: out.slice(0, hello) }
}

const ROWS = [{ id: 1, a: 'one', b: 1 }, { id: 2, a: 'two', b: null }, { id: 3, a: 'x'.repeat(100), b: -7 }]

function expectRefused (r, frame, code, what, tablesOnly = false) {
  const before = fingerprint(r, tablesOnly)
  let err
  try {
    r.applyPatches(frame)
  } catch (e) {
    err = e
  }
  assert.ok(err instanceof Error, `${what}: applyPatches threw`)
  assert.equal(err.code, code, `${what}: expected ${code}, got ${err.code} (${err.message})`)
  assert.equal(fingerprint(r, tablesOnly), before, `${what}: nothing changed`)
}

test('a valid frame header: magic, version 1, flags, sender id', () => {
  const { data } = capture({ peerId: 0x01020304 }, ROWS)
  const f = data[0]
  assert.equal(f[3], 1, 'protocol version 1')
  assert.equal(f[4] & 1, 0, 'no MAC flag without clusterKey')
  assert.equal(f.readUInt32BE(5), 0x01020304, 'sender u32 BE')
  const k = capture({ peerId: 7, clusterKey: 'k' }, ROWS).data[0]
  assert.equal(k[4] & 1, 1, 'MAC flag with a clusterKey')
})

test('applyPatches: non-bytes argument is TypeError E_ARG', () => {
  const r = open()
  for (const bad of ['QLT', 42, null, undefined, {}, [81, 76, 84]]) {
    let err
    try { r.applyPatches(bad) } catch (e) { err = e }
    assert.ok(err instanceof TypeError, `TypeError for ${JSON.stringify(bad)}`)
    assert.equal(err.code, 'E_ARG')
  }
})

test('malformed and truncated frames throw E_FRAME and change nothing', () => {
  const { data } = capture({ peerId: 11 }, ROWS)
  const good = data[0]
  const r = open({ peerId: 12 })
  r.upsert('t', { id: 50, a: 'local' })
  // Every proper prefix, down to the empty buffer.
  for (let n = 0; n < good.length; n++) expectRefused(r, good.subarray(0, n), 'E_FRAME', `prefix of ${n} bytes`)
  const mut = (fn) => { const b = Buffer.from(good); fn(b); return b }
  expectRefused(r, mut((b) => { b[0] = 0x58 }), 'E_FRAME', 'bad magic')
  expectRefused(r, mut((b) => { b[2] = 0x00 }), 'E_FRAME', 'bad magic (3rd byte)')
  expectRefused(r, mut((b) => { b[4] = 0x02 }), 'E_FRAME', 'unknown flag bit')
  expectRefused(r, mut((b) => { b[4] = 0x80 }), 'E_FRAME', 'unknown high flag bit')
  expectRefused(r, mut((b) => { b.writeUInt32BE(0, 5) }), 'E_FRAME', 'sender 0')
  expectRefused(r, Buffer.concat([good, Buffer.from([0x00])]), 'E_FRAME', 'a trailing byte')
  expectRefused(r, Buffer.concat([good, good.subarray(9)]), 'E_FRAME', 'a second body')
  expectRefused(r, Buffer.concat([good.subarray(0, 9), Buffer.from([0xc1])]), 'E_FRAME', 'reserved msgpack byte')
  expectRefused(r, Buffer.concat([good.subarray(0, 9), Buffer.from('not msgpack at all, just text')]), 'E_FRAME', 'text body')
  expectRefused(r, Buffer.concat([good.subarray(0, 9), Buffer.from([0x90])]), 'E_FRAME', 'empty array body')
  expectRefused(r, Buffer.concat([good.subarray(0, 9), Buffer.from([0x01])]), 'E_FRAME', 'integer body')
  expectRefused(r, Buffer.concat([good.subarray(0, 9), Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff])]), 'E_FRAME', 'huge array length')
  expectRefused(r, Buffer.from(good).fill(0), 'E_FRAME', 'all zeros')
  // Still healthy: the genuine frame applies after all that.
  const res = r.applyPatches(good)
  assert.ok(res.applied >= 1, 'the genuine frame applies')
  assert.equal(r.get('SELECT a FROM t WHERE id = 1').a, 'one')
})

test('a wrong version byte throws E_VERSION and changes nothing', () => {
  const { data } = capture({ peerId: 21 }, ROWS)
  const r = open({ peerId: 22 })
  for (const v of [0, 2, 3, 255]) {
    const b = Buffer.from(data[0])
    b[3] = v
    expectRefused(r, b, 'E_VERSION', `version ${v}`)
  }
  assert.ok(r.applyPatches(data[0]).applied >= 1)
})

test('a frame over the receiver maxFrameBytes is E_FRAME', () => {
  const { data } = capture({ peerId: 31 }, [{ id: 1, a: 'y'.repeat(600) }])
  assert.ok(data[0].length > 300)
  const small = open({ peerId: 32, maxFrameBytes: 300 })
  expectRefused(small, data[0], 'E_FRAME', 'oversize frame')
  const big = open({ peerId: 33 })
  assert.equal(big.applyPatches(data[0]).applied, 1)
})

test('rejections are counted in metrics by reason', () => {
  const { data } = capture({ peerId: 41 }, ROWS)
  const r = open({ peerId: 42 })
  const count = (reason) => {
    const line = r.metrics().split('\n').find((l) => !l.startsWith('#') && /reject/i.test(l) && l.includes(reason))
    assert.ok(line, `a rejected-frames sample for ${reason}`)
    return Number(line.split(' ').pop())
  }
  const f0 = count('E_FRAME')
  const v0 = count('E_VERSION')
  assert.throws(() => r.applyPatches(data[0].subarray(0, 5)))
  const b = Buffer.from(data[0]); b[3] = 9
  assert.throws(() => r.applyPatches(b))
  assert.equal(count('E_FRAME'), f0 + 1)
  assert.equal(count('E_VERSION'), v0 + 1)
})

test('random corruption never crashes: each frame applies or throws a coded error', () => {
  const { data } = capture({ peerId: 51 }, ROWS)
  const good = data[0]
  const r = open({ peerId: 52 })
  const codes = new Set(['E_FRAME', 'E_VERSION', 'E_AUTH', 'E_DRIFT', 'E_SCHEMA', 'E_SQLITE', 'E_ARG'])
  let seed = 12345
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n }
  let refused = 0
  for (let i = 0; i < 400; i++) {
    const b = Buffer.from(good)
    const flips = 1 + rnd(3)
    for (let k = 0; k < flips; k++) b[9 + rnd(b.length - 9)] = rnd(256)
    try {
      const res = r.applyPatches(b)
      assert.equal(typeof res.applied, 'number')
    } catch (e) {
      refused++
      assert.ok(e instanceof Error, 'an Error')
      assert.ok(codes.has(e.code), `a known code, got ${e.code}: ${e.message}`)
    }
  }
  assert.ok(refused > 0, 'some corruptions were refused')
  assert.equal(typeof r.status().seq, 'number')
})

// ----- clusterKey ------------------------------------------------------------------

test('clusterKey: same key applies; another key, no key or tampered bytes throw E_AUTH and change nothing', () => {
  const KEY = 'the-cluster-key'
  const { data } = capture({ peerId: 61, clusterKey: KEY }, ROWS)
  const good = data[0]
  const same = open({ peerId: 62, clusterKey: Buffer.from(KEY) })
  const other = open({ peerId: 63, clusterKey: 'another-key' })
  other.upsert('t', { id: 9, a: 'mine' })
  expectRefused(other, good, 'E_AUTH', 'frame under another key')
  // Tampered copies, against a replicator with the right key.
  const mut = (fn) => { const b = Buffer.from(good); fn(b); return b }
  expectRefused(same, mut((b) => { b[b.length - 1] ^= 1 }), 'E_AUTH', 'tag flipped')
  expectRefused(same, mut((b) => { b[12] ^= 0x40 }), 'E_AUTH', 'body byte flipped')
  expectRefused(same, mut((b) => { b[b.length - 40] ^= 0x01 }), 'E_AUTH', 'late body byte flipped')
  expectRefused(same, mut((b) => { b.writeUInt32BE(64, 5) }), 'E_AUTH', 'sender changed')
  expectRefused(same, good.subarray(0, good.length - 32), 'E_AUTH', 'tag removed, flag kept')
  const stripped = Buffer.from(good.subarray(0, good.length - 32)); stripped[4] = 0
  expectRefused(same, stripped, 'E_AUTH', 'tag removed and flag cleared')
  expectRefused(same, good.subarray(0, 9 + 10), 'E_AUTH', 'fewer than 32 bytes after the header')
  // A keyless replicator's frames are refused by a keyed one.
  const plain = capture({ peerId: 65 }, ROWS).data[0]
  expectRefused(same, plain, 'E_AUTH', 'frame without any MAC')
  // A forged tag computed with the wrong key.
  const forged = Buffer.from(good)
  crypto.createHmac('sha256', 'another-key').update(forged.subarray(0, forged.length - 32)).digest().copy(forged, forged.length - 32)
  expectRefused(same, forged, 'E_AUTH', 'tag under another key')
  // And the genuine frame applies.
  const res = same.applyPatches(good)
  assert.equal(res.applied, ROWS.length)
  assert.deepEqual(same.all('SELECT id, a, b FROM t ORDER BY id'), ROWS.map((r) => ({ id: r.id, a: r.a, b: r.b })))
})

test('clusterKey: the tag is HMAC-SHA256(key, all bytes before it)', () => {
  const KEY = 'hmac-check-key'
  const { data } = capture({ peerId: 71, clusterKey: KEY }, ROWS)
  for (const f of data) {
    const tag = crypto.createHmac('sha256', KEY).update(f.subarray(0, f.length - 32)).digest()
    assert.ok(tag.equals(f.subarray(f.length - 32)), 'tag verifies')
  }
})

test('clusterKey: two keyed replicators exchange pings and patches both ways', () => {
  const KEY = Buffer.from('0123456789abcdef0123456789abcdef', 'hex')
  const a = open({ peerId: 81, clusterKey: KEY })
  const b = open({ peerId: 82, clusterKey: KEY })
  const q = []
  a.addPeer(82, (f) => q.push([b, Buffer.from(f)]))
  b.addPeer(81, (f) => q.push([a, Buffer.from(f)]))
  a.upsert('t', { id: 1, a: 'from a' })
  b.upsert('t', { id: 2, a: 'from b' })
  for (let round = 0; round < 20; round++) {
    a.flush(); b.flush(); a.tick(); b.tick()
    let n = 0
    while (q.length && n++ < 1000) { const [to, f] = q.shift(); to.applyPatches(f) }
  }
  const rows = [{ id: 1, a: 'from a' }, { id: 2, a: 'from b' }]
  assert.deepEqual(a.all('SELECT id, a FROM t ORDER BY id'), rows)
  assert.deepEqual(b.all('SELECT id, a FROM t ORDER BY id'), rows)
})

// ----- drift -----------------------------------------------------------------------

/** Replace the 8-byte msgpack uint64 `from` (0xcf + BE) by `to` in a copy of `frame`. */
function replaceStamp (frame, from, to) {
  const needle = Buffer.alloc(9)
  needle[0] = 0xcf
  needle.writeBigUInt64BE(BigInt(from), 1)
  const i = frame.indexOf(needle)
  if (i < 0) return null
  const out = Buffer.from(frame)
  out.writeBigUInt64BE(BigInt(to), i + 1)
  return out
}

test('a patch stamped beyond maxDriftMs ahead is refused with E_DRIFT; a larger maxDriftMs accepts it', () => {
  const { s, data } = capture({ peerId: 91 }, [{ id: 1, a: 'future' }])
  const at = s.get('SELECT _patchedAt AS at FROM t_patches').at
  const future = (Date.now() + 10 * 60 * 1000 - HLC_EPOCH) * 8192
  const frame = replaceStamp(data[0], at, future)
  assert.ok(frame, 'found the stamp in the frame (msgpack uint64)')
  const strict = open({ peerId: 92, maxDriftMs: 60000 })
  // Only the data must stay unchanged: the announced seq is remembered so it
  // can be re-requested later (API.md, maxDriftMs).
  expectRefused(strict, frame, 'E_DRIFT', 'ten minutes ahead', true)
  assert.equal(strict.get('SELECT count(*) AS n FROM t').n, 0)
  const lenient = open({ peerId: 93, maxDriftMs: 3600 * 1000 })
  assert.equal(lenient.applyPatches(frame).applied, 1)
  assert.equal(lenient.get('SELECT a FROM t WHERE id = 1').a, 'future')
  assert.equal(lenient.get('SELECT _patchedAt AS at FROM t_patches').at, future)
  // The HLC observed the remote stamp: the next local write is stamped above it.
  lenient.upsert('t', { id: 2 })
  const next = lenient.get('SELECT _patchedAt AS at FROM t_patches WHERE id = 2').at
  assert.ok(next > future, 'local HLC moved past the observed stamp')
})
