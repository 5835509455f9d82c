// Public types of quilt-sqlite (hand-written: the class is a JS wrapper over
// the generated native binding, see docs/design.md). Contract: API.md.

/**
 * Every error code a quilt call can throw or report through the `'error'` event.
 * Thrown errors are `Error` objects (`TypeError`/`RangeError` for bad arguments)
 * with one of these in `code`.
 */
export type QuiltErrorCode =
  /** A bad argument (thrown as `TypeError` or `RangeError`). */
  | 'E_ARG'
  /** Unknown table or column, a replicated table missing what it needs, or (as an event) patches kept for a schema this peer lacks. */
  | 'E_SCHEMA'
  /** A malformed, truncated or oversize frame; nothing was changed. */
  | 'E_FRAME'
  /** A frame without a valid HMAC-SHA256 tag for the `clusterKey`; nothing was changed. */
  | 'E_AUTH'
  /** A frame stamped more than `maxDriftMs` ahead of the local clock; refused now, re-requested later. */
  | 'E_DRIFT'
  /** A frame of a protocol version this build does not speak. */
  | 'E_VERSION'
  /** A statement given to `all()`/`get()` that would write, or change the connection: any write, `ATTACH`/`DETACH`, `BEGIN`/`COMMIT`/`ROLLBACK`, `SAVEPOINT`/`RELEASE`, `VACUUM`, a PRAGMA that sets something. Nothing ran; writes keep working. Use `upsert`/`delete` to write. */
  | 'E_READONLY'
  /** A snapshot or restore failed (object store, checksum, format, existing file), or the stored object is longer than the manifest's `bytes` or decompresses past its `size` (a damaged or tampered snapshot: restore stops there and writes nothing in place; take a new snapshot). */
  | 'E_SNAPSHOT'
  /** `readYourWrites()`: the token's write did not arrive in time (`status` 503). */
  | 'E_STALE'
  /** A call after `close()`. */
  | 'E_CLOSED'
  /** SQLite itself failed. */
  | 'E_SQLITE'
  /** Reported through `'error'`: peers purged a range this peer lacks; restore it from a snapshot. */
  | 'E_GONE'
  /** Reported through `'error'` (not in API.md's list): the cluster holds writes of this peer that its file lacks (an old copy, or a reused peerId); new writes continue above them and the missing ones are fetched back. */
  | 'E_SEQ'
  | 'E_RETENTION'
  | 'E_LIMIT'
  /** `waitForPeers()` (and `readYourWrites({ quorum })`, as a 503): peers did not show they hold the write in time. */
  | 'E_TIMEOUT'

/** An error with a string `code`. Bad arguments are `TypeError`/`RangeError` with `code: 'E_ARG'`. */
export declare class QuiltError extends Error {
  constructor(code: QuiltErrorCode, message: string, options?: ErrorOptions)
  /** Always `'QuiltError'`. */
  readonly name: string
  /** The stable string code. */
  readonly code: QuiltErrorCode
  /** Set to 503 on `E_STALE` errors from `readYourWrites()`. */
  status?: number
  /** Same as `status` (Express reads either). */
  statusCode?: number
}

/** A value a column can hold. Integers above 2^53 come back as `bigint`. */
export type SqlValue = null | number | bigint | string | boolean | Buffer | Uint8Array

/** A row: column name to value. `undefined` means "not given"; `null` writes NULL. */
export type Row = Record<string, SqlValue | undefined>

/** Object-store settings; any other object_store key passes through. */
export interface StoreOptions {
  /** S3-compatible endpoint, e.g. `http://127.0.0.1:5055` for moto or MinIO. */
  endpoint?: string
  /** S3 region. */
  region?: string
  /** Credentials (else the usual `AWS_*` environment variables). */
  accessKeyId?: string
  secretAccessKey?: string
  sessionToken?: string
  /** Allow a plain-HTTP endpoint. */
  allowHttp?: boolean | string
  /** Any other object_store configuration key, passed through as a string. */
  [key: string]: string | boolean | undefined
}

