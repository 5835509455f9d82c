'use strict'
// A rolling deploy (API.md Guarantees 1, 3 and 4): three peers in child
// processes on loopback, full mesh over WebSocket (`ws`), heartbeatMs 50.
// The parent keeps writing through every running peer and records each
// token upsert() returned. The peers are restarted one by one (SIGTERM, a
// graceful close, then a new process on the same file) with the v2
// migration list (adds `prio` to todo and todo_patches, with a down step);
// peers on v2 write prio too. Afterwards all three databases hold the same
// rows and no acknowledged write is lost: every token's (_peerId,
// _sequenceId) is in every peer's todo_patches with the values written, and
// each value is in the row or overwritten by a later write.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { fork } = require('node:child_process')
const Database = require('./helpers/sqlite.js')

const FIXTURE = path.join(__dirname, 'fixtures', 'deploy-peer.js')
const IDS = [1, 2, 3]
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const { freePort } = require('./helpers/moto.js')

const children = new Set()
let dir

test.after(() => {
  for (const c of children) {
    try { c.proc.kill('SIGKILL') } catch {}
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
})

/** Start one peer process; resolves once it listens and has migrated. */
function start (id, version, ports) {
  const file = path.join(dir, `peer${id}.db`)
  const proc = fork(FIXTURE, [JSON.stringify({ id, file, version, ports, heartbeatMs: 50 })], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc']
  })
  const child = { id, version, proc, file, live: false, pending: new Map(), nextReq: 1, stderr: '', exited: null }
  children.add(child)
  proc.stderr.on('data', (d) => { child.stderr = (child.stderr + d).slice(-8000) })
  proc.on('message', (m) => {
    if (m.reqId && child.pending.has(m.reqId)) {
      const { resolve } = child.pending.get(m.reqId)
      child.pending.delete(m.reqId)
      resolve(m)
    } else if (m.op === 'ready') {
      child.migrated = m.migrated
      child.live = true
      child.onReady && child.onReady()
    }
  })
  child.exit = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      child.live = false
      child.exited = { code, signal }
      children.delete(child)
      for (const { resolve: r } of child.pending.values()) r({ error: 'exited', code: 'EXITED' })
      child.pending.clear()
      resolve(child.exited)
    })
  })
  child.request = (msg) => new Promise((resolve) => {
    if (child.exited) return resolve({ error: 'exited', code: 'EXITED' })
    const reqId = child.nextReq++
    child.pending.set(reqId, { resolve })
    try { proc.send({ ...msg, reqId }) } catch (e) {
      child.pending.delete(reqId)
      resolve({ error: e.message, code: 'IPC' })
    }
  })
  child.ready = new Promise((resolve, reject) => {
    child.onReady = resolve
    child.exit.then((e) => reject(new Error(`peer ${id} exited before ready: ${JSON.stringify(e)}\n${child.stderr}`)))
  })
  return child
}

async function stop (child) {
  child.live = false
  child.proc.kill('SIGTERM')
  const t = setTimeout(() => child.proc.kill('SIGKILL'), 8000)
  const e = await child.exit
  clearTimeout(t)
  return e
}

