'use strict'
// Clock rows kept aside by autocommit writes (docs/design.md "Deferred
// clock rows"), through the public API and a real process: a writer killed
// with SIGKILL while its last writes' clock rows are only in memory comes
// back with those writes still winning over older ones from another peer,
// and the two converge.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { Replicator } = require('..')

const SCHEMA = [{
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, v TEXT, n INTEGER);
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT, n INTEGER);`
}]
const ROWS = 40

const open = (file, peerId) => {
  const r = new Replicator({ path: file, peerId, heartbeatMs: 0 })
  r.migrate(SCHEMA)
  return r
}
const rows = (r) => r.all('SELECT id, v, n FROM t WHERE id <= 1000 ORDER BY id')
// Clock rows are kept aside once a few autocommit writes came in a row
// (docs/design.md): these go first, on rows the checks leave out.
const WARM = "for (let i = 1; i <= 4; i++) r.upsert('t', { id: 1000 + i, v: 'warm', n: i })"
const replayed = (r) => Number(/quilt_clock_rows_replayed_total (\d+)/.exec(r.metrics())[1])

/** Two peers wired in process; frames delivered until quiet, bounded. */
function pair (a, b) {
  const queue = []
  a.addPeer(2, (f) => queue.push([b, f]))
  b.addPeer(1, (f) => queue.push([a, f]))
  const deliver = () => {
    for (let i = 0; queue.length && i < 10000; i++) {
      const [to, f] = queue.shift()
      to.applyPatches(f)
    }
  }
  const sync = () => {
    for (let round = 0; round < 5; round++) {
      a.tick(); b.tick()
      deliver()
    }
  }
  sync.deliver = deliver
  return sync
}

/** Run `code` in a child node process on `file`; SIGKILL it once it prints "done". */
function writeAndKill (file, code) {
  const script = `
    const { Replicator } = require(${JSON.stringify(path.join(__dirname, '..'))})
    const r = new Replicator({ path: ${JSON.stringify(file)}, peerId: 1, heartbeatMs: 0 })
    r.migrate(${JSON.stringify(SCHEMA)})
    ${code}
    process.stdout.write('done\\n')
    setInterval(() => {}, 1000)`
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error('child timed out')) }, 20000)
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
      if (out.includes('done')) child.kill('SIGKILL')
    })
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (signal === 'SIGKILL' && out.includes('done')) resolve()
      else reject(new Error(`child exited ${code} ${signal}: ${out}`))
    })
  })
}

test('a writer killed with clock rows kept aside: its newer writes still win after restart', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-defer-'))
  const fa = path.join(dir, 'a.db')
  const b = open(path.join(dir, 'b.db'), 2)
  // b's writes are older than a's, and a has not heard of them.
  for (let i = 1; i <= ROWS; i++) b.upsert('t', { id: i, v: 'b older', n: -i })
  await new Promise((resolve) => setTimeout(resolve, 5))
  await writeAndKill(fa, `
    ${WARM}
    for (let i = 1; i <= ${ROWS}; i++) r.upsert('t', { id: i, v: 'a newer', n: i })
    for (let i = 1; i <= 10; i++) r.upsert('t', { id: i, n: 1000 + i })
    // Clock rows are written once per batch of writes: none yet.
    if (r.get('SELECT count(*) AS c FROM _quilt_clock_t WHERE id <= 1000').c !== 0) throw new Error('clock rows were written')`)
  const a = open(fa, 1)
  assert.equal(replayed(a), ROWS + 10, 'the open replays the writes whose clock rows were lost')
  const want = []
  for (let i = 1; i <= ROWS; i++) want.push({ id: i, v: 'a newer', n: i <= 10 ? 1000 + i : i })
  assert.deepEqual(rows(a), want)
  pair(a, b)()
  assert.deepEqual(rows(a), want, 'b\'s older writes lose on a')
  assert.deepEqual(rows(b), want, 'a\'s newer writes win on b')
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
  // Closed cleanly: nothing left to replay.
  const again = open(fa, 1)
  assert.equal(replayed(again), 0)
  assert.equal(again.get('SELECT count(*) AS c FROM _quilt_clock_t WHERE id <= 1000').c, ROWS)
  await again.close({ timeoutMs: 0 })
})

test('older patches arriving while clock rows are kept aside lose, newer ones win, reads agree on every step', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-defer-'))
  const a = open(path.join(dir, 'a.db'), 1)
  const b = open(path.join(dir, 'b.db'), 2)
  const sync = pair(a, b)
  sync()
  // Alternate who writes last on each row, a's writes staying in autocommit
  // (kept aside) and b's frames delivered right after, with no heartbeat.
  let seed = 11
  const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n }
  for (let step = 0; step < 200; step++) {
    const id = 1 + rand(8)
    if (rand(2)) a.upsert('t', { id, v: `a${step}`, n: step })
    else b.upsert('t', { id, v: `b${step}`, n: step })
    // b's frames reach a between a's writes, with no heartbeat on a.
    if (rand(3) === 0) { b.flush(); sync.deliver() }
    if (rand(10) === 0) { a.flush(); sync.deliver() }
    if (step % 25 === 24) {
      sync()
      assert.deepEqual(rows(a), rows(b), `step ${step}`)
    }
  }
  sync()
  assert.deepEqual(rows(a), rows(b))
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
})