export interface SnapshotOptions {
  /** `file:///dir`, `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`. */
  url: string
  /** Only the leader takes scheduled snapshots, every `intervalMs` (checked at each heartbeat). Default: no scheduled snapshots. */
  intervalMs?: number
  /** Object-store settings. */
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
  /** Patches older than this may be purged (default 25 h), never before the last snapshot covers them, and never while a known peer (added, not removed) lacks them unless a snapshot anywhere in the cluster covers them. */
  retentionMs?: number
  /** Hard cap: past this age a patch is purged even when a known peer has
   * not acknowledged it (an `'error'` event with code `E_RETENTION` names
   * that peer). Default: none. */
  maxRetentionMs?: number
  /** Cap in bytes on kept patches (patches for tables or columns this
   * peer's schema lacks yet), default 256 MiB; one origin may use a
   * quarter. Past it a patch is not stored (`E_LIMIT` event) and is
   * fetched again after `migrate()`. */
  maxKeptBytes?: number
  /** Frames stamped further than this ahead of the local clock are refused with `E_DRIFT` (default 60000). */
  maxDriftMs?: number
  /** Outgoing frames are split to stay under this; larger incoming frames are refused with `E_FRAME` (default 1048576, at least 256; ~1200 for UDP). */
  maxFrameBytes?: number
  /** Snapshots to object storage (`snapshot()`, scheduled snapshots on the leader). */
  snapshot?: SnapshotOptions
}

/** One schema step; step `i` brings the schema from version `i` to `i + 1`. */
export interface Migration {
  /** SQL run forward (may hold several statements). */
  up: string
  /** SQL run backward; stored, so an older binary can run it when it opens a newer file with fewer migrations. */
  down?: string
  /** Column renames this step makes: `{ table: { oldName: 'newName' } }`. Kept patches and older peers follow them. */
  renames?: Record<string, Record<string, string>>
}

/** What `applyPatches()` did with a frame. */
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

/** What this replicator knows of one other peer (connected now, or an origin of patches it holds). */
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
  /** Highest contiguous seq of THIS peer's writes that peer acknowledged
   * in its pings (non-enumerable). */
  readonly ackedSeq: number
}

/** `status()`. */
export interface Status {
  /** This replicator's peer id. */
  peerId: number
  /** `migrations.length` of the last `migrate()`. */
  schemaVersion: number
  /** Seq of this peer's last local write. */
  seq: number
  /** Lowest live peer id. */
  isLeader: boolean
  /** Every other peer known here, sorted by id. */
  peers: PeerStatus[]
  /** Kept patches waiting for a schema that can hold them. */
  pending: number
  /** Patches this peer moved to a re-issued identity (`seq + k * 2^50`)
   * after two versions of one `(peerId, seq)` met: a file restored from an
   * older copy, or two files with one peerId (non-enumerable; see the
   * `E_SEQ` event). */
  readonly reissued: number
}

/** What `snapshot()` resolves to and the `'snapshot'` event carries (the manifest). */
export interface SnapshotInfo {
  /** URL of the stored database object. */
  url: string
  /** Snapshot id: `<created ms, 13 digits>-<peer id hex>`, sorts by time. */
  id: string
  /** Stored (compressed) bytes. */
  bytes: number
  /** Database bytes. */
  size: number
  /** sha256 of the stored object, hex. */
  sha256: string
  /** Highest contiguous seq per origin peer id (keys are peer ids as strings). */
  seqVector: Record<string, number>
  /** Schema version of the copied database. */
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
  /** Database file to write (written to a temp file, then renamed). */
  path: string
  /** Object-store settings. */
  options?: StoreOptions
  /** Replace an existing file (default false: refuse with `E_SNAPSHOT`). */
  overwrite?: boolean
  /** A snapshot id; default the latest. */
  snapshot?: string
  /** Called about every 250 ms with bytes done/total. */
  onProgress?: (p: SnapshotProgress) => void
}

/** Progress of a snapshot or restore. */
export interface SnapshotProgress {
  bytesDone: number
  bytesTotal: number
}

export interface ReadYourWritesOptions {
  /** Request header carrying the token (default `'x-quilt-token'`). */
  header?: string
  /** Default 5000. On timeout `next(err)` with `err.code === 'E_STALE'`, `err.status === 503`. */
  timeoutMs?: number
  /**
   * Hold each response whose `header` the handler set to a token until a
   * quorum of peers holds that write (`waitForPeers(token, 'quorum')`). When
   * they do not in time, and the headers are not sent yet, the response
   * becomes a 503 `{ error: 'E_TIMEOUT', message, token }`.
   */
  quorum?: boolean
  /** Like `quorum`, with any `waitForPeers` options (`true` means `'quorum'`). */
  waitForPeers?: boolean | WaitForPeersLevel | WaitForPeersOptions
}

