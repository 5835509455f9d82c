'use strict'
// quilt-sqlite/nats: a NATS JetStream transport for a Replicator.
//
// One stream per cluster (`QUILT_<cluster>`, subject `<prefix>.<cluster>.all`)
// carries the patch frames, published once through addBroadcast. Each peer
// reads it through a durable pull consumer of its own (`peer-<peerId>`), so
// a peer that was offline resumes where it stopped: it first replays the
// stream up to where it stood when it connected, and only then adds its
// peers, whose pings show it what the stream no longer held (those ranges
// are asked for through the gap protocol). Pings go once to every peer on
// `<prefix>.<cluster>.ping` over core NATS (only the latest matters; not
// stored, and they keep flowing while a consumer recovers from a lost
// node). Directed traffic (hello pings, gap requests and answers) goes over
// core NATS on `<prefix>.<cluster>.to.<peerId>`, not stored either.
//
// Frames carry their sender and, with clusterKey, a MAC: the transport adds
// a peer only after one of its frames was accepted by applyPatches. A
// message that is not a valid frame is counted (replicator.metrics(),
// quilt_rejected_frames_total, and stats().invalid), acknowledged and
// skipped; it never stops the consumer.
//
// The NATS client is an optional peer dependency, loaded when connect() runs.

const debug = require('./debug.js')('quilt:nats')

const SENDER_OFFSET = 5 // frame header: "QLT", version, flags, sender u32 BE
const HELLO = 'Quilt-Hello'
const STREAM_SEQ = 'Quilt-Stream-Seq'
const NANOS_PER_MS = 1_000_000
const DEFAULT_MAX_FRAME = 1 << 20 // the Replicator's default maxFrameBytes
const PAYLOAD_MARGIN = 4096 // NATS headers
// A stream whose leader died has none for a few seconds (7 s measured on
// three local nodes): keep retrying a publish for a minute, so that the
// stream still holds it for peers that are away. Live peers get it sooner
// through the gap protocol.
const PUBLISH_RETRY_MS = 60_000
const PUBLISH_QUEUE_LIMIT = 10_000

async function loadClient () {
  try {
    const transport = await import('@nats-io/transport-node')
    const js = await import('@nats-io/jetstream')
    return { transport, js }
  } catch (e) {
    const err = new Error('quilt-sqlite/nats needs the NATS client: npm install @nats-io/transport-node @nats-io/jetstream (' + (e && e.message) + ')')
    err.code = 'E_ARG'
    err.cause = e
    throw err
  }
}

function checkName (what, v) {
  if (typeof v !== 'string' || !/^[A-Za-z0-9_-]{1,64}$/.test(v)) {
    const err = new TypeError(`${what} must be 1-64 letters, digits, '-' or '_'`)
    err.code = 'E_ARG'
    throw err
  }
  return v
}

function frameSender (frame) {
  if (!frame || frame.length < SENDER_OFFSET + 4) return 0
  return ((frame[SENDER_OFFSET] << 24) >>> 0) + (frame[SENDER_OFFSET + 1] << 16) + (frame[SENDER_OFFSET + 2] << 8) + frame[SENDER_OFFSET + 3]
}

class NatsTransport {
  /**
   * Connect `replicator` to a NATS JetStream cluster. Resolves once the
   * stream was replayed up to where it stood and the peers were added.
   * Options: servers (string or array), cluster ('default'), prefix
   * ('quilt'), peers (ids known in advance), replicas (stream replicas, 1),
   * maxAgeMs (how long the stream keeps messages, 24 h), catchUpTimeoutMs
   * (30000), connectOptions (passed to the NATS client).
   */
  static async connect (replicator, options = {}) {
    const t = new NatsTransport(replicator, options)
    await t._start()
    return t
  }

