'use strict'
// The public Replicator: a JS wrapper over the native one (src/binding).
//
// Validation rule: every argument is checked in exactly one place. What the
// native layer receives (options, table names, rows, peer ids, frames, SQL,
// migrations, restore options) is checked there, and its errors arrive as
// finished objects with `code` set natively (TypeError/RangeError `E_ARG`,
// else a QuiltError): they are passed on, never re-checked or rewrapped.
// JS checks only what never reaches native code: callbacks (`send`), tokens
// and timeouts of waitFor/waitForPeers, middleware options, the `snapshot`
// schedule, and the "closing" state (writes refused while close() runs).
const { EventEmitter } = require('node:events')
const { NativeReplicator } = require('../binding.js')
const { make, typeError, rangeError, closedError } = require('./errors.js')
const snapshots = require('./snapshot.js')
const acks = require('./acks.js')
const sql = require('./sql.js')
const { columnar, oneRow } = require('./rows.js')
const debug = require('./debug.js')('quilt:replicator')

const U32_MAX = 0xffffffff
const RETRY_LIMIT = 1024 // frames kept per peer when its send throws
const BROADCAST = 0 // the `peer` of frames for the broadcast send

/** `obj` plus `extra` as non-enumerable (readable, not listed) properties. */
function hidden (obj, extra) {
  for (const [k, value] of Object.entries(extra)) {
    Object.defineProperty(obj, k, { value, enumerable: false, writable: false, configurable: true })
  }
  return obj
}

/** The `snapshot` schedule's `intervalMs` (a JS-only option). */
function checkInterval (v) {
  if (v === undefined) return
  if (typeof v !== 'number' || Number.isNaN(v)) throw typeError('options.snapshot.intervalMs must be a number')
  if (!Number.isFinite(v) || v < 0) throw rangeError('options.snapshot.intervalMs must be a finite number >= 0')
}

/** Parse a session token `"<peerId>.<seq>"`; null when it is not one. */
function parseToken (token) {
  if (typeof token !== 'string') return null
  const m = /^(\d{1,10})\.(\d{1,16})$/.exec(token)
  if (!m) return null
  const peer = Number(m[1])
  const seq = Number(m[2])
  if (peer < 1 || peer > U32_MAX || !Number.isSafeInteger(seq)) return null
  return { peer, seq }
}

class Replicator extends EventEmitter {
  constructor (options) {
    super()
    // The snapshot schedule is JS-only; every other option is the native
    // constructor's to check (`options?.` reads nothing from a non-object).
    const snapshot = options?.snapshot
    if (snapshot !== undefined && snapshot !== null) {
      if (typeof snapshot !== 'object' || typeof snapshot.url !== 'string') throw typeError('options.snapshot must be { url, intervalMs?, options? }')
      checkInterval(snapshot.intervalMs)
    }
    this._native = new NativeReplicator(options)
    const heartbeatMs = this._native.heartbeatMs
    this._path = options.path
    this._options = { ...options, heartbeatMs }
    this._sends = new Map()
    this._broadcast = null
    this._peerWaiters = new Set()
    this._retry = new Map()
    this._waiters = new Set()
    this._ackWaiters = new Set()
    this._flushScheduled = false
    this._closed = false
    this._closing = null
    this._snapshotting = null
    this._lastScheduledSnapshot = 0
    this._txDepth = 0
    this._collecting = false
    this.peerId = this._native.peerId
    // 'change' records are collected natively only while someone listens.
    this.on('newListener', (event) => {
      if (event === 'change' && !this._collecting && !this._closed) {
        this._collecting = true
        this._native.collectChanges(true)
      }
    })
    this.on('removeListener', (event) => {
      if (event === 'change' && this._collecting && this.listenerCount('change') === 0 && !this._closed) {
        this._collecting = false
        this._native.collectChanges(false)
      }
    })
    if (heartbeatMs > 0) {
      this._timer = setInterval(() => this._heartbeat(), heartbeatMs)
      this._timer.unref()
    }
  }

  /**
   * Writes and peer changes are refused from the moment close() starts (a
   * JS-side state); once closed, the native side reports E_CLOSED itself.
   */
  _checkOpen () {
    if (this._closing) throw closedError()
  }

