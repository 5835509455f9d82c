'use strict'
// Restore trusts nothing beyond the manifest, and temporary copies of the
// database are private (issue 10, part 6): the decompressed output stops at
// the first byte past the manifest's `size`, the stored object at its
// `bytes`, and every temporary copy (VACUUM INTO target, in-memory backup,
// restore target) is created 0600.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const http = require('node:http')
const crypto = require('node:crypto')
const { Replicator } = require('..')
const moto = require('./helpers/moto.js')

const SCHEMA = [{
  up: `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL, id INTEGER, v TEXT);`
}]
const unix = process.platform !== 'win32'
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-harden-'))
const mode = (file) => fs.statSync(file).mode & 0o777

function writer (file, peerId, n, url, options) {
  const r = new Replicator({ path: file, peerId, heartbeatMs: 0, snapshot: { url, options } })
  r.migrate(SCHEMA)
  for (let i = 0; i < n; i += 5000) {
    const rows = []
    for (let j = i; j < Math.min(n, i + 5000); j++) rows.push({ id: j, v: `${j}-${crypto.randomBytes(40).toString('hex')}` })
    r.upsertMany('t', rows)
  }
  return r
}

/** Polls `dir` as fast as the event loop allows, recording the mode and
 * the largest size of every file whose name matches `re`. */
function watchTemps (dir, re) {
  const seen = new Map()
  let on = true
  const loop = () => {
    if (!on) return
    for (const f of fs.readdirSync(dir)) {
      if (!re.test(f)) continue
      try {
        const st = fs.statSync(path.join(dir, f))
        const prev = seen.get(f) || { modes: new Set(), maxSize: 0 }
        prev.modes.add(st.mode & 0o777)
        prev.maxSize = Math.max(prev.maxSize, st.size)
        seen.set(f, prev)
      } catch {}
    }
    setImmediate(loop)
  }
  loop()
  return () => { on = false; return seen }
}

function editManifests (store, edit) {
  for (const f of [path.join(store, 'latest.json'), ...fs.readdirSync(path.join(store, 'snapshots')).filter((f) => f.endsWith('.json')).map((f) => path.join(store, 'snapshots', f))]) {
    const m = JSON.parse(fs.readFileSync(f, 'utf8'))
    edit(m)
    fs.writeFileSync(f, JSON.stringify(m))
  }
}

const leftovers = (dir) => fs.readdirSync(dir).filter((f) => f.includes('.quilt-restore-') || f.includes('.quilt-snap-'))