  constructor (replicator, options) {
    if (!replicator || typeof replicator.applyPatches !== 'function') throw new TypeError('NatsTransport: replicator must be a Replicator')
    if (options === null || typeof options !== 'object') throw new TypeError('NatsTransport: options must be an object')
    this.replicator = replicator
    this.peerId = replicator.peerId
    this.cluster = checkName('options.cluster', options.cluster ?? 'default')
    this.prefix = checkName('options.prefix', options.prefix ?? 'quilt')
    this.servers = options.servers ?? '127.0.0.1:4222'
    this.replicas = options.replicas ?? 1
    this.maxAgeMs = options.maxAgeMs ?? 24 * 3600 * 1000
    this.catchUpTimeoutMs = options.catchUpTimeoutMs ?? 30000
    // A pull that a dead NATS node held is noticed after two missed idle
    // heartbeats (expires / 2 each): 5 s instead of the client's 30 s.
    this.pullExpiresMs = Math.max(1000, options.pullExpiresMs ?? 5000)
    this.pingHoldMs = options.pingHoldMs ?? 2000
    this.setupTimeoutMs = options.setupTimeoutMs ?? 60000
    this.storedSeq = 0 // stream seq of this peer's last stored publish
    this.consumedSeq = 0 // stream seq this peer's consumer reached
    this._heldPing = null
    this._pingsHeld = new Map()
    this.connectOptions = options.connectOptions ?? {}
    this.knownPeers = new Set((options.peers ?? []).filter((p) => p !== this.peerId))
    this.stream = `QUILT_${this.cluster}`
    this.subjectAll = `${this.prefix}.${this.cluster}.all`
    this.subjectPing = `${this.prefix}.${this.cluster}.ping`
    this.durable = `peer-${this.peerId}`
    this.added = new Set()
    this.ready = false
    this.closed = false
    this._publishing = 0
    this._handed = 0 // first publish attempts handed to NATS
    this._settled = 0 // ... of which stored or failed
    this._retry = []
    this._retryTimer = null
    this.counters = { published: 0, publishedBytes: 0, publishFailures: 0, pings: 0, pingBytes: 0, directed: 0, directedBytes: 0, received: 0, receivedBytes: 0, invalid: 0, caughtUp: 0 }
  }

  /** Counters: published (broadcast frames stored in the stream), publishedBytes, publishFailures, directed(Bytes), received(Bytes), invalid, caughtUp (messages replayed before the peers were added). */
  stats () {
    return { ...this.counters, peers: [...this.added].sort((a, b) => a - b), ready: this.ready }
  }

  subjectTo (peerId) {
    return `${this.prefix}.${this.cluster}.to.${peerId}`
  }

