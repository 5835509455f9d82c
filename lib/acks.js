'use strict'
// Durable acks: `waitForPeers(token, ...)` and the response-holding part of
// `readYourWrites({ quorum })`. Nothing new travels on the wire: every ping
// carries the sender's contiguous seq per origin, so a peer whose last ping
// says `contiguous(origin) >= seq` holds the write (it is committed in its
// SQLite file, and a peer never loses a committed patch). The native side
// reports those numbers (`peerAcks(origin)`); this file counts them.

const { make, typeError, rangeError } = require('./errors.js')

const LEVELS = new Set(['all', 'quorum'])

/**
 * Normalise the second argument of waitForPeers: `'quorum'`, `'all'`, a
 * number (count), or `{ count?, peers?, level?, timeoutMs?, clusterSize? }`.
 * Throws TypeError/RangeError (E_ARG).
 */
function parseWaitOptions (arg, selfId) {
  let o
  if (arg === undefined || arg === null) o = {}
  else if (typeof arg === 'string') o = { level: arg }
  else if (typeof arg === 'number') o = { count: arg }
  else if (typeof arg === 'object' && !Array.isArray(arg)) o = arg
  else throw typeError("waitForPeers: options must be 'quorum', 'all', a count or an object")
  const given = ['count', 'peers', 'level'].filter((k) => o[k] !== undefined)
  if (given.length > 1) throw rangeError(`waitForPeers: give one of count, peers or level, not ${given.join(' and ')}`)
  const timeoutMs = o.timeoutMs ?? 5000
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) throw rangeError('waitForPeers: timeoutMs must be a number >= 0')
  if (o.count !== undefined && (!Number.isInteger(o.count) || o.count < 0)) throw rangeError('waitForPeers: count must be an integer >= 0')
  if (o.peers !== undefined) {
    if (!Array.isArray(o.peers) || o.peers.some((p) => !Number.isInteger(p) || p < 1 || p > 0xffffffff)) {
      throw typeError('waitForPeers: peers must be an array of peer ids')
    }
  }
  if (o.level !== undefined && !LEVELS.has(o.level)) throw rangeError("waitForPeers: level must be 'all' or 'quorum'")
  if (o.clusterSize !== undefined && (!Number.isInteger(o.clusterSize) || o.clusterSize < 1)) throw rangeError('waitForPeers: clusterSize must be an integer >= 1')
  const level = given.length === 0 ? 'quorum' : o.level
  return { count: o.count, peers: o.peers ? o.peers.filter((p) => p !== selfId) : undefined, level, timeoutMs, clusterSize: o.clusterSize }
}

/**
 * How far a wait is: `{ ok, have, need, holders }`.
 * - `count: k`: k peers other than this one hold the write.
 * - `peers: [...]`: each of them holds it (this peer counts when listed).
 * - `'all'`: every connected peer holds it.
 * - `'quorum'`: a majority of the cluster holds it, this peer included when
 *   it holds the write. The cluster is this peer and every peer it knows
 *   (connected or not: a partitioned peer still counts against a quorum),
 *   or `clusterSize` when given.
 */
function progress (native, selfId, t, opts, cache) {
  // One native call per origin per round, however many waits are pending.
  let acks = cache && cache.get(t.peer)
  if (!acks) {
    acks = native.peerAcks(t.peer)
    if (cache) cache.set(t.peer, acks)
  }
  const holders = new Set()
  for (const a of acks) if (a.seq >= t.seq) holders.add(a.peerId)
  const self = native.has(t.peer, t.seq)
  if (opts.count !== undefined) return { ok: holders.size >= opts.count, have: holders.size, need: opts.count, holders }
  if (opts.peers !== undefined) {
    const have = opts.peers.filter((p) => holders.has(p)).length
    return { ok: have === opts.peers.length, have, need: opts.peers.length, holders }
  }
  if (opts.level === 'all') {
    const connected = acks.filter((a) => a.connected)
    const have = connected.filter((a) => holders.has(a.peerId)).length
    return { ok: self && have === connected.length, have, need: connected.length, holders }
  }
  const size = opts.clusterSize ?? 1 + acks.length
  const need = Math.floor(size / 2) + 1
  const have = holders.size + (self ? 1 : 0)
  return { ok: have >= need, have, need, holders }
}

function timeoutError (token, opts, p) {
  const what = opts.count !== undefined ? `${opts.count} peer(s)` : opts.peers ? `peers ${opts.peers.join(', ')}` : `${opts.level} (${p.need} peer(s))`
  const err = make('E_TIMEOUT', 'Error', `write ${token} reached ${p.have} of ${what} within ${opts.timeoutMs} ms`)
  err.have = p.have
  err.need = p.need
  return err
}

/** Options of `readYourWrites({ quorum, waitForPeers })`: undefined when off. */
function middlewareWaitOptions ({ quorum, waitForPeers }) {
  if (waitForPeers !== undefined && waitForPeers !== null && waitForPeers !== false) {
    return waitForPeers === true ? 'quorum' : waitForPeers
  }
  if (quorum === true) return 'quorum'
  if (quorum !== undefined && quorum !== false) throw typeError('readYourWrites: quorum must be a boolean')
  return undefined
}

/**
 * Hold `res.end` until the token the handler put in `header` is held as
 * `opts` asks. On E_TIMEOUT the response becomes a 503 with
 * `{ error: 'E_TIMEOUT', token }` when its headers were not sent yet (the
 * write is applied here and keeps replicating; the client may retry it).
 */
function holdResponse (replicator, res, header, opts, parseToken) {
  if (!res || typeof res.end !== 'function') return
  const end = res.end
  res.end = function (...args) {
    res.end = end
    const token = typeof res.getHeader === 'function' ? res.getHeader(header) : undefined
    if (!parseToken(token)) return end.apply(res, args)
    replicator.waitForPeers(token, opts).then(() => end.apply(res, args), (err) => {
      if (res.headersSent) return end.apply(res, args)
      const body = JSON.stringify({ error: err.code || 'E_TIMEOUT', message: err.message, token })
      res.statusCode = 503
      res.setHeader('content-type', 'application/json; charset=utf-8')
      res.setHeader('content-length', Buffer.byteLength(body))
      end.call(res, body)
    })
    return res
  }
}

module.exports = { parseWaitOptions, progress, timeoutError, middlewareWaitOptions, holdResponse }
