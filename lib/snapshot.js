'use strict'
// Snapshots: the native side copies (VACUUM INTO), compresses (zstd) and
// streams to object storage on tokio; this side captures the seq vector,
// reports progress and events, and records what the snapshot covers so
// retention never purges beyond it.
const os = require('node:os')
const nodePath = require('node:path')
const crypto = require('node:crypto')
const binding = require('../binding.js')
const { make, typeError } = require('./errors.js')

let nextJob = 1
const PROGRESS_MS = 250

function storeOptions (o) {
  if (o === undefined || o === null) return undefined
  if (typeof o !== 'object') throw typeError('snapshot options must be an object')
  const out = {}
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined || v === null) continue
    out[k] = String(v)
  }
  return out
}

function info (json) {
  const { manifest: m, url, peerId } = JSON.parse(json)
  const seqVector = {}
  for (const [k, v] of Object.entries(m.seqVector)) seqVector[k] = v
  const out = {
    url,
    id: m.id,
    bytes: m.bytes,
    size: m.size,
    sha256: m.sha256,
    seqVector,
    schemaVersion: m.schemaVersion,
    createdAt: m.createdAt,
    peerId: m.peerId
  }
  if (peerId !== undefined) {
    out.snapshotPeerId = m.peerId
    out.peerId = peerId
  }
  return out
}

function watch (job, onProgress) {
  if (!onProgress) return () => {}
  let last = -1
  const t = setInterval(() => {
    const p = binding.snapshotProgress(job)
    if (p.length === 2 && p[0] !== last) {
      last = p[0]
      onProgress({ bytesDone: p[0], bytesTotal: p[1] })
    }
  }, PROGRESS_MS)
  t.unref()
  return () => clearInterval(t)
}

async function take (r, opts = {}) {
  if (r._snapshotting) return r._snapshotting
  const cfg = r._options.snapshot || {}
  const url = (opts && opts.url) || cfg.url
  if (typeof url !== 'string' || url.length === 0) {
    throw make('E_SNAPSHOT', 'Error', 'snapshot(): no snapshot url; set options.snapshot.url')
  }
  const options = storeOptions((opts && opts.options) || cfg.options)
  const keep = cfg.keep ?? 7
  const keepMs = cfg.keepMs ?? 0
  const job = nextJob++
  const suffix = crypto.randomBytes(6).toString('hex')
  const base = r._path === ':memory:' ? nodePath.join(os.tmpdir(), `quilt-mem-${suffix}.db`) : r._path
  const tempSource = nodePath.join(os.tmpdir(), `quilt-mem-${suffix}.db`)
  const work = `${base}.quilt-snap-${suffix}`
  r._snapshotting = (async () => {
    const prep = r._native.prepareSnapshot(tempSource)
    const stop = watch(job, (p) => r.emit('snapshot:progress', p))
    try {
      const json = await binding.snapshotUpload(job, prep, url, options, work, keep, keepMs)
      const result = info(json)
      // Always end with a 100% report, so short snapshots report too.
      r.emit('snapshot:progress', { bytesDone: result.size, bytesTotal: result.size })
      if (!r._closed) r._native.recordSnapshot(prep.seqVector, prep.createdAt)
      r.emit('snapshot', result)
      return result
    } finally {
      stop()
    }
  })()
  try {
    return await r._snapshotting
  } finally {
    r._snapshotting = null
  }
}

/**
 * `opts` goes to the native side as is: it checks `from`, `path`,
 * `overwrite` and `snapshot`/`id`. Read here: `onProgress` and the store
 * `options` (turned into strings).
 */
async function restore (opts) {
  const onProgress = typeof opts?.onProgress === 'function' ? opts.onProgress : null
  const options = storeOptions(opts?.options)
  const job = nextJob++
  const stop = watch(job, onProgress)
  try {
    const result = info(await binding.restoreSnapshot(job, opts, options))
    if (onProgress) onProgress({ bytesDone: result.bytes, bytesTotal: result.bytes })
    return result
  } finally {
    stop()
  }
}

async function list (url, options) {
  const all = JSON.parse(await binding.listSnapshots(url, storeOptions(options)))
  return all.map((m) => info(JSON.stringify({ manifest: m, url: `${url.replace(/\/$/, '')}/${m.object}` })))
}

module.exports = { take, restore, list }