/** `waitForPeers` levels. */
export type WaitForPeersLevel = 'all' | 'quorum'

/** `waitForPeers(token, options)`: give at most one of `count`, `peers`, `level` (default `level: 'quorum'`). */
export interface WaitForPeersOptions {
  /** This many peers other than this one hold the write. */
  count?: number
  /** Each of these peers holds the write. */
  peers?: number[]
  /** `'all'`: every connected peer; `'quorum'`: a majority of the cluster (this peer and every peer it knows, connected or not), this peer counted when it holds the write. */
  level?: WaitForPeersLevel
  /** Default 5000; then the promise rejects with `E_TIMEOUT`. */
  timeoutMs?: number
  /** Cluster size for `'quorum'` when not every peer is known yet (default: 1 + peers known). */
  clusterSize?: number
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

/** One row a commit changed (`'change'` event). */
export interface Change {
  /** The replicated table. */
  table: string
  /** Primary-key column to value. */
  key: Record<string, SqlValue>
  /** Columns that changed (local writes) or won the merge (remote patches); key columns are in `key`. */
  columns: string[]
  /** Peer id of the writer (this peer's own id for local writes). */
  origin: number
  /** The row was tombstoned (`deletedAt` set to a non-NULL value) or deleted. */
  deleted: boolean
}

/** Parameters of a statement, as better-sqlite3 takes them: values for `?`, one array, or one object for `@x`/`:x`/`$x`. */
export type BindParameters = SqlValue[] | [SqlValue[]] | [Record<string, SqlValue>]

/** What `run()` returns. */
export interface RunResult {
  /** Rows the statement inserted, updated or deleted. */
  changes: number
  /** Rowid of the last inserted row (of any statement on this connection). */
  lastInsertRowid: number | bigint
  /** Session token `"<peerId>.<seq>"` of the last captured patch, or the current one when nothing was captured (for `waitFor`/`readYourWrites`). */
  token: string
}

/**
 * A prepared statement (`replicator.prepare(sql)`), shaped like
 * better-sqlite3's. Writes to replicated tables are captured as patches:
 * one per changed row, holding its key and the columns whose value changed.
 */
export interface Statement<P extends BindParameters = BindParameters, R = Record<string, SqlValue>> {
  /** The SQL text. */
  readonly source: string
  /** True when the statement returns rows. */
  readonly reader: boolean
  /** True when the statement writes nothing. */
  readonly readonly: boolean
  /** Runs to the end, in its own transaction (a savepoint inside `transaction(fn)`). */
  run(...params: P): RunResult
  /** Every row, as objects (`TypeError` for a statement that returns none). */
  all(...params: P): R[]
  /** The first row, or `undefined`. */
  get(...params: P): R | undefined
  /** The rows one by one (read in one native call when iteration starts). */
  iterate(...params: P): IterableIterator<R>
}

/** What `transaction(fn)` returns: calling it runs `fn` in one transaction and returns what `fn` returns. */
export type TransactionFunction<F extends (...args: any[]) => any> = (...args: Parameters<F>) => ReturnType<F>

export interface ReplicatorEvents {
  /** Once per committed local transaction (`upsert`, `upsertMany`, `delete`, a statement, a whole `transaction(fn)`) and once per applied frame that changed rows. Collected only while a listener is registered. */
  change: [changes: Change[]]
  /** A newly added peer is caught up. */
  synced: [peerId: number]
  /** A snapshot finished. */
  snapshot: [info: SnapshotInfo]
  /** Progress of a long snapshot. */
  'snapshot:progress': [progress: SnapshotProgress]
  /** Anything that did not throw, each with what to do (README, Errors): E_GONE (restore from a snapshot), E_SEQ (two versions of one patch identity met: a restored file or a shared peerId; both kept), E_RETENTION (maxRetentionMs purged what a named peer lacked), E_LIMIT (kept-patch cap full: migrate()), kept patches waiting for a schema (E_SCHEMA), failed scheduled snapshots. */
  error: [err: QuiltError]
}

/**
 * A replicated SQLite database. Local calls are synchronous (like
 * better-sqlite3); the transport is yours: register each peer's `send` with
 * `addPeer` and hand every frame you receive to `applyPatches`.
 */
export declare class Replicator {
  /** Opens (or creates) the database. Throws `TypeError`/`RangeError` (`E_ARG`) on bad options, `E_SCHEMA`/`E_SQLITE` when the file cannot be used. */
  constructor(options: ReplicatorOptions)
  /** This replicator's peer id (u32 > 0). */
  readonly peerId: number

