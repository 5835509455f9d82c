'use strict'
// better-sqlite3-shaped SQL on a replicator: `prepare(sql)` returns a
// `Statement` (`run`/`all`/`get`/`iterate`), `transaction(fn)` a function
// that runs `fn` in one transaction. Writes to replicated tables are
// captured as patches natively (src/core/engine/capture.rs); this file only
// shapes arguments and results.
const { typeError } = require('./errors.js')
const { paramPacker, packParams, cellTags: { NUMBER, TEXT } } = require('./rows.js')

/**
 * Bind parameters the way better-sqlite3 takes them: nothing, one array,
 * one object of named values, or values as separate arguments. `names` are
 * the statement's parameter names in binding order (all named), or null:
 * an object is then handed over as the array of its values in that order,
 * which crosses into native code without reading the object's keys there.
 * Anything unusual (a missing or undefined value) goes over as the object,
 * so the native side reports it.
 */
function bindArgs (args, names) {
  if (args.length === 0) return undefined
  if (args.length === 1) {
    const p = args[0]
    if (Array.isArray(p)) return p
    if (p !== null && typeof p === 'object' && !(p instanceof Uint8Array)) {
      if (names === null || names === undefined) return p
      const vals = new Array(names.length)
      for (let i = 0; i < names.length; i++) {
        const v = p[names[i]]
        if (v === undefined) return p
        vals[i] = v
      }
      return vals
    }
    return [p]
  }
  return args
}

class Statement {
  constructor (replicator, source, info) {
    this._r = replicator
    this._names = info.params ?? null
    // Named parameters given as one object are read by generated code.
    this._packNamed = this._names === null || this._names.length !== info.count ? null : paramPacker(this._names)
    // The native statement (no SQL text crosses per call).
    this._handle = info.handle
    // Parameters packed by `_pack` (their count in io[2], then from io[3]
    // a tag each, then their numbers) and run()'s results, written
    // natively into io[0..3]: [changes, lastInsertRowid, seq].
    this._count = info.count
    // get()'s row comes back packed the same way (a tag per column, then
    // their numbers; `_unpack`) while its columns are these.
    this._columns = info.columns
    this._io = new Float64Array(3 + 2 * Math.max(info.count, info.columns.length))
    /** The SQL text. */
    this.source = source
    /** True when the statement returns rows. */
    this.reader = info.reader
    /** True when the statement writes nothing. */
    this.readonly = info.readonly
  }

  /** Run to the end: `{ changes, lastInsertRowid, token }`. */
  run (...params) {
    const r = this._r
    r._checkOpen()
    const out = this._io
    const text = this._pack(params)
    if (text === undefined) r._native.run(this._handle, bindArgs(params, this._names), out)
    else r._native.runPacked(this._handle, out, text)
    // Read before what follows a write: a 'change' listener may run this
    // statement again, which writes `out`.
    const result = { changes: out[0], lastInsertRowid: out[1], token: `${r.peerId}.${out[2]}` }
    // Inside transaction(fn) the commit does what follows a write.
    if (!this.readonly && r._txDepth === 0) r._afterWrite()
    return result
  }

  /** Every row, as objects. */
  all (...params) {
    this._checkReader('all')
    const r = this._r
    const text = this._pack(params)
    const rows = text === undefined
      ? r._native.sqlAll(this._handle, bindArgs(params, this._names))
      : r._native.rowsPacked(this._handle, this._io, text, false)
    if (!this.readonly) r._afterWrite()
    return rows
  }

  /** The first row, or undefined. */
  get (...params) {
    this._checkReader('get')
    const r = this._r
    const text = this._pack(params)
    let row
    if (text === undefined) row = r._native.sqlGet(this._handle, bindArgs(params, this._names))
    else {
      row = r._native.getPacked(this._handle, this._io, text)
      if (typeof row === 'string') row = this._unpack(row)
    }
    if (!this.readonly) r._afterWrite()
    return row
  }

  /**
   * Rows one by one. The rows are read in one native call when iteration
   * starts (the connection is not held between calls), then yielded.
   */
  * iterate (...params) {
    yield * this.all(...params)
  }

  /**
   * Pack the parameters of `run()`, `all()` or `get()` when each is a
   * number (not NaN), a string or null, and they are as many as the
   * statement binds: their count into `_io[2]`, then from index 3 a tag
   * each, then each one's number (a string's length). Returns
   * the strings joined, or `undefined` for anything else, which goes over
   * as it is and is checked natively (this chooses a fast path; it does not
   * validate).
   */
  _pack (args) {
    const n = this._count
    let src = args
    if (args.length === 1) {
      const p = args[0]
      if (Array.isArray(p)) src = p
      else if (p !== null && typeof p === 'object') {
        if (this._packNamed === null || p instanceof Uint8Array) return undefined
        return this._packNamed(p, this._io)
      }
    }
    return src.length === n ? packParams(src, this._io) : undefined
  }

  /**
   * The row `getPacked` packed into `_io` (from index 3, a tag per column,
   * then each one's number or a string's length) and `text`, its strings
   * joined: an object set column by column, as the native row object is.
   */
  _unpack (text) {
    const cols = this._columns
    const n = cols.length
    const io = this._io
    const at = 3 + n
    const row = {}
    let pos = 0
    for (let i = 0; i < n; i++) {
      const tag = io[3 + i]
      if (tag === NUMBER) {
        row[cols[i]] = io[at + i]
      } else if (tag === TEXT) {
        const end = pos + io[at + i]
        row[cols[i]] = text.slice(pos, end)
        pos = end
      } else {
        row[cols[i]] = null
      }
    }
    return row
  }

  _checkReader (what) {
    this._r._checkOpen()
    if (!this.reader) throw typeError(`${what}(): this statement does not return data; use run() instead`)
  }
}

/** `replicator.transaction(fn)`: a function running `fn` in one transaction. */
function transaction (replicator, fn) {
  if (typeof fn !== 'function') throw typeError('transaction(fn): fn must be a function')
  const r = replicator
  return function runInTransaction (...args) {
    r._checkOpen()
    r._native.begin()
    r._txDepth++
    let result
    try {
      result = fn.apply(this, args)
      if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
        throw typeError('transaction(fn): fn must not be async (it returned a promise); the transaction is rolled back')
      }
    } catch (e) {
      r._txDepth--
      r._native.rollback()
      throw e
    }
    r._txDepth--
    r._native.commit()
    if (r._txDepth === 0) r._afterWrite()
    return result
  }
}

module.exports = { Statement, transaction, bindArgs }