test('rolling deploy v1 -> v2 under continuous writes: convergence and no acknowledged write lost', { timeout: 40000 }, async () => {
  const t0 = Date.now()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-deploy-'))
  const ports = {}
  for (const id of IDS) ports[id] = await freePort()
  const peers = {}
  for (const id of IDS) peers[id] = start(id, 1, ports)
  await Promise.all(IDS.map((id) => peers[id].ready))
  for (const id of IDS) assert.deepEqual(peers[id].migrated, { from: 0, to: 1 })

  // The writer: one write per running peer per round, overwriting a small set
  // of ids so that writes from different peers and versions conflict.
  const acked = [] // { token, peer, version, row, at }
  const refusedWrites = []
  let n = 0
  let writing = true
  const writer = (async () => {
    while (writing) {
      const round = Object.values(peers).filter((c) => c.live).map(async (c) => {
        const k = ++n
        const res = await c.request({ op: 'write', id: 1 + (k % 37), title: `p${c.id}-v${c.version}-${k}`, prio: (k % 9) + 1 })
        if (res.token) acked.push({ token: res.token, peer: c.id, version: c.version, row: res.row })
        else refusedWrites.push(res)
      })
      await Promise.all(round)
      await sleep(4)
    }
  })()

  await sleep(1200)
  // restart the peers one by one with the v2 migration list
  for (const id of IDS) {
    const before = acked.length
    const old = peers[id]
    const exit = await stop(old)
    assert.deepEqual(exit, { code: 0, signal: null }, `peer ${id} stopped gracefully:\n${old.stderr}`)
    assert.ok(acked.length > before || id === 1, 'writes kept flowing through the other peers')
    peers[id] = start(id, 2, ports)
    await peers[id].ready
    assert.deepEqual(peers[id].migrated, { from: 1, to: 2 }, `peer ${id} migrated v1 -> v2 on its old file`)
    await sleep(1000)
  }
  await sleep(800)
  writing = false
  await writer
  const byVersion = { 1: 0, 2: 0 }
  for (const a of acked) byVersion[a.version]++
  assert.ok(byVersion[1] > 50 && byVersion[2] > 50, `writes on both versions: ${JSON.stringify(byVersion)}`)
  for (const id of IDS) assert.ok(acked.some((a) => a.peer === id && a.version === 2) && acked.some((a) => a.peer === id && a.version === 1))

  // convergence: all three report the same rows and patches
  let digests
  const deadline = Date.now() + 12000
  for (;;) {
    digests = await Promise.all(IDS.map(async (id) => (await peers[id].request({ op: 'digest' })).digest))
    const same = digests.every((d) => d && d.rows === digests[0].rows && d.patches === digests[0].patches)
    if (same && digests[0].nPatches >= acked.length) break
    if (Date.now() > deadline) {
      assert.fail(`no convergence within 12 s after writes stopped:\n${JSON.stringify(digests.map((d) => d && { ...d, peers: d.peers.map((p) => [p.peerId, p.contiguousSeq, p.lastSeq, p.missing]) }), null, 1)}`)
    }
    await sleep(100)
  }
  for (const d of digests) assert.equal(d.pending, 0, 'nothing left pending once every peer is on v2')

  // stop everyone gracefully, then read the files directly
  const exits = await Promise.all(IDS.map((id) => stop(peers[id])))
  for (const [i, e] of exits.entries()) assert.deepEqual(e, { code: 0, signal: null }, `peer ${IDS[i]} final stop:\n${peers[IDS[i]].stderr}`)

  const dbs = IDS.map((id) => new Database(path.join(dir, `peer${id}.db`), { readonly: true, fileMustExist: true }))
  try {
    const rowsOf = (db) => db.prepare('SELECT id, tenantId, title, done, deletedAt, prio FROM todo ORDER BY id, tenantId').all()
    const want = rowsOf(dbs[0])
    for (const [i, db] of dbs.entries()) assert.deepEqual(rowsOf(db), want, `peer ${IDS[i]} holds the same rows as peer 1`)
    assert.ok(want.length > 0)

    // The patch log: every peer's todo_patches, merged (a value set in any
    // copy counts), used to tell "overwritten by a later write" apart from
    // "lost".
    const later = (p, q) => q._patchedAt > p._patchedAt || (q._patchedAt === p._patchedAt &&
      (q._peerId > p._peerId || (q._peerId === p._peerId && q._sequenceId > p._sequenceId)))
    const logByKey = new Map()
    for (const db of dbs) {
      for (const p of db.prepare('SELECT _patchedAt, _peerId, _sequenceId, id, tenantId, title, prio FROM todo_patches').all()) {
        const k = `${p._peerId}.${p._sequenceId}`
        const have = logByKey.get(k)
        if (!have) logByKey.set(k, { ...p })
        else for (const c of ['title', 'prio']) if (have[c] === null) have[c] = p[c]
      }
    }
    const byPk = new Map()
    for (const p of logByKey.values()) {
      const k = `${p.id}/${p.tenantId}`
      if (!byPk.has(k)) byPk.set(k, [])
      byPk.get(k).push(p)
    }

    const incomplete = [] // patches whose stored record lacks a value that was written
    for (const [i, db] of dbs.entries()) {
      const who = `peer ${IDS[i]}`
      const patch = db.prepare('SELECT _patchedAt, _peerId, _sequenceId, id, tenantId, title, done, prio FROM todo_patches WHERE _peerId = ? AND _sequenceId = ?')
      const rowOf = new Map(rowsOf(db).map((r) => [`${r.id}/${r.tenantId}`, r]))
      const lost = []
      const wrong = []
      for (const a of acked) {
        const [pid, seq] = a.token.split('.').map(Number)
        assert.equal(pid, a.peer, `token ${a.token} names the peer that wrote it`)
        const p = patch.get(pid, seq)
        if (!p) { lost.push(a.token); continue }
        if (p.id !== a.row.id || p.tenantId !== 1 || p.title !== a.row.title || p.done !== a.row.done) {
          wrong.push(`${a.token}: patch ${JSON.stringify(p)} != written ${JSON.stringify(a.row)}`)
          continue
        }
        if ('prio' in a.row && p.prio !== a.row.prio) incomplete.push(`${who} ${a.token}: todo_patches.prio ${p.prio}, written ${a.row.prio} by peer ${a.peer} on v2`)
        // in the row, or overwritten by a later write of the same column
        const row = rowOf.get(`${a.row.id}/1`)
        if (!row) { wrong.push(`${a.token}: row ${a.row.id} missing`); continue }
        for (const col of ['title', 'prio']) {
          if (!(col in a.row) || row[col] === a.row[col]) continue
          const over = (byPk.get(`${a.row.id}/1`) || []).some((q) => q[col] !== null && later(p, q))
          if (!over) wrong.push(`${a.token}: ${col}=${JSON.stringify(a.row[col])} neither in the row (${JSON.stringify(row[col])}) nor overwritten by a later patch`)
        }
      }
      assert.deepEqual(lost, [], `${who}: acknowledged writes missing from todo_patches (${lost.length} of ${acked.length})`)
      assert.deepEqual(wrong.slice(0, 20), [], `${who}: ${wrong.length} acknowledged writes with wrong or lost values`)

      // and each row holds, per column, the last writer's value
      for (const [k, ps] of byPk) {
        const row = rowOf.get(k)
        for (const col of ['title', 'prio']) {
          const set = ps.filter((q) => q[col] !== null)
          if (set.length === 0) continue
          const win = set.reduce((w, q) => (later(w, q) ? q : w))
          assert.equal(row[col], win[col], `${who}: row ${k} ${col} is the last writer's (${win._peerId}.${win._sequenceId})`)
        }
      }
    }
    // The _patches table is the patch log (replic-sqlite layout, served to
    // peers, read by tools): a v2 patch a peer received while on v1 must have
    // its prio recorded there once that peer migrates.
    const perPeer = {}
    for (const x of incomplete) { const k = x.split(' ').slice(0, 2).join(' '); perPeer[k] = (perPeer[k] || 0) + 1 }
    assert.deepEqual(incomplete.slice(0, 10), [],
      `${incomplete.length} (${JSON.stringify(perPeer)}) acknowledged v2 writes whose prio is missing from a peer's todo_patches after it migrated (values kept only in _quilt_kept?)`)
    assert.ok(Date.now() - t0 < 40000)
  } finally {
    for (const db of dbs) db.close()
  }
})