  async _start () {
    const { transport, js } = await loadClient()
    this._lib = { transport, js }
    this.nc = await transport.connect({
      servers: this.servers,
      name: `quilt-${this.cluster}-${this.peerId}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      pingInterval: 2000,
      ...this.connectOptions
    })
    this.headers = transport.headers
    // A frame NATS refuses as too large could never be delivered, not even
    // by the gap protocol: frames must fit the server's max_payload.
    const maxPayload = this.nc.info && this.nc.info.max_payload
    const maxFrame = (this.replicator._options && this.replicator._options.maxFrameBytes) || DEFAULT_MAX_FRAME
    if (maxPayload && maxFrame > maxPayload - PAYLOAD_MARGIN) {
      await this.nc.close().catch(() => {})
      const err = new RangeError(`the NATS servers take messages of at most ${maxPayload} bytes: create the Replicator with maxFrameBytes <= ${maxPayload - PAYLOAD_MARGIN} (it is ${maxFrame})`)
      err.code = 'E_ARG'
      throw err
    }
    // The JetStream API has no leader for a few seconds after a NATS node
    // is lost: every setup step is retried until setupTimeoutMs.
    const deadline = Date.now() + this.setupTimeoutMs
    const retry = async (what, fn) => {
      for (;;) {
        try {
          return await fn()
        } catch (e) {
          if (this.closed || Date.now() > deadline) throw e
          debug('peer %d: %s failed, retrying: %s', this.peerId, what, e && e.message)
          await new Promise((resolve) => setTimeout(resolve, 500))
        }
      }
    }
    const jsm = await retry('jetstream', () => js.jetstreamManager(this.nc))
    const cfg = {
      name: this.stream,
      subjects: [this.subjectAll],
      storage: js.StorageType.File,
      num_replicas: this.replicas,
      max_age: this.maxAgeMs * NANOS_PER_MS
    }
    const si = await retry('stream', async () => {
      try {
        await jsm.streams.add(cfg)
      } catch (e) {
        // It exists with other settings (another version of the app): use it.
      }
      return jsm.streams.info(this.stream)
    })
    const target = si.state.last_seq
    await retry('consumer', async () => {
      try {
        await jsm.consumers.add(this.stream, {
          durable_name: this.durable,
          ack_policy: js.AckPolicy.Explicit,
          deliver_policy: js.DeliverPolicy.All,
          filter_subject: this.subjectAll,
          max_ack_pending: 20000,
          num_replicas: this.replicas
        })
      } catch (e) {
        // It exists: resume where it stopped.
      }
      return jsm.consumers.info(this.stream, this.durable)
    })
    this.js = js.jetstream(this.nc)
    this.directedSub = this.nc.subscribe(this.subjectTo(this.peerId), {
      callback: (err, m) => { if (!err) this._onDirected(m) }
    })
    const consumer = await retry('consumers.get', () => this.js.consumers.get(this.stream, this.durable))
    this.messages = await consumer.consume({ max_messages: 512, expires: this.pullExpiresMs })
    let doneCatchUp
    const caughtUp = new Promise((resolve) => { doneCatchUp = resolve })
    const ci = await retry('consumer info', () => consumer.info())
    if (ci.num_pending + ci.num_ack_pending === 0 || ci.delivered.stream_seq >= target) doneCatchUp()
    this.consumedSeq = Math.max(this.consumedSeq, ci.ack_floor.stream_seq)
    ;(async () => {
      for await (const st of this.messages.status()) {
        if (st.type !== 'heartbeat' && st.type !== 'next') debug('peer %d: consumer %s %j', this.peerId, st.type, st)
      }
    })().catch(() => {})
    this._consuming = (async () => {
      for await (const m of this.messages) {
        this._onStream(m)
        if (!this.ready && m.seq >= target) doneCatchUp()
      }
    })().catch((e) => this._error(e))
    let timer
    await Promise.race([caughtUp, new Promise((resolve) => { timer = setTimeout(resolve, this.catchUpTimeoutMs) })])
    clearTimeout(timer)
    if (this.closed) return
    this.ready = true
    this.replicator.addBroadcast((frame, kind) => {
      if (kind === 'ping') this._publishPing(frame)
      else this._publish(frame)
    })
    this.pingSub = this.nc.subscribe(this.subjectPing, {
      callback: (err, m) => { if (!err) this._onPing(m) }
    })
    this._pingTimer = setInterval(() => {
      this._releasePings()
      if (this._heldPing && Date.now() - this._heldPing.since >= this.pingHoldMs) this._sendPing(this._heldPing.frame)
    }, 100)
    this._pingTimer.unref()
    for (const p of this.knownPeers) this._add(p)
    // Announce: peers that do not know this one add it (transport-level,
    // not a frame: a forged announce can only add a peer id that never
    // answers, which counts in the size of a quorum; pass `peers` and a
    // clusterKey to keep a cluster's membership exact).
    this._announce = this.nc.subscribe(`${this.prefix}.${this.cluster}.hello`, {
      callback: (err, m) => {
        if (err) return
        const id = Number(m.headers && m.headers.get(HELLO))
        if (Number.isInteger(id) && id > 0 && id !== this.peerId && id <= 0xffffffff) {
          this._add(id)
        }
      }
    })
    this.nc.publish(`${this.prefix}.${this.cluster}.hello`, new Uint8Array(0), { headers: this._hello() })
    this._statusLoop = (async () => {
      for await (const s of this.nc.status()) {
        debug('peer %d: connection %s %s', this.peerId, s.type, s.server || s.data || '')
      }
    })().catch(() => {})
  }

  _hello () {
    const h = this.headers()
    h.set(HELLO, String(this.peerId))
    return h
  }

  _add (id) {
    if (this.added.has(id) || this.closed || id === this.peerId) return
    this.added.add(id)
    const subject = this.subjectTo(id)
    try {
      this.replicator.addPeer(id, (frame) => {
        if (this.closed || this.nc.isClosed()) return
        this.counters.directed++
        this.counters.directedBytes += frame.length
        this.nc.publish(subject, frame)
      })
    } catch (e) {
      this.added.delete(id)
      this._error(e)
    }
  }

  _apply (frame) {
    let ok = false
    try {
      this.replicator.applyPatches(frame)
      ok = true
    } catch (e) {
      // E_FRAME/E_AUTH/E_VERSION: not a frame of this cluster (counted by
      // the replicator too). E_DRIFT: a valid frame refused for now, asked
      // for again by the gap protocol. E_CLOSED: shutting down.
      if (e && e.code !== 'E_DRIFT' && e.code !== 'E_CLOSED') this.counters.invalid++
    }
    if (ok && this.ready) {
      const sender = frameSender(frame)
      if (sender !== 0 && sender !== this.peerId) this._add(sender)
    }
  }

  _onStream (m) {
    try {
      const frame = m.data
      this.counters.received++
      this.counters.receivedBytes += frame.length
      if (!this.ready) this.counters.caughtUp++
      if (frameSender(frame) !== this.peerId) this._apply(frame)
      if (m.seq > this.consumedSeq) this.consumedSeq = m.seq
      this._releasePings()
    } finally {
      try { m.ack() } catch {}
    }
  }

  _onDirected (m) {
    this.counters.received++
    this.counters.receivedBytes += m.data.length
    this._apply(m.data)
  }

  /**
   * Pings on core NATS: only the latest matters, so they are not stored,
   * and they keep flowing (acks, lost tails) while a consumer recovers from
   * the loss of a NATS node. A ping must not overtake the patches it
   * announces (receivers would ask peers for what the stream is about to
   * deliver): it waits until the publishes handed before it have an outcome
   * (stored, or failed and queued for retry; at most pingHoldMs) and carries the stream seq they reached in a header;
   * receivers hold it until their consumer got that far (at most pingHoldMs
   * too: past that, a stalled consumer is bypassed by the gap protocol).
   */
  _publishPing (frame) {
    if (this.closed || this.nc.isClosed()) return
    if (this._settled < this._handed) {
      const since = this._heldPing ? this._heldPing.since : Date.now()
      this._heldPing = { frame, needed: this._handed, since }
      if (Date.now() - since < this.pingHoldMs) return
    }
    this._sendPing(frame)
  }

  _sendPing (frame) {
    this._heldPing = null
    if (this.closed || this.nc.isClosed()) return
    this.counters.pings++
    this.counters.pingBytes += frame.length
    const h = this.headers()
    // What the ping shows came from the stream up to here: this peer's own
    // stored publishes, and what its consumer delivered from others.
    h.set(STREAM_SEQ, String(Math.max(this.storedSeq, this.consumedSeq)))
    this.nc.publish(this.subjectPing, frame, { headers: h })
  }

  _onPing (m) {
    if (frameSender(m.data) === this.peerId) return
    const want = Number(m.headers && m.headers.get(STREAM_SEQ)) || 0
    if (want <= this.consumedSeq) return this._onDirected(m)
    // A newer ping replaces a held one but keeps its age: a stalled consumer
    // must not hold pings forever.
    const sender = frameSender(m.data)
    const held = this._pingsHeld.get(sender)
    this._pingsHeld.set(sender, { m, want, since: held ? held.since : Date.now() })
  }

  /** Apply held pings whose patches arrived, or that waited pingHoldMs. */
  _releasePings () {
    if (this._pingsHeld.size === 0) return
    const now = Date.now()
    for (const [sender, p] of this._pingsHeld) {
      if (p.want <= this.consumedSeq || now - p.since >= this.pingHoldMs) {
        this._pingsHeld.delete(sender)
        this._onDirected(p.m)
      }
    }
  }

  /** The broadcast send: one JetStream publish per frame, retried with backoff when NATS cannot store it now. */
  _publish (frame, firstFailure = 0) {
    if (this.closed) return
    this._publishing++
    // First attempts are counted: a ping waits for those handed before it.
    const first = firstFailure === 0
    if (first) this._handed++
    const settle = () => {
      if (!first) return
      this._settled++
      if (this._heldPing && this._settled >= this._heldPing.needed) this._sendPing(this._heldPing.frame)
    }
    this.js.publish(this.subjectAll, frame, { timeout: 5000 }).then((ack) => {
      this._publishing--
      this.counters.published++
      this.counters.publishedBytes += frame.length
      if (ack && ack.seq > this.storedSeq) this.storedSeq = ack.seq
      settle()
    }, (err) => {
      this._publishing--
      settle()
      if (this.counters.publishFailures++ % 100 === 0) debug('peer %d: publish failed (%d so far): %s', this.peerId, this.counters.publishFailures, err && err.message)
      const since = firstFailure || Date.now()
      if (Date.now() - since < PUBLISH_RETRY_MS && this._retry.length < PUBLISH_QUEUE_LIMIT) {
        this._retry.push({ frame, since })
        if (!this._retryTimer && !this.closed) {
          this._retryTimer = setTimeout(() => {
            this._retryTimer = null
            const again = this._retry
            this._retry = []
            for (const r of again) this._publish(r.frame, r.since)
          }, 500)
        }
      }
      // Beyond that the gap protocol repairs it: pings show the seqs exist.
    })
  }

  _error (e) {
    if (this.closed) return
    if (this.replicator.listenerCount('error') > 0) this.replicator.emit('error', e)
  }

  /** Publishes still waiting for the stream's acknowledgement (or a retry). */
  pending () {
    return this._publishing + this._retry.length
  }

  /** Wait (bounded) for publishes in flight, then stop consuming and close the connection. Close the replicator first so its last frames go out. */
  async close ({ timeoutMs = 5000 } = {}) {
    if (this.closed) return
    const until = Date.now() + timeoutMs
    while (this.pending() > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 20))
    this.closed = true
    if (this._retryTimer) clearTimeout(this._retryTimer)
    if (this._pingTimer) clearInterval(this._pingTimer)
    try { if (this.messages) this.messages.stop() } catch {}
    try { if (!this.replicator._closed) this.replicator.addBroadcast(null) } catch {}
    for (const id of this.added) { try { this.replicator.removePeer(id) } catch {} }
    if (this.nc && !this.nc.isClosed()) await this.nc.drain().catch(() => this.nc.close())
    await this._consuming?.catch(() => {})
  }
}

module.exports = { NatsTransport, frameSender }