  /** Calls that must not run inside `transaction(fn)` (a JS-side state). */
  _checkNoTransaction (what) {
    if (this._txDepth > 0) throw make('E_ARG', 'Error', `${what} cannot run inside transaction(fn)`)
  }

  // ----- schema --------------------------------------------------------

  /** Bring the schema to `migrations.length` (forward or backward). */
  migrate (migrations) {
    this._checkOpen()
    this._checkNoTransaction('migrate()')
    const r = this._native.migrate(migrations)
    this._drainEvents()
    // Kept patches the new schema could apply: one 'change' event.
    this._drainChanges()
    return r
  }

  // ----- SQL -------------------------------------------------------------

  /**
   * Run every statement of `sql` in one transaction (inside
   * `transaction(fn)`: a savepoint). Writes to replicated tables are
   * captured as patches. Returns this replicator, as better-sqlite3 does.
   */
  exec (source) {
    this._checkOpen()
    this._native.exec(source)
    this._afterWrite()
    return this
  }

  /** Compile one statement; returns a better-sqlite3-shaped `Statement`. */
  prepare (source) {
    this._checkOpen()
    const info = this._native.prepare(source)
    return new sql.Statement(this, source, info)
  }

  /**
   * Returns a function that runs `fn` in one transaction: `upsert`,
   * `upsertMany`, `delete` and captured SQL inside it commit together and
   * leave in one frame; a throw rolls everything back and nothing is sent.
   * Nested calls use savepoints.
   */
  transaction (fn) {
    return sql.transaction(this, fn)
  }

  /** True while a `transaction(fn)` runs. */
  get inTransaction () {
    return this._txDepth > 0
  }

  // ----- local writes ----------------------------------------------------

  /** Write one row (only the given columns change); returns its token. */
  upsert (table, row) {
    this._checkOpen()
    const c = oneRow(row)
    return this._wrote(c === null ? this._native.upsert(table, row) : this._native.upsertColumns(table, c[0], c[1]))
  }

  /** Write many rows in one transaction; returns the last token. */
  upsertMany (table, rows) {
    this._checkOpen()
    const c = columnar(rows)
    return this._wrote(c === null ? this._native.upsertMany(table, rows) : this._native.upsertPacked(table, c[0], c[1]))
  }

  /** Tombstone: sets `deletedAt` to now. */
  delete (table, pk) {
    this._checkOpen()
    return this._wrote(this._native.delete(table, pk))
  }

  /** After a local write: wake, events, flush soon; returns `token`. */
  _wrote (token) {
    this._afterWrite()
    return token
  }

  _afterWrite () {
    this._wake()
    this._drainChanges()
    if (!this._flushScheduled && (this._sends.size > 0 || this._broadcast)) {
      this._flushScheduled = true
      setImmediate(() => {
        this._flushScheduled = false
        if (!this._closed) this._safe(() => this.flush())
      })
    }
  }

  // ----- transport -------------------------------------------------------

  /** Register (or re-register after a reconnect) a peer's send callback. */
  addPeer (peerId, send) {
    this._checkOpen()
    if (typeof send !== 'function') throw typeError('addPeer(peerId, send): send must be a function')
    // The native side checks peerId (and refuses this peer's own id).
    const out = this._native.addPeer(peerId)
    this._sends.set(peerId, send)
    debug('peer %d: add peer %d', this.peerId, peerId)
    this._dispatch(out)
    this._drainEvents()
  }

  /**
   * Register (or replace) one send that reaches every peer: patches and
   * pings are encoded and handed to it once, not once per peer. Peers are
   * still added with `addPeer` (their send carries directed traffic: hello
   * pings, gap requests and answers). `send(frame, kind)` gets `kind`
   * `'patches'` or `'ping'`. `null` goes back to per-peer sends.
   */
  addBroadcast (send) {
    this._checkOpen()
    if (send !== null && typeof send !== 'function') throw typeError('addBroadcast(send): send must be a function or null')
    this._broadcast = send
    debug('peer %d: broadcast %s', this.peerId, send ? 'on' : 'off')
    this._native.setBroadcast(send !== null)
    if (send) this._safe(() => this.flush())
  }

