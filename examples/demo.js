'use strict'
// `npm run demo`: three peers, three processes, three SQLite files, one
// full-mesh of WebSockets on 127.0.0.1. All three write the SAME rows at the
// same time for a few seconds; then we watch their tables converge.
//
//   node examples/demo.js
//   DEMO_WRITE_MS=3000   how long the peers write (default 3000)
//   DEMO_TIMEOUT_MS=30000  give up (exit 1) after this long in total
//   KEEP=1               keep the temp dir with the three databases
//
// Exit code 0 when all three peers hold identical rows, 1 otherwise.
const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')

const PEERS = [1, 2, 3]
const IDS = 8 // rows (id, tenantId) with id in 1..IDS ...
const TENANTS = 2 // ... and tenantId in 1..TENANTS: every peer writes all of them
const WRITE_MS = Number(process.env.DEMO_WRITE_MS ?? 3000)
const TIMEOUT_MS = Number(process.env.DEMO_TIMEOUT_MS ?? 30000)
const HEARTBEAT_MS = 150

const t0 = Date.now()
const elapsed = () => `${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s`
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-demo-'))
const children = new Map() // peer id -> ChildProcess
const waiting = new Map() // `${peer}:${type}` -> resolve

function spawnPeer (id) {
  const child = fork(path.join(__dirname, 'demo-peer.js'), [], {
    env: { ...process.env, PEER_ID: String(id), DB: path.join(dir, `peer-${id}.db`), HEARTBEAT_MS: String(HEARTBEAT_MS) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc']
  })
  for (const stream of [child.stdout, child.stderr]) {
    readline.createInterface({ input: stream }).on('line', (line) => console.log(`  [peer ${id}] ${line}`))
  }
  child.on('message', (msg) => {
    const key = `${id}:${msg.type}`
    const resolve = waiting.get(key)
    if (resolve) { waiting.delete(key); resolve(msg) }
  })
  child.on('exit', (code, signal) => {
    for (const [key, resolve] of waiting) if (key.startsWith(`${id}:`)) { waiting.delete(key); resolve({ type: 'exit', code, signal }) }
    if (!finished) fail(`peer ${id} exited early (${code ?? signal})`)
  })
  children.set(id, child)
  return child
}

/** Resolves with peer `id`'s next message of `type` (or its exit). */
function next (id, type) {
  return new Promise((resolve) => waiting.set(`${id}:${type}`, resolve))
}

function ask (id, msg, replyType) {
  const p = next(id, replyType)
  children.get(id).send(msg)
  return p
}

const cell = (r) => r ? `${r.title ?? '-'} ${r.done ? 'done' : 'open'}${r.deletedAt !== null ? ' DEL' : ''}` : '(missing)'
const keyOf = (r) => `${r.id}/${r.tenantId}`

/** How many (id, tenantId) keys do not read the same on every peer. */
function differing (dumps) {
  const keys = new Set()
  for (const d of dumps) for (const r of d.rows) keys.add(keyOf(r))
  let n = 0
  for (const k of keys) {
    const cells = dumps.map((d) => JSON.stringify(d.rows.find((r) => keyOf(r) === k) ?? null))
    if (cells.some((c) => c !== cells[0])) n++
  }
  return n
}

function progress (dumps, note = '') {
  const parts = dumps.map((d) => `peer ${d.peerId}: ${String(d.rows.length).padStart(2)} rows #${d.hash.slice(0, 8)}`)
  const diff = differing(dumps)
  console.log(`${elapsed()}  ${parts.join('   ')}   ${diff === 0 ? 'all equal' : `${diff} row(s) differ`}${note}`)
  return diff
}

function table (dumps) {
  const w = 24
  console.log(`\n  ${'id/tenant'.padEnd(10)}${dumps.map((d) => `peer ${d.peerId}`.padEnd(w)).join('')}`)
  console.log(`  ${'-'.repeat(10 + w * dumps.length)}`)
  const keys = [...new Set(dumps.flatMap((d) => d.rows.map(keyOf)))]
  for (const k of keys) {
    const cells = dumps.map((d) => cell(d.rows.find((r) => keyOf(r) === k)))
    const same = cells.every((c) => c === cells[0])
    console.log(`  ${k.padEnd(10)}${cells.map((c) => c.slice(0, w - 2).padEnd(w)).join('')}${same ? '' : '  <- differs'}`)
  }
  console.log('')
}

let finished = false
async function cleanup () {
  finished = true
  const closing = []
  for (const child of children.values()) {
    if (child.exitCode !== null || child.signalCode !== null) continue
    closing.push(new Promise((resolve) => {
      const t = setTimeout(() => { child.kill('SIGKILL'); resolve() }, 4000)
      child.once('exit', () => { clearTimeout(t); resolve() })
      try { child.send({ type: 'stop' }) } catch { child.kill('SIGTERM') }
    }))
  }
  await Promise.all(closing)
  if (process.env.KEEP) console.log(`databases kept in ${dir}`)
  else fs.rmSync(dir, { recursive: true, force: true })
}

function fail (why) {
  if (finished) return
  console.error(`\nFAILED: ${why}`)
  cleanup().finally(() => process.exit(1))
}

const deadline = setTimeout(() => fail(`no convergence within ${TIMEOUT_MS} ms`), TIMEOUT_MS)

async function main () {
  console.log(`quilt-sqlite demo: ${PEERS.length} peers (child processes), full-mesh ws on 127.0.0.1, heartbeat ${HEARTBEAT_MS} ms`)
  console.log(`data: ${dir}\n`)
  const ready = await Promise.all(PEERS.map((id) => { spawnPeer(id); return next(id, 'ready') }))
  if (ready.some((m) => m.type !== 'ready')) return fail('a peer did not start')
  const peers = ready.map((m) => ({ id: m.peerId, port: m.port }))
  console.log(`${elapsed()}  listening: ${peers.map((p) => `peer ${p.id} ws://127.0.0.1:${p.port}`).join(', ')}`)
  const connected = await Promise.all(PEERS.map((id) => ask(id, { type: 'connect', peers }, 'connected')))
  if (connected.some((m) => m.type !== 'connected')) return fail('a peer could not connect')
  console.log(`${elapsed()}  full mesh up (${PEERS.length * (PEERS.length - 1)} sockets)`)

  console.log(`${elapsed()}  every peer now writes the same ${IDS * TENANTS} rows for ${WRITE_MS} ms (upserts, partial updates, deletes, undeletes)\n`)
  const wrote = Promise.all(PEERS.map((id) => ask(id, { type: 'write', ms: WRITE_MS, ids: IDS, tenants: TENANTS }, 'wrote')))
  let writing = true
  wrote.then(() => { writing = false })
  const dumpAll = () => Promise.all(PEERS.map((id) => ask(id, { type: 'dump' }, 'rows')))

  // While they write, the tables disagree; look twice a second.
  while (writing && !finished) {
    await new Promise((resolve) => setTimeout(resolve, 500))
    const dumps = await dumpAll()
    if (writing && !finished) progress(dumps, '   (writing)')
  }
  const writes = await wrote
  if (finished) return
  console.log(`${elapsed()}  writes done: ${writes.map((w) => `peer ${w.peerId} ${w.writes}`).join(', ')}`)

  // Then they converge: the last writer wins per column, everywhere.
  let dumps
  for (let i = 0; !finished && i < 200; i++) {
    dumps = await dumpAll()
    if (finished) return
    if (dumps.some((d) => d.type !== 'rows')) return fail('a peer went away')
    const diff = progress(dumps)
    if (diff === 0 && dumps.every((d) => d.hash === dumps[0].hash)) break
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  if (finished) return
  const ok = dumps.every((d) => d.hash === dumps[0].hash) && dumps[0].rows.length > 0
  table(dumps)
  const notes = dumps.filter((d) => d.rejected || d.errors).map((d) => `peer ${d.peerId}: ${d.rejected} rejected frames, ${d.errors} errors`)
  if (notes.length) console.log(notes.join('\n'))
  clearTimeout(deadline)
  if (!ok) return fail('the peers did not converge')
  console.log(`${elapsed()}  converged: ${PEERS.length} peers, ${dumps[0].rows.length} rows, sha256 ${dumps[0].hash.slice(0, 16)}`)
  await cleanup()
  process.exit(0)
}

process.on('SIGINT', () => fail('interrupted'))
process.on('SIGTERM', () => fail('terminated'))
main().catch((e) => fail(e && e.stack ? e.stack : String(e)))