test('a peer migrated in place (no restart) sees the new column in SELECT * through all() and get()', async () => {
  const { Replicator } = require('..')
  const M = require('./fixtures/deploy-peer-migrations.js')
  const r = new Replicator({ path: ':memory:', peerId: 9, heartbeatMs: 0 })
  r.migrate([M.v1])
  r.upsert('todo', { id: 1, tenantId: 1, title: 'before' })
  assert.deepEqual(Object.keys(r.all('SELECT * FROM todo')[0]), ['id', 'tenantId', 'title', 'done', 'deletedAt'])
  r.get('SELECT * FROM todo')
  assert.deepEqual(r.migrate([M.v1, M.v2]), { from: 1, to: 2 })
  r.upsert('todo', { id: 1, tenantId: 1, prio: 4 })
  assert.deepEqual(r.get('SELECT * FROM todo'), { id: 1, tenantId: 1, title: 'before', done: null, deletedAt: null, prio: 4 }, 'get()')
  assert.deepEqual(r.all('SELECT * FROM todo'), [{ id: 1, tenantId: 1, title: 'before', done: null, deletedAt: null, prio: 4 }], 'all() after migrate')
  // and back down
  assert.deepEqual(r.migrate([M.v1]), { from: 2, to: 1 })
  assert.deepEqual(r.all('SELECT * FROM todo'), [{ id: 1, tenantId: 1, title: 'before', done: null, deletedAt: null }], 'all() after the down step')
  await r.close({ timeoutMs: 0 })
})
