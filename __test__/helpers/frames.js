'use strict'
// Build quilt frames by hand (docs/protocol.md): "QLT" | version | flags |
// sender u32 BE | MessagePack body | [HMAC-SHA256 tag]. Enough MessagePack
// for control messages: arrays, nil, unsigned ints up to 2^64-1 (BigInt).
const crypto = require('node:crypto')

function mp (v) {
  if (v === null || v === undefined) return Buffer.from([0xc0])
  if (Array.isArray(v)) {
    const head = v.length < 16 ? Buffer.from([0x90 | v.length]) : Buffer.from([0xdc, v.length >> 8, v.length & 255])
    return Buffer.concat([head, ...v.map(mp)])
  }
  const n = BigInt(v)
  if (n < 0n) throw new Error('unsigned only')
  if (n < 128n) return Buffer.from([Number(n)])
  const b = Buffer.alloc(9)
  b[0] = 0xcf
  b.writeBigUInt64BE(n, 1)
  return b
}

/** A frame from `sender` whose body is `{ ping?, requests?, gone? }`. */
function controlFrame (sender, { ping = null, requests = [], gone = [], schemaVersion = 1 } = {}, key) {
  const ranges = (list) => list.map(({ origin, ranges }) => [origin, ranges.map(([a, b]) => [a, b])])
  const pingBody = ping && [ping.ownLastSeq ?? 0, ping.vector.map(([o, c, m]) => [o, c, m]), ping.digests ?? [], [], ping.cover ?? []]
  const body = mp([schemaVersion, [], pingBody, ranges(requests), ranges(gone)])
  const head = Buffer.alloc(9)
  head.write('QLT', 0, 'latin1')
  head[3] = 1
  head[4] = key ? 1 : 0
  head.writeUInt32BE(sender, 5)
  const unsigned = Buffer.concat([head, body])
  if (!key) return unsigned
  return Buffer.concat([unsigned, crypto.createHmac('sha256', key).update(unsigned).digest()])
}

module.exports = { controlFrame, mp }
