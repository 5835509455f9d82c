// Types of quilt-sqlite/nats (lib/nats.js): the NATS JetStream transport.
import type { Replicator } from './index'

export interface NatsTransportOptions {
  /** NATS server URLs or host:port, every node of the NATS cluster (default `'127.0.0.1:4222'`). */
  servers?: string | string[]
  /** Cluster name: the stream is `QUILT_<cluster>` (default `'default'`; letters, digits, `-`, `_`). */
  cluster?: string
  /** Subject prefix: broadcast on `<prefix>.<cluster>.all`, directed on `<prefix>.<cluster>.to.<peerId>` (default `'quilt'`). */
  prefix?: string
  /** Peer ids known in advance; others are added when one of their frames arrives or they announce themselves. */
  peers?: number[]
  /** Stream (and consumer) replicas: 3 on a three-node NATS cluster to survive the loss of one node (default 1). */
  replicas?: number
  /** How long the stream keeps messages (default 24 h); a peer away longer asks its peers for the rest. */
  maxAgeMs?: number
  /** How long connect() retries creating or finding the stream and the consumer (the JetStream API has no leader for a few seconds after a NATS node is lost; default 60000). */
  setupTimeoutMs?: number
  /** Longest wait for the stream replay before peers are added anyway (default 30000). */
  catchUpTimeoutMs?: number
  /** How long a ping may wait for the patches it announces (sender: until they are stored; receiver: until its consumer got them) before it goes anyway (default 2000). */
  pingHoldMs?: number
  /** Pull expiry of the consumer; a pull a dead NATS node held is noticed after this (default 5000, at least 1000). */
  pullExpiresMs?: number
  /** Passed to `connect()` of `@nats-io/transport-node` (user, pass, token, tls...). */
  connectOptions?: Record<string, unknown>
}

export interface NatsTransportStats {
  /** Broadcast frames stored in the stream, and their bytes. */
  published: number
  publishedBytes: number
  /** Publishes NATS refused or did not acknowledge in time (each retried every 500 ms for up to a minute). */
  publishFailures: number
  /** Pings (core NATS, once for all peers, not stored), and their bytes. */
  pings: number
  pingBytes: number
  /** Directed frames (core NATS, not stored), and their bytes. */
  directed: number
  directedBytes: number
  /** Messages taken from the stream and the directed subject. */
  received: number
  receivedBytes: number
  /** Messages that were not valid frames for this cluster (also in `metrics()`, `quilt_rejected_frames_total`): skipped. */
  invalid: number
  /** Stream messages replayed before the peers were added at connect. */
  caughtUp: number
  /** Peers added so far. */
  peers: number[]
  /** The replay at connect is done. */
  ready: boolean
}

/**
 * NATS JetStream transport: one stream per cluster, a durable consumer per
 * peer, patches and pings published once (`addBroadcast`), directed traffic
 * on per-peer subjects. Needs `@nats-io/transport-node` and `@nats-io/jetstream`.
 */
export declare class NatsTransport {
  /** Connect, replay the stream from this peer's durable consumer, then add the peers. */
  static connect(replicator: Replicator, options?: NatsTransportOptions): Promise<NatsTransport>
  readonly peerId: number
  readonly stream: string
  readonly subjectAll: string
  stats(): NatsTransportStats
  /** Publishes not yet acknowledged by the stream. */
  pending(): number
  /** Waits (bounded) for publishes in flight, then closes. Close the replicator first. */
  close(options?: { timeoutMs?: number }): Promise<void>
}

/** The sender peer id in a frame's header (0 when it is too short). */
export declare function frameSender(frame: Uint8Array): number