  /**
   * Brings the schema to version `migrations.length`, running `up`s forward
   * or stored `down`s backward, in one transaction. Then re-merges kept
   * patches the new schema can hold. Call it before any write.
   */
  migrate(migrations: Migration[]): { from: number; to: number }

  /**
   * Writes one patch and applies it in one SQLite transaction (durable on
   * return). Only the columns present in `row` change; `null` writes NULL.
   * Returns the session token `"<peerId>.<seq>"`. The row must give every
   * primary-key column. Unknown table or column: `E_SCHEMA`.
   */
  upsert(table: string, row: Row): string
  /** Same as `upsert` for many rows in one transaction; returns the last token. */
  upsertMany(table: string, rows: Row[]): string
  /** A tombstone: sets `deletedAt` to now (the table needs that column). `pk` holds the primary-key columns only. SQL `DELETE` is never replicated. */
  delete(table: string, pk: Row): string

  /**
   * Registers a peer (again after a reconnect: the new `send` replaces the
   * old one) and sends it a hello ping. `send` gets binary frames; a `send`
   * that throws is counted and retried later, never fatal.
   */
  addPeer(peerId: number, send: (frame: Buffer) => void): void
  /**
   * Registers (or with `null` removes) one `send` that reaches every peer
   * (pub/sub, a stream, multicast): patches and pings are encoded and handed
   * to it once instead of once per peer. Peers are still added with
   * `addPeer`; their `send` carries directed traffic (hello pings, gap
   * requests and answers). `kind` says what a frame carries: `'patches'`
   * (worth storing for peers that are away) or `'ping'` (worth only its
   * latest copy), so a transport may route them differently.
   */
  addBroadcast(send: ((frame: Buffer, kind: 'patches' | 'ping') => void) | null): void
  /** Forgets a peer's `send`; what it lacks is repaired when it is added again. */
  removePeer(peerId: number): void
  /**
   * Takes a frame from any peer. Before it returns, every valid patch in it
   * is stored and applied in one transaction and the answers (retransmissions,
   * requests for missing ranges) were handed to the `send` callbacks. A frame
   * that is not valid throws (`E_FRAME`, `E_AUTH`, `E_DRIFT`, `E_VERSION`) and
   * changes nothing.
   */
  applyPatches(frame: Buffer | Uint8Array): ApplyResult
  /** Runs one heartbeat now: resend failed sends, gap requests (with backoff counted in heartbeats), pings, retention, scheduled snapshots. */
  tick(): void
  /** Hands queued outgoing patches to `send` now (otherwise they go on the next event-loop turn). */
  flush(): void

  /**
   * Runs every statement of `sql` in one transaction (inside
   * `transaction(fn)`: a savepoint). INSERT/UPDATE/UPSERT on replicated
   * tables are captured as patches; writes to `<t>_patches` and `_quilt_*`
   * tables throw `E_READONLY`; DDL on replicated tables and SQL `DELETE` on
   * them (not captured yet) throw `E_SCHEMA`; `BEGIN`/`SAVEPOINT`, `ATTACH`
   * and PRAGMAs that set something throw `E_ARG`. Tables without a
   * `_patches` twin stay local. Nothing of a statement that throws is kept.
   */
  exec(sql: string): this
  /** Compiles one statement (better-sqlite3's `prepare`); refused statements throw here already. */
  prepare<P extends BindParameters = BindParameters, R = Record<string, SqlValue>>(sql: string): Statement<P, R>
  /**
   * Returns a function that runs `fn` in one SQLite transaction: `upsert`,
   * `upsertMany`, `delete` and statements inside it, across tables, commit
   * together, leave in one frame (when it fits `maxFrameBytes`) and raise one
   * `'change'` event. A throw rolls everything back (a nested call: its
   * savepoint) and nothing of it is sent. `fn` must be synchronous;
   * `tick`, `applyPatches` and `migrate` throw `E_ARG` inside it.
   */
  transaction<F extends (...args: any[]) => any>(fn: F): TransactionFunction<F>
  /** True while a `transaction(fn)` runs. */
  readonly inTransaction: boolean

