// Public types of quilt-sqlite (hand-written: the class is a JS wrapper over
// the generated native binding, see docs/design.md). Contract: API.md.

/** Every error code a quilt call can throw or report through `'error'`. */
export type QuiltErrorCode =
  | 'E_ARG'
  | 'E_SCHEMA'
  | 'E_FRAME'
  | 'E_AUTH'
  | 'E_DRIFT'
  | 'E_VERSION'
  | 'E_READONLY'
  | 'E_SNAPSHOT'
  | 'E_STALE'
  | 'E_CLOSED'
  | 'E_SQLITE'
  /** Reported through `'error'`: peers purged a range this peer lacks; restore from a snapshot. */
  | 'E_GONE'
  /** Reported through `'error'`: the cluster holds writes of this peer that its file lacks. */
  | 'E_SEQ'

/** An error with a string `code`. Bad arguments are `TypeError`/`RangeError` with `code: 'E_ARG'`. */
export declare class QuiltError extends Error {
  constructor(code: QuiltErrorCode, message: string)
  readonly code: QuiltErrorCode
  /** Set to 503 on `E_STALE` errors from `readYourWrites()`. */
  status?: number
}

/** A value a column can hold. Integers above 2^53 come back as `bigint`. */
export type SqlValue = null | number | bigint | string | boolean | Buffer | Uint8Array

/** A row: column name to value. `undefined` means "not given"; `null` writes NULL. */
export type Row = Record<string, SqlValue | undefined>

/** Object-store settings; any other object_store key passes through. */
export interface StoreOptions {
  endpoint?: string
  region?: string
  accessKeyId?: string
  secretAccessKey?: string
  sessionToken?: string
  allowHttp?: boolean | string
  [key: string]: string | boolean | undefined
}

export interface SnapshotOptions {
  /** `file:///dir`, `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`. */
  url: string
  /** Only the leader takes scheduled snapshots, every `intervalMs`. */
  intervalMs?: number
  options?: StoreOptions
  /** Pruning: keep the newest `keep` snapshots (default 7)... */
  keep?: number
  /** ...and every snapshot younger than `keepMs` (default 0). */
  keepMs?: number
}

export interface ReplicatorOptions {
  /** SQLite file, or `':memory:'`. */
  path: string
  /** u32 > 0. Default: the id stored in the database, else a random one chosen once and kept. */
  peerId?: number
  /** Every frame carries an HMAC-SHA256 tag; frames without a valid one are refused (`E_AUTH`). */
  clusterKey?: string | Buffer | Uint8Array
  /** Ping and gap-detection period (default 1000). `0`: only when `tick()` is called. */
  heartbeatMs?: number
  /** Patches older than this may be purged (default 25 h), never before the last snapshot covers them. */
  retentionMs?: number
  /** Frames stamped further than this ahead of the local clock are refused with `E_DRIFT` (default 60000). */
  maxDriftMs?: number
  /** Outgoing frames are split to stay under this; larger incoming frames are refused (default 1048576; ~1200 for UDP). */
  maxFrameBytes?: number
  /** Snapshots to object storage. */
  snapshot?: SnapshotOptions
}

export interface Migration {
  up: string
  down?: string
  /** Column renames this step makes: `{ table: { oldName: 'newName' } }`. Kept patches and older peers follow them. */
  renames?: Record<string, Record<string, string>>
}

export interface ApplyResult {
  /** Patches applied to the local tables. */
  applied: number
  /** New patches stored (applied or kept for a later schema). */
  stored: number
  /** Patches already held. */
  duplicates: number
  /** Missing seq ranges requested because of this frame. */
  requested: number
}

export interface PeerStatus {
  peerId: number
  /** A `send` callback is registered. */
  connected: boolean
  /** Highest seq of this peer known to exist. */
  lastSeq: number
  /** Every seq up to this one is held here. */
  contiguousSeq: number
  /** Seqs up to `lastSeq` not held here. */
  missing: number
  /** Unix ms when a frame from this peer last arrived, or null. */
  lastSeenMs: number | null
}

export interface Status {
  peerId: number
  schemaVersion: number
  seq: number
  isLeader: boolean
  peers: PeerStatus[]
  /** Kept patches waiting for a schema that can hold them. */
  pending: number
}

export interface SnapshotInfo {
  url: string
  id: string
  /** Stored (compressed) bytes. */
  bytes: number
  /** Database bytes. */
  size: number
  /** sha256 of the stored object, hex. */
  sha256: string
  /** Highest contiguous seq per origin peer id. */
  seqVector: Record<string, number>
  schemaVersion: number
  /** Unix ms. */
  createdAt: number
  /** The peer that took the snapshot (after a restore: the restored database's new id). */
  peerId: number
}