  /** Forget a peer. */
  removePeer (peerId) {
    this._checkOpen()
    this._native.removePeer(peerId)
    debug('peer %d: remove peer %d', this.peerId, peerId)
    this._sends.delete(peerId)
    this._retry.delete(peerId)
  }

  /** Take in a frame from any peer. Throws (and changes nothing) when it is not valid. */
  applyPatches (frame) {
    this._checkNoTransaction('applyPatches()')
    let r
    try {
      r = this._native.applyPatches(frame)
    } catch (err) {
      if (debug.enabled) debug('peer %d: frame of %s bytes refused: %s %s', this.peerId, frame?.length, err.code, err.message)
      throw err
    }
    if (debug.enabled) debug('peer %d: frame of %d bytes: applied %d stored %d duplicates %d requested %d, %d answer(s)', this.peerId, frame.length, r.applied, r.stored, r.duplicates, r.requested, r.out.length)
    this._dispatch(r.out)
    this._drainEvents()
    this._wake()
    this._drainChanges()
    return { applied: r.applied, stored: r.stored, duplicates: r.duplicates, requested: r.requested }
  }

  /** Run one heartbeat now: pings, gap requests, retention. */
  tick () {
    // Checked here: failed sends are retried before the native call.
    if (this._closed) throw closedError()
    this._checkNoTransaction('tick()')
    this._resendFailed()
    const n = this._tickNative()
    if (debug.enabled) debug('peer %d: tick, %d frame(s) out', this.peerId, n)
    this._drainEvents()
    this._wake()
    this._maybeScheduledSnapshot()
  }

  /** Hand queued outgoing patches to `send` now. */
  flush () {
    if (this._closed) throw closedError()
    this._resendFailed()
    this._dispatch(this._native.flush())
  }

  /**
   * The native heartbeat. With a broadcast send, queued patches are drained
   * first: what the tick itself hands to the broadcast is then pings only,
   * and the broadcast send is told which is which (a transport may carry
   * them differently: a stream for patches, plain pub/sub for pings).
   */
  _tickNative () {
    let n = 0
    if (this._broadcast) {
      const patches = this._native.flush()
      n += patches.length
      this._dispatch(patches, 'patches')
    }
    const out = this._native.tick()
    this._dispatch(out, 'ping')
    return n + out.length
  }

  _heartbeat () {
    if (this._closed) return
    this._safe(() => this.tick())
  }

  _safe (fn) {
    try {
      fn()
    } catch (e) {
      this._emitError(e)
    }
  }

  _emitError (err) {
    debug('error %s', err && err.message)
    // An 'error' event without a listener would throw from a timer: only
    // emit when someone listens.
    if (this.listenerCount('error') > 0) this.emit('error', err)
  }

  /** Hand frames to their send; `kind` tells the broadcast send what they are. */
  _dispatch (out, kind = 'patches') {
    if (!out || out.length === 0) return
    let frames = 0
    let bytes = 0
    let failures = 0
    for (const o of out) {
      const { peer, frame } = o
      const send = peer === BROADCAST ? this._broadcast : this._sends.get(peer)
      if (!send) continue
      try {
        if (peer === BROADCAST) send(frame, o.kind ?? kind)
        else send(frame)
        frames++
        bytes += frame.length
      } catch (e) {
        failures++
        debug('send to %d threw: %s', peer, e && e.message)
        let q = this._retry.get(peer)
        if (!q) this._retry.set(peer, (q = []))
        if (q.length < RETRY_LIMIT) q.push({ frame, kind: o.kind ?? kind })
      }
    }
    if (frames || failures) this._native.noteSent(frames, bytes, failures)
  }

  _resendFailed () {
    if (this._retry.size === 0) return
    const pending = this._retry
    this._retry = new Map()
    for (const [peer, frames] of pending) this._dispatch(frames.map(({ frame, kind }) => ({ peer, frame, kind })))
  }

  /** One 'change' event per committed transaction or applied frame. */
  _drainChanges () {
    if (!this._collecting || this._txDepth > 0 || this._closed) return
    const batches = this._native.takeChanges()
    for (const changes of batches) this.emit('change', changes)
  }