test('a manifest whose size is smaller than the data: restore stops there with E_SNAPSHOT', async () => {
  const dir = tmp()
  const store = path.join(dir, 'store')
  const w = writer(path.join(dir, 'w.db'), 1, 3000, `file://${store}`)
  const info = await w.snapshot()
  await w.close({ timeoutMs: 0 })
  editManifests(store, (m) => { m.size = 8192 })
  const out = path.join(dir, 'out')
  fs.mkdirSync(out)
  const dest = path.join(out, 'restored.db')
  const stop = watchTemps(out, /quilt-restore-/)
  await assert.rejects(Replicator.restore({ from: `file://${store}`, path: dest }), (e) => {
    assert.equal(e.code, 'E_SNAPSHOT')
    assert.match(e.message, /more than the manifest's size of 8192 bytes/)
    return true
  })
  for (const [f, s] of stop()) assert.ok(s.maxSize <= 8192, `${f} grew to ${s.maxSize} bytes (data is ${info.size})`)
  assert.equal(fs.existsSync(dest), false)
  assert.deepEqual(leftovers(out), [])
})

test("another snapshot's object under a small manifest (sha256 and bytes made to match) is refused", async () => {
  const dir = tmp()
  const small = path.join(dir, 'small')
  const big = path.join(dir, 'big')
  const a = writer(path.join(dir, 'a.db'), 1, 10, `file://${small}`)
  const b = writer(path.join(dir, 'b.db'), 2, 30000, `file://${big}`)
  const sInfo = await a.snapshot()
  const bInfo = await b.snapshot()
  await a.close({ timeoutMs: 0 })
  await b.close({ timeoutMs: 0 })
  assert.ok(bInfo.size > 20 * sInfo.size)
  // An attacker with write access to the store swaps the object and fixes
  // up bytes and sha256; only size still says what the data should be.
  const obj = (store) => path.join(store, 'snapshots', fs.readdirSync(path.join(store, 'snapshots')).find((f) => f.endsWith('.db.zst')))
  fs.copyFileSync(obj(big), obj(small))
  editManifests(small, (m) => { m.bytes = bInfo.bytes; m.sha256 = bInfo.sha256 })
  const out = path.join(dir, 'out')
  fs.mkdirSync(out)
  const dest = path.join(out, 'restored.db')
  const stop = watchTemps(out, /quilt-restore-/)
  await assert.rejects(Replicator.restore({ from: `file://${small}`, path: dest }), { code: 'E_SNAPSHOT' })
  for (const [f, s] of stop()) assert.ok(s.maxSize <= sInfo.size, `${f} grew to ${s.maxSize} bytes, manifest size ${sInfo.size}`)
  assert.equal(fs.existsSync(dest), false)
  assert.deepEqual(leftovers(out), [])
})

test('a stored object longer than the manifest says is refused without restoring anything', async () => {
  const dir = tmp()
  const store = path.join(dir, 'store')
  const w = writer(path.join(dir, 'w.db'), 1, 500, `file://${store}`)
  const info = await w.snapshot()
  await w.close({ timeoutMs: 0 })
  const file = path.join(store, 'snapshots', fs.readdirSync(path.join(store, 'snapshots')).find((f) => f.endsWith('.db.zst')))
  fs.appendFileSync(file, Buffer.alloc(4 << 20, 0x5a))
  const dest = path.join(dir, 'restored.db')
  const progress = []
  await assert.rejects(Replicator.restore({ from: `file://${store}`, path: dest, onProgress: (p) => progress.push(p) }), (e) => {
    assert.equal(e.code, 'E_SNAPSHOT')
    assert.match(e.message, /larger than the manifest's \d+ bytes/)
    return true
  })
  for (const p of progress) assert.ok(p.bytesDone <= info.bytes, `read ${p.bytesDone} of ${info.bytes} bytes`)
  assert.equal(fs.existsSync(dest), false)
  assert.deepEqual(leftovers(dir), [])
})

test('temporary copies and the restored file are created 0600', { skip: !unix && 'POSIX modes only' }, async (t) => {
  // A usual umask, so a file made with default permissions would be 0644.
  const umask = process.umask(0o022)
  t.after(() => process.umask(umask))
  const dir = tmp()
  const store = path.join(dir, 'store')
  const db = path.join(dir, 'w.db')
  const w = writer(db, 1, 30000, `file://${store}`)
  assert.equal(mode(db), 0o644, 'the database itself keeps default permissions')
  let stop = watchTemps(dir, /\.quilt-snap-/)
  await w.snapshot()
  let seen = stop()
  assert.ok(seen.size >= 1, 'the VACUUM INTO copy was seen')
  for (const [f, s] of seen) assert.deepEqual([...s.modes], [0o600], `${f} modes ${[...s.modes].map((m) => m.toString(8))}`)
  await w.close({ timeoutMs: 0 })
  assert.deepEqual(leftovers(dir), [])

  // An in-memory database is backed up to a temp file first.
  const mem = writer(':memory:', 2, 30000, `file://${store}`)
  stop = watchTemps(os.tmpdir(), /^quilt-mem-[0-9a-f]+\.db/)
  await mem.snapshot()
  seen = stop()
  assert.ok(seen.size >= 1, 'the in-memory backup was seen')
  for (const [f, s] of seen) assert.deepEqual([...s.modes], [0o600], `${f} modes ${[...s.modes].map((m) => m.toString(8))}`)
  for (const f of seen.keys()) assert.equal(fs.existsSync(path.join(os.tmpdir(), f)), false, `${f} removed`)
  await mem.close({ timeoutMs: 0 })

  const out = path.join(dir, 'out')
  fs.mkdirSync(out)
  const dest = path.join(out, 'restored.db')
  stop = watchTemps(out, /quilt-restore-/)
  await Replicator.restore({ from: `file://${store}`, path: dest })
  for (const [f, s] of stop()) assert.deepEqual([...s.modes], [0o600], `${f} modes ${[...s.modes].map((m) => m.toString(8))}`)
  assert.equal(mode(dest), 0o600, 'the restored database is private')
  const r = new Replicator({ path: dest, heartbeatMs: 0 })
  assert.equal(r.get('SELECT count(*) AS n FROM t').n, 30000)
  await r.close()
})

// moto checks that a GET carries credentials, not that they are signed.
const MOTO_AUTH = 'AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0'

function s3Request (method, url, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { authorization: MOTO_AUTH } }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

test('S3: a tampered size stops the restore with E_SNAPSHOT', async (t) => {
  const s3 = await moto.s3()
  if (!s3.endpoint) {
    if (process.env.CI) throw new Error(`CI needs a real S3 server: ${s3.reason}`)
    t.skip(s3.reason)
    return
  }
  const bucket = `quilt-${crypto.randomBytes(4).toString('hex')}`
  await moto.createBucket(s3.endpoint, bucket)
  const url = `s3://${bucket}/snaps`
  const options = moto.s3Options(s3.endpoint)
  const dir = tmp()
  const w = writer(path.join(dir, 'w.db'), 1, 3000, url, options)
  await w.snapshot()
  await w.close({ timeoutMs: 0 })
  const latest = `${s3.endpoint}/${bucket}/snaps/latest.json`
  const got = await s3Request('GET', latest)
  assert.equal(got.status, 200)
  const m = JSON.parse(got.body.toString('utf8'))
  m.size = 4096
  assert.ok((await s3Request('PUT', latest, JSON.stringify(m))).status < 300)
  const dest = path.join(dir, 'restored.db')
  await assert.rejects(Replicator.restore({ from: url, path: dest, options }), (e) => {
    assert.equal(e.code, 'E_SNAPSHOT')
    assert.match(e.message, /more than the manifest's size of 4096 bytes/)
    return true
  })
  assert.equal(fs.existsSync(dest), false)
  assert.deepEqual(leftovers(dir), [])
})

test.after(() => moto.stop())