export interface RestoreInfo extends SnapshotInfo {
  /** The peer that took the snapshot. */
  snapshotPeerId: number
}

export interface RestoreOptions {
  /** Snapshot URL prefix (as in `snapshot.url`). */
  from: string
  /** Database file to write. */
  path: string
  options?: StoreOptions
  /** Replace an existing file (default false: refuse with `E_SNAPSHOT`). */
  overwrite?: boolean
  /** A snapshot id; default the latest. */
  snapshot?: string
  onProgress?: (p: SnapshotProgress) => void
}

export interface SnapshotProgress {
  bytesDone: number
  bytesTotal: number
}

export interface ReadYourWritesOptions {
  /** Request header carrying the token (default `'x-quilt-token'`). */
  header?: string
  /** Default 5000. On timeout `next(err)` with `err.code === 'E_STALE'`, `err.status === 503`. */
  timeoutMs?: number
}

export interface CloseOptions {
  /** How long to wait for peers to acknowledge this peer's patches (default 5000). */
  timeoutMs?: number
}

/** Connect/Express middleware. */
export type Middleware = (
  req: { headers: Record<string, string | string[] | undefined> },
  res: unknown,
  next: (err?: unknown) => void
) => void

export interface ReplicatorEvents {
  /** A newly added peer is caught up. */
  synced: [peerId: number]
  /** A snapshot finished. */
  snapshot: [info: SnapshotInfo]
  /** Progress of a long snapshot. */
  'snapshot:progress': [progress: SnapshotProgress]
  /** Anything that did not throw: E_GONE, E_SEQ, kept patches waiting for a schema (E_SCHEMA), failed scheduled snapshots. */
  error: [err: QuiltError]
}

export declare class Replicator {
  /** Opens (or creates) the database. */
  constructor(options: ReplicatorOptions)
  /** This replicator's peer id. */
  readonly peerId: number

  /** Brings the schema to `migrations.length`, forward or backward, in one transaction. */
  migrate(migrations: Migration[]): { from: number; to: number }

  /** Writes a patch and applies it in one transaction; returns the token `"<peerId>.<seq>"`. */
  upsert(table: string, row: Row): string
  /** Same for many rows, one transaction; returns the last token. */
  upsertMany(table: string, rows: Row[]): string
  /** A tombstone: sets `deletedAt` to now. */
  delete(table: string, pk: Row): string

  /** Registers a peer (again after a reconnect: the new `send` replaces the old one). */
  addPeer(peerId: number, send: (frame: Buffer) => void): void
  removePeer(peerId: number): void
  /** Takes a frame from any peer; throws (`E_FRAME`, `E_AUTH`, `E_DRIFT`, `E_VERSION`) and changes nothing when it is not valid. */
  applyPatches(frame: Buffer | Uint8Array): ApplyResult
  /** Runs one heartbeat now: ping, gap detection, retention. */
  tick(): void
  /** Hands queued outgoing patches to `send` now. */
  flush(): void

  /** Read-only statement; all rows. */
  all<T = Record<string, SqlValue>>(sql: string, params?: SqlValue[] | Record<string, SqlValue>): T[]
  /** Read-only statement; the first row or undefined. */
  get<T = Record<string, SqlValue>>(sql: string, params?: SqlValue[] | Record<string, SqlValue>): T | undefined
  /** Resolves true once the write named by `token` is applied here, false on timeout (default 5000). */
  waitFor(token: string, timeoutMs?: number): Promise<boolean>
  /** Express/Connect middleware built on `waitFor`. */
  readYourWrites(options?: ReadYourWritesOptions): Middleware

  status(): Status
  /** The lowest live peer id is leader. */
  isLeader(): boolean
  /** OpenMetrics text. */
  metrics(): string

  /** A consistent, compressed snapshot to `options.snapshot.url` (or `opts.url`). */
  snapshot(opts?: { url?: string; options?: StoreOptions }): Promise<SnapshotInfo>
  /** Fetches the latest (or a given) snapshot, checks its sha256 and writes `path`. */
  static restore(options: RestoreOptions): Promise<RestoreInfo>

  /** Flushes, waits (bounded) until peers acknowledged this peer's patches, closes. Idempotent. */
  close(options?: CloseOptions): Promise<void>
  [Symbol.asyncDispose](): Promise<void>

  on<E extends keyof ReplicatorEvents>(event: E, listener: (...args: ReplicatorEvents[E]) => void): this
  off<E extends keyof ReplicatorEvents>(event: E, listener: (...args: ReplicatorEvents[E]) => void): this
  once<E extends keyof ReplicatorEvents>(event: E, listener: (...args: ReplicatorEvents[E]) => void): this
}

declare const _default: { Replicator: typeof Replicator; QuiltError: typeof QuiltError }
export default _default