  /** Runs a read-only statement (`E_READONLY` otherwise, also for `ATTACH`, transaction statements and PRAGMAs that set something); all rows as objects. Parameters: an array for `?`, an object for `@x`/`:x`/`$x`. */
  all<T = Record<string, SqlValue>>(sql: string, params?: SqlValue[] | Record<string, SqlValue>): T[]
  /** Runs a read-only statement; the first row, or `undefined`. */
  get<T = Record<string, SqlValue>>(sql: string, params?: SqlValue[] | Record<string, SqlValue>): T | undefined
  /** Resolves `true` once the write named by `token` is applied here, `false` on timeout (default 5000 ms) or close. Rejects with `TypeError` for a malformed token. */
  waitFor(token: string, timeoutMs?: number): Promise<boolean>
  /**
   * Express/Connect middleware built on `waitFor`: a request whose `header`
   * carries a token waits until that write is applied here. On timeout it
   * calls `next(err)` with `err.code === 'E_STALE'` and `err.status === 503`.
   * A request without a valid token passes straight through.
   */
  readYourWrites(options?: ReadYourWritesOptions): Middleware
  /**
   * Resolves once peers' pings show they hold the write named by `token`
   * (their contiguous seq of its origin reaches it): `'quorum'` (default),
   * `'all'`, a count of other peers, or options. Rejects with `E_TIMEOUT`,
   * `E_CLOSED` on close, `TypeError`/`RangeError` on bad arguments.
   */
  waitForPeers(token: string, options?: WaitForPeersLevel | number | WaitForPeersOptions): Promise<void>

  /** Peer id, schema version, own seq, leadership, what is known of every peer, and kept patches pending. */
  status(): Status
  /** True when this peer has the lowest id among live peers (it takes scheduled snapshots). */
  isLeader(): boolean
  /** OpenMetrics text: peers, lag per origin, frames and bytes in/out, retransmissions, rejected frames by reason, pending patches, last snapshot age. */
  metrics(): string

  /**
   * A consistent, zstd-compressed copy streamed to `options.snapshot.url`
   * (or `opts.url`), with a manifest holding the per-peer seq vector. Emits
   * `'snapshot:progress'` while it runs and `'snapshot'` when done. Fails
   * with `E_SNAPSHOT`.
   */
  snapshot(opts?: { url?: string; options?: StoreOptions }): Promise<SnapshotInfo>
  /**
   * Fetches the latest (or a given) snapshot under `from`, checks its sha256
   * and writes `path` (refusing an existing file unless `overwrite`). The
   * download stops with `E_SNAPSHOT` at the first byte past the manifest's
   * `bytes` (stored) or `size` (decompressed), before anything is moved into
   * place. The file is created 0600 (owner only). The restored database
   * takes a new peer id and then catches up from peers through the normal
   * gap protocol.
   */
  static restore(options: RestoreOptions): Promise<RestoreInfo>

  /** Flushes, waits (bounded by `timeoutMs`, default 5000) until live peers acknowledged this peer's patches, then closes. Idempotent. Any other call after close throws `E_CLOSED`. */
  close(options?: CloseOptions): Promise<void>
  /** `await using r = new Replicator(...)` closes it with the default timeout. */
  [Symbol.asyncDispose](): Promise<void>

  /** Subscribes to an event (the class is a Node `EventEmitter`). `'error'` is only emitted while a listener is registered. */
  on<E extends keyof ReplicatorEvents>(event: E, listener: (...args: ReplicatorEvents[E]) => void): this
  /** Same as `on`. */
  addListener<E extends keyof ReplicatorEvents>(event: E, listener: (...args: ReplicatorEvents[E]) => void): this
  /** Unsubscribes. */
  off<E extends keyof ReplicatorEvents>(event: E, listener: (...args: ReplicatorEvents[E]) => void): this
  /** Same as `off`. */
  removeListener<E extends keyof ReplicatorEvents>(event: E, listener: (...args: ReplicatorEvents[E]) => void): this
  /** Subscribes for one emission. */
  once<E extends keyof ReplicatorEvents>(event: E, listener: (...args: ReplicatorEvents[E]) => void): this
  removeAllListeners(event?: keyof ReplicatorEvents): this
  listenerCount(event: keyof ReplicatorEvents): number
}

declare const _default: { Replicator: typeof Replicator; QuiltError: typeof QuiltError }
export default _default