  _drainEvents () {
    const events = this._native.takeEvents()
    for (const ev of events) {
      if (ev.kind === 'synced') this.emit('synced', ev.peerId)
      else if (ev.kind === 'error') this._emitError(make(ev.code, 'Error', ev.message))
    }
  }

  // ----- reads and waiting -------------------------------------------------

  /** Run a read-only statement; all rows as objects. */
  all (sql, params) {
    return this._native.all(sql, params)
  }

  /** Run a read-only statement; the first row, or undefined. */
  get (sql, params) {
    return this._native.get(sql, params)
  }

  /** Resolves true once the write named by `token` is applied here, false on timeout. */
  waitFor (token, timeoutMs = 5000) {
    const t = parseToken(token)
    if (!t) return Promise.reject(typeError(`waitFor: ${JSON.stringify(token)} is not a token "<peerId>.<seq>"`))
    if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) return Promise.reject(rangeError('waitFor: timeoutMs must be a number >= 0'))
    if (this._closed) return Promise.reject(closedError())
    if (this._native.has(t.peer, t.seq)) return Promise.resolve(true)
    return new Promise((resolve) => {
      const w = { ...t, resolve, timer: null }
      w.timer = setTimeout(() => {
        this._waiters.delete(w)
        resolve(false)
      }, timeoutMs)
      this._waiters.add(w)
    })
  }

  _wake () {
    if (this._waiters.size > 0 && !this._closed) {
      for (const w of this._waiters) {
        if (this._native.has(w.peer, w.seq)) {
          clearTimeout(w.timer)
          this._waiters.delete(w)
          w.resolve(true)
        }
      }
    }
    if (this._peerWaiters.size > 0 && !this._closed) this._checkPeerWaiters()
    if (this._ackWaiters.size > 0 && !this._closed && this._native.allAcked()) {
      for (const f of this._ackWaiters) f()
      this._ackWaiters.clear()
    }
  }

  /**
   * Resolves once peers' pings show they hold the write named by `token`:
   * `'quorum'` (default), `'all'`, a count, or `{ count | peers | level,
   * timeoutMs = 5000, clusterSize? }`. Rejects with `E_TIMEOUT`.
   */
  waitForPeers (token, options) {
    const t = parseToken(token)
    if (!t) return Promise.reject(typeError(`waitForPeers: ${JSON.stringify(token)} is not a token "<peerId>.<seq>"`))
    let opts
    try {
      opts = acks.parseWaitOptions(options, this.peerId)
    } catch (e) {
      return Promise.reject(e)
    }
    if (this._closing) return Promise.reject(closedError())
    const first = acks.progress(this._native, this.peerId, t, opts)
    if (first.ok) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const w = { t, token, opts, resolve, reject, timer: null, last: first }
      w.timer = setTimeout(() => {
        this._peerWaiters.delete(w)
        reject(acks.timeoutError(token, opts, w.last))
      }, opts.timeoutMs)
      this._peerWaiters.add(w)
    })
  }

  _checkPeerWaiters () {
    const cache = new Map()
    for (const w of this._peerWaiters) {
      w.last = acks.progress(this._native, this.peerId, w.t, w.opts, cache)
      if (w.last.ok) {
        clearTimeout(w.timer)
        this._peerWaiters.delete(w)
        w.resolve()
      }
    }
  }

  /**
   * Express/Connect middleware: waits until the token in `header` is applied
   * here. With `quorum: true` (or `waitForPeers: options`) it also holds the
   * response until peers hold the write whose token the handler put in
   * `header` (503 `E_TIMEOUT` when they do not in time).
   */
  readYourWrites ({ header = 'x-quilt-token', timeoutMs = 5000, quorum, waitForPeers } = {}) {
    if (this._closed) throw closedError()
    if (typeof header !== 'string' || header.length === 0) throw typeError('readYourWrites: header must be a non-empty string')
    if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) throw rangeError('readYourWrites: timeoutMs must be a number >= 0')
    const name = header.toLowerCase()
    const hold = acks.middlewareWaitOptions({ quorum, waitForPeers })
    if (hold !== undefined) acks.parseWaitOptions(hold, this.peerId)
    return (req, res, next) => {
      if (hold !== undefined) acks.holdResponse(this, res, name, hold, parseToken)
      const raw = req && req.headers ? req.headers[name] : undefined
      const token = Array.isArray(raw) ? raw[raw.length - 1] : raw
      if (!parseToken(token)) return next()
      if (this._closed) return next(closedError())
      this.waitFor(token, timeoutMs).then((ok) => {
        if (ok) return next()
        const err = make('E_STALE', 'Error', `write ${token} did not reach this replica within ${timeoutMs} ms`)
        err.status = 503
        err.statusCode = 503
        next(err)
      }, next)
    }
  }

  // ----- cluster ---------------------------------------------------------

  /** Peer id, schema version, seq, leadership, peers and pending patches. */
  status () {
    const s = this._native.status()
    // Fields beyond API.md's shape are non-enumerable: readable by name,
    // while the documented shape (Object.keys, JSON) stays as it was.
    return hidden({
      peerId: s.peerId,
      schemaVersion: s.schemaVersion,
      seq: s.seq,
      isLeader: s.isLeader,
      peers: s.peers.map((p) => hidden({
        peerId: p.peerId,
        connected: p.connected,
        lastSeq: p.lastSeq,
        contiguousSeq: p.contiguousSeq,
        missing: p.missing,
        lastSeenMs: p.lastSeenMs ?? null
      }, { ackedSeq: p.ackedSeq })),
      pending: s.pending
    }, { reissued: s.reissued })
  }

  /** True when this peer has the lowest id among live peers. */
  isLeader () {
    return this._native.isLeader()
  }

  /** OpenMetrics text. */
  metrics () {
    return this._native.metrics()
  }

  // ----- snapshots -------------------------------------------------------

  /** Take a consistent, compressed snapshot to `options.snapshot.url`. */
  snapshot (opts) {
    if (this._closing) return Promise.reject(closedError())
    return snapshots.take(this, opts)
  }

  /** Fetch the latest (or a named) snapshot and write it to `path`. */
  static restore (opts) {
    return snapshots.restore(opts)
  }

  _maybeScheduledSnapshot () {
    const s = this._options.snapshot
    this._ticks = (this._ticks || 0) + 1
    // Wait a few heartbeats after start so peers are heard before deciding
    // who leads: a fresh peer alone would otherwise think it leads.
    if (!s || !s.intervalMs || this._snapshotting || this._closing || this._ticks <= 3) return
    const now = Date.now()
    if (now - this._lastScheduledSnapshot < s.intervalMs) return
    if (!this._native.isLeader()) return
    this._lastScheduledSnapshot = now
    this.snapshot().catch((e) => this._emitError(e))
  }

  // ----- shutdown --------------------------------------------------------

  /** Flush, wait (bounded) for peers to acknowledge, then close. Idempotent. */
  close ({ timeoutMs = 5000 } = {}) {
    if (this._closing) return this._closing
    if (this._closed) return Promise.resolve()
    this._closing = (async () => {
      // Send what is queued, and a ping carrying our last seq, so peers
      // can acknowledge it.
      this._safe(() => {
        this.flush()
        this._tickNative()
      })
      if (!this._native.allAcked() && timeoutMs > 0) {
        await new Promise((resolve) => {
          const f = () => { clearTimeout(timer); resolve() }
          const timer = setTimeout(() => { this._ackWaiters.delete(f); resolve() }, timeoutMs)
          this._ackWaiters.add(f)
        })
      }
      if (this._snapshotting) await this._snapshotting.catch(() => {})
      if (this._timer) clearInterval(this._timer)
      this._closed = true
      for (const w of this._waiters) { clearTimeout(w.timer); w.resolve(false) }
      this._waiters.clear()
      for (const w of this._peerWaiters) { clearTimeout(w.timer); w.reject(closedError('the replicator closed before peers held the write')) }
      this._peerWaiters.clear()
      this._native.close()
    })()
    return this._closing
  }

  [Symbol.asyncDispose] () {
    return this.close()
  }
}

module.exports = { Replicator, parseToken }
