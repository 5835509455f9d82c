// A typed use of every public member; checked by `tsc --noEmit --strict`.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { NatsTransport, frameSender, type NatsTransportStats } from '../../nats'
import quilt, { Replicator, QuiltError, type QuiltErrorCode, type Status, type SnapshotInfo, type Migration } from '../../index'

async function main (): Promise<void> {
  const r = new Replicator({
    path: ':memory:',
    peerId: 1,
    clusterKey: 'secret',
    heartbeatMs: 0,
    retentionMs: 3600_000,
    maxDriftMs: 60_000,
    maxFrameBytes: 1200,
    snapshot: { url: 'file:///tmp/quilt-snaps', intervalMs: 60_000, options: { region: 'us-east-1', allowHttp: true }, keep: 3, keepMs: 0 }
  })
  const id: number = r.peerId
  const m: { from: number, to: number } = r.migrate([{ up: 'CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)', down: 'DROP TABLE t', renames: { t: { a: 'b' } } }])
  const token: string = r.upsert('t', { id: 1, v: null, big: 10n, blob: Buffer.from('x'), skipped: undefined })
  r.upsertMany('t', [{ id: 2 }, { id: 3, v: 'x' }])
  r.delete('t', { id: 1 })
  r.addPeer(2, (frame: Buffer) => { void frame.length })
  r.removePeer(2)
  const res = r.applyPatches(new Uint8Array(0))
  const n: number = res.applied + res.stored + res.duplicates + res.requested
  r.tick()
  r.flush()
  const rows = r.all<{ id: number, v: string | null }>('SELECT id, v FROM t WHERE id > ?', [0])
  const one = r.get('SELECT * FROM t WHERE id = @id', { id: 1 })
  const ok: boolean = await r.waitFor(token, 100)
  const mw = r.readYourWrites({ header: 'x-quilt-token', timeoutMs: 100 })
  r.addBroadcast((frame: Buffer, kind: 'patches' | 'ping') => { void frame.length; void kind })
  r.addBroadcast(null)
  await r.waitForPeers(token, 'quorum')
  await r.waitForPeers(token, 2)
  await r.waitForPeers(token, { peers: [2, 3], timeoutMs: 100 })
  await r.waitForPeers(token, { level: 'all', clusterSize: 3 })
  const mwq = r.readYourWrites({ quorum: true, waitForPeers: { count: 1, timeoutMs: 50 } })
  void mwq
  const acked: number = r.status().peers[0].ackedSeq
  const nats: NatsTransport = await NatsTransport.connect(r, { servers: ['127.0.0.1:4222'], cluster: 'c', peers: [2], replicas: 3, maxAgeMs: 3600_000, pingHoldMs: 2000, setupTimeoutMs: 1000, connectOptions: { user: 'u' } })
  const ns: NatsTransportStats = nats.stats()
  const sent: number = ns.publishedBytes + ns.pingBytes + ns.directedBytes + ns.invalid + nats.pending() + frameSender(new Uint8Array(9))
  void sent
  await nats.close({ timeoutMs: 100 })
  void acked
  mw({ headers: {} }, {}, (err?: unknown) => { void err })
  // The middleware takes a plain node:http request (what Express passes on).
  const httpMw: (req: IncomingMessage, res: ServerResponse, next: (err?: any) => void) => void = mw
  void httpMw
  const s: Status = r.status()
  const lead: boolean = r.isLeader() && s.isLeader
  const text: string = r.metrics()
  r.on('synced', (peer: number) => { void peer })
  r.on('snapshot', (info: SnapshotInfo) => { void info.sha256 })
  r.on('snapshot:progress', (p) => { void (p.bytesDone / p.bytesTotal) })
  const onError = (e: QuiltError): void => { const c: QuiltErrorCode = e.code; void c }
  r.on('error', onError)
  r.off('error', onError)
  r.once('synced', (peer) => { const p: number = peer; void p })
  r.addListener('error', onError)
  r.removeListener('error', onError)
  const listeners: number = r.listenerCount('snapshot')
  r.removeAllListeners('synced').removeAllListeners()
  // @ts-expect-error: not an event of Replicator
  r.on('bogus', () => {})
  // @ts-expect-error: 'synced' carries a peer id, not a string
  r.on('synced', (peer: string) => { void peer })
  const err = new QuiltError('E_GONE', 'purged', { cause: new Error('x') })
  const stale: number | undefined = err.status ?? err.statusCode
  // @ts-expect-error: not an error code
  const bad: QuiltErrorCode = 'E_NOPE'
  const steps: Migration[] = [{ up: 'ALTER TABLE t RENAME COLUMN v TO w', renames: { t: { v: 'w' } } }]
  // @ts-expect-error: renames map old column names to new ones (strings)
  const badSteps: Migration[] = [{ up: '', renames: { t: { v: 1 } } }]
  const info: SnapshotInfo = await r.snapshot()
  const restored = await Replicator.restore({ from: info.url, path: '/tmp/x.db', overwrite: true, snapshot: info.id, onProgress: (p) => { void p.bytesTotal } })
  const newId: number = restored.peerId + restored.snapshotPeerId
  await r.close({ timeoutMs: 1000 })
  await r[Symbol.asyncDispose]()
  void [id, m, n, rows, one, ok, lead, text, newId, quilt.Replicator, quilt.QuiltError, listeners, stale, bad, steps, badSteps]
}

void main
