'use strict'
// Errors are built natively (issue 11, "Validate once, fail as real
// errors"): the addon throws TypeError/RangeError with code E_ARG for bad
// arguments and a QuiltError carrying the core's code for everything else,
// and the JS wrapper passes them on. Each case is checked through the public
// class and, where it matters, straight on the native binding, so the code
// is known to come from native code and not from a JS re-check.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const binding = require('../binding.js')
const { Replicator, QuiltError } = require('..')

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-nerr-'))
let fileNo = 0
const file = () => path.join(TMP, `n-${fileNo++}.db`)
const opened = []

const T = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, deletedAt INTEGER) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, a TEXT, deletedAt INTEGER) STRICT;`,
  down: 'DROP TABLE t_patches; DROP TABLE t;'
}

function open (opts = {}) {
  const r = new Replicator({ path: file(), heartbeatMs: 0, ...opts })
  opened.push(r)
  r.migrate([T])
  return r
}

test.after(async () => {
  for (const r of opened) await r.close({ timeoutMs: 0 }).catch(() => {})
  fs.rmSync(TMP, { recursive: true, force: true })
})

/** Every error seen by `thrown`/`rejected`, for the '\x1f' check at the end. */
const seen = []

function thrown (fn) {
  try {
    fn()
  } catch (e) {
    seen.push(e)
    return e
  }
  assert.fail('expected a throw')
}

async function rejected (p) {
  try {
    await p
  } catch (e) {
    seen.push(e)
    return e
  }
  assert.fail('expected a rejection')
}

function isArg (e, Klass, what) {
  assert.ok(e instanceof Klass, `${what}: expected ${Klass.name}, got ${e && e.constructor && e.constructor.name}: ${e && e.message}`)
  assert.equal(e.name, Klass.name, `${what}: name`)
  assert.equal(e.code, 'E_ARG', `${what}: code`)
  assert.equal(Object.getPrototypeOf(e), Klass.prototype, `${what}: a ${Klass.name} itself`)
}

function isCoded (e, code, what) {
  assert.ok(e instanceof Error, `${what}: an Error`)
  assert.ok(e instanceof QuiltError, `${what}: a QuiltError (got ${e && e.constructor && e.constructor.name}: ${e && e.message})`)
  assert.equal(e.name, 'QuiltError', `${what}: name`)
  assert.equal(e.code, code, `${what}: expected ${code}, got ${e.code}: ${e.message}`)
  assert.ok(!(e instanceof TypeError) && !(e instanceof RangeError), `${what}: not an argument error`)
}

test('bad option types: TypeError E_ARG, from the native constructor', () => {
  const cases = {
    'no options': undefined,
    'null options': null,
    'string options': 'x.db',
    'no path': {},
    'numeric path': { path: 5 },
    'string peerId': { path: file(), peerId: '7' },
    'fractional peerId': { path: file(), peerId: 1.5 },
    'string heartbeatMs': { path: file(), heartbeatMs: '10' },
    'NaN retentionMs': { path: file(), retentionMs: NaN },
    'null maxDriftMs': { path: file(), maxDriftMs: null },
    'object maxKeptBytes': { path: file(), maxKeptBytes: {} },
    'numeric clusterKey': { path: file(), clusterKey: 42 },
    'Int16Array clusterKey': { path: file(), clusterKey: new Int16Array(4) }
  }
  for (const [what, opts] of Object.entries(cases)) {
    isArg(thrown(() => new Replicator(opts)), TypeError, what)
    isArg(thrown(() => new binding.NativeReplicator(opts)), TypeError, `native: ${what}`)
  }
})

test('out-of-range options and arguments: RangeError E_ARG', () => {
  const cases = {
    'peerId 0': { path: file(), peerId: 0 },
    'peerId 2^32': { path: file(), peerId: 2 ** 32 },
    'heartbeatMs -1': { path: file(), heartbeatMs: -1 },
    'maxRetentionMs Infinity': { path: file(), maxRetentionMs: Infinity },
    'maxFrameBytes 10': { path: file(), maxFrameBytes: 10 },
    'empty clusterKey': { path: file(), clusterKey: '' }
  }
  for (const [what, opts] of Object.entries(cases)) {
    isArg(thrown(() => new Replicator(opts)), RangeError, what)
    isArg(thrown(() => new binding.NativeReplicator(opts)), RangeError, `native: ${what}`)
  }
  const r = open({ peerId: 5 })
  isArg(thrown(() => r.addPeer(0, () => {})), RangeError, 'addPeer(0)')
  isArg(thrown(() => r.addPeer(2 ** 32, () => {})), RangeError, 'addPeer(2^32)')
  isArg(thrown(() => r.addPeer(5, () => {})), RangeError, 'addPeer(own id)')
  isArg(thrown(() => r._native.removePeer(-3)), RangeError, 'native removePeer(-3)')
  isArg(thrown(() => r.upsert('t', { id: 1, a: NaN })), RangeError, 'NaN cell')
  isArg(thrown(() => r.upsert('t', { id: 2n ** 64n })), RangeError, 'bigint over 64 bits')
  // A refused addPeer registers nothing.
  assert.equal(r.status().peers.length, 0)
})

test('bad argument types on calls: TypeError E_ARG from native code', () => {
  const r = open()
  const n = r._native
  const cases = {
    'upsert numeric table': () => n.upsert(42, { id: 1 }),
    'upsert empty table': () => n.upsert('', { id: 1 }),
    'upsert Buffer row': () => n.upsert('t', Buffer.from('x')),
    'upsert array row': () => n.upsert('t', [1]),
    'upsertMany rows not an array': () => n.upsertMany('t', { id: 1 }),
    'upsertMany a row not an object': () => n.upsertMany('t', [{ id: 1 }, 7]),
    'delete null pk': () => n.delete('t', null),
    'object cell': () => n.upsert('t', { id: 1, a: {} }),
    'migrate not an array': () => n.migrate('CREATE TABLE x (a)'),
    'migration without up': () => n.migrate([{ down: 'x' }]),
    'migration down not a string': () => n.migrate([{ up: 'x', down: 5 }]),
    'migration renames not an object': () => n.migrate([{ up: 'x', renames: 'a' }]),
    'migration rename not a string': () => n.migrate([{ up: 'x', renames: { t: { a: 1 } } }]),
    'addPeer string': () => n.addPeer('x'),
    'removePeer fractional': () => n.removePeer(2.5),
    'applyPatches string': () => n.applyPatches('QLT'),
    'all numeric sql': () => n.all(42),
    'get missing sql': () => n.get()
  }
  for (const [what, fn] of Object.entries(cases)) isArg(thrown(fn), TypeError, what)
  // The same through the public class (no second check there).
  isArg(thrown(() => r.upsertMany('t', [{ id: 1 }, null])), TypeError, 'public upsertMany')
  isArg(thrown(() => r.migrate([42])), TypeError, 'public migrate')
  isArg(thrown(() => r.addPeer(3, 'not a function')), TypeError, 'JS-only: send')
  assert.equal(r.get('SELECT count(*) AS n FROM t').n, 0, 'nothing was written')
})

test('a JS exception raised while reading an argument propagates as is', () => {
  const boom = new Error('getter threw')
  const opts = { get path () { throw boom } }
  assert.throws(() => new Replicator(opts), (e) => e === boom)
  const r = open()
  const row = { id: 1, get a () { throw boom } }
  assert.throws(() => r.upsert('t', row), (e) => e === boom)
  assert.throws(() => r.migrate([{ get up () { throw boom } }]), (e) => e === boom)
})

test('unknown table or column: E_SCHEMA', () => {
  const r = open()
  isCoded(thrown(() => r.upsert('nope', { id: 1 })), 'E_SCHEMA', 'unknown table')
  isCoded(thrown(() => r._native.upsert('nope', { id: 1 })), 'E_SCHEMA', 'native unknown table')
  isCoded(thrown(() => r.upsertMany('t', [{ id: 1 }, { id: 2, zz: 1 }])), 'E_SCHEMA', 'unknown column')
  isCoded(thrown(() => r.delete('nope', { id: 1 })), 'E_SCHEMA', 'delete unknown table')
})

test('bad frames: E_FRAME / E_VERSION, and SQL errors: E_SQLITE / E_READONLY', () => {
  const r = open()
  isCoded(thrown(() => r.applyPatches(Buffer.from('QLT'))), 'E_FRAME', 'truncated frame')
  isCoded(thrown(() => r._native.applyPatches(Buffer.alloc(40))), 'E_FRAME', 'native zero frame')
  const v = Buffer.from([0x51, 0x4c, 0x54, 9, 0, 0, 0, 0, 1, 0x90])
  isCoded(thrown(() => r.applyPatches(v)), 'E_VERSION', 'version 9')
  isCoded(thrown(() => r.all('SELEKT 1')), 'E_SQLITE', 'syntax error')
  isCoded(thrown(() => r.get("UPDATE t SET a = 'x'")), 'E_READONLY', 'write in get')
  isArg(thrown(() => r.all('SELECT ?', [])), RangeError, 'missing parameter')
})

test('closed: E_CLOSED from the native side, and from JS while closing', async () => {
  const r = open()
  const n = r._native
  const closing = r.close({ timeoutMs: 0 })
  isCoded(thrown(() => r.upsert('t', { id: 1 })), 'E_CLOSED', 'write while closing')
  await closing
  const calls = {
    upsert: () => n.upsert('t', { id: 1 }),
    migrate: () => n.migrate([T]),
    addPeer: () => n.addPeer(9),
    applyPatches: () => n.applyPatches(Buffer.from('QLT')),
    all: () => n.all('SELECT 1'),
    status: () => n.status(),
    metrics: () => n.metrics(),
    tick: () => n.tick(),
    peerId: () => n.peerId
  }
  for (const [what, fn] of Object.entries(calls)) {
    const e = thrown(fn)
    isCoded(e, 'E_CLOSED', `native ${what}`)
    assert.equal(e.message, 'the replicator is closed')
  }
  // The public reads have no JS check of their own: these come from native.
  for (const [what, fn] of Object.entries({ all: () => r.all('SELECT 1'), status: () => r.status(), metrics: () => r.metrics(), applyPatches: () => r.applyPatches(Buffer.from('QLT')) })) {
    isCoded(thrown(fn), 'E_CLOSED', what)
  }
  await assert.rejects(r.snapshot(), { code: 'E_CLOSED' })
})

test('async native calls reject with coded errors', async () => {
  const empty = path.join(TMP, 'empty-store')
  fs.mkdirSync(empty)
  const dest = path.join(TMP, 'restored.db')
  isCoded(await rejected(Replicator.restore({ from: `file://${empty}`, path: dest })), 'E_SNAPSHOT', 'restore from an empty store')
  isCoded(await rejected(binding.listSnapshots('not a url', undefined)), 'E_ARG', 'native list with a bad url')
  isCoded(await rejected(Replicator.restore({ from: 'not a url', path: dest })), 'E_ARG', 'restore with a bad url')
  // Argument checks of restore are native too.
  isArg(await rejected(Replicator.restore(null)), TypeError, 'restore(null)')
  isArg(await rejected(Replicator.restore({ from: 'file:///x', path: ':memory:' })), TypeError, 'restore to :memory:')
  isArg(await rejected(Replicator.restore({ from: 'file:///x', path: dest, overwrite: 'yes' })), TypeError, 'restore overwrite')
  isArg(await rejected(Replicator.restore({ from: 'file:///x', path: dest, snapshot: 5 })), TypeError, 'restore snapshot id')
  // A snapshot whose upload fails rejects from the tokio side.
  const r = open()
  isCoded(await rejected(r.snapshot({ url: 'nope://bucket/x' })), 'E_ARG', 'snapshot to an unknown scheme')
  fs.writeFileSync(path.join(TMP, 'blocker'), 'x')
  isCoded(await rejected(r.snapshot({ url: `file://${path.join(TMP, 'blocker', 'sub')}` })), 'E_SNAPSHOT', 'snapshot store cannot be created')
})

test("no error message carries the old '\\x1f' encoding", () => {
  assert.ok(seen.length > 60, `errors collected (${seen.length})`)
  for (const e of seen) {
    assert.ok(!String(e.message).includes('\x1f'), `message ${JSON.stringify(e.message)}`)
    assert.ok(!String(e.stack).includes('\x1f'), `stack of ${JSON.stringify(e.message)}`)
    assert.ok(!String(e.message).startsWith('QUILT'), `message ${JSON.stringify(e.message)}`)
    assert.equal(typeof e.code, 'string', `code of ${JSON.stringify(e.message)}`)
  }
  // Nor do the sources encode or parse it any more.
  for (const f of ['lib/errors.js', 'lib/replicator.js', 'lib/snapshot.js', 'src/binding/mod.rs', 'src/binding/snapshot.rs', 'src/binding/values.rs']) {
    const src = fs.readFileSync(path.join(__dirname, '..', f), 'utf8')
    assert.ok(!src.includes('\\x1f') && !src.includes('\x1f'), `${f} has no \\x1f`)
  }
})
