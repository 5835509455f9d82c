'use strict'
// Helpers to run example peers as child processes: used by the start.js
// scripts and by __test__/examples.test.js. Each peer prints one JSON line
// `{"ready":true,...}` on stdout once it listens.
const { spawn } = require('node:child_process')
const net = require('node:net')
const dgram = require('node:dgram')
const readline = require('node:readline')

/** A port that was free a moment ago on 127.0.0.1 (tcp, or udp). */
function freePort (type = 'tcp') {
  return new Promise((resolve, reject) => {
    if (type === 'udp') {
      const s = dgram.createSocket('udp4')
      s.once('error', reject)
      s.bind(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
      return
    }
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => { const { port } = srv.address(); srv.close(() => resolve(port)) })
  })
}

/**
 * Spawn `cmd args` with `env` added; resolves with { child, info } once the
 * child printed its ready line. `prefix` echoes the child's output (or pass
 * `echo: false`).
 */
function spawnPeer (cmd, args, env, { prefix = '', echo = true, timeoutMs = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let done = false
    let stderr = ''
    const timer = setTimeout(() => finish(new Error(`${prefix || cmd} not ready in ${timeoutMs} ms${echo ? '' : '\n' + stderr}`)), timeoutMs)
    function finish (err, info) {
      if (done) return
      done = true
      clearTimeout(timer)
      if (err) { child.kill('SIGKILL'); reject(err) } else resolve({ child, info })
    }
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      if (!done && line.startsWith('{')) {
        try {
          const info = JSON.parse(line)
          if (info.ready) return finish(null, info)
        } catch {}
      }
      if (echo) console.log(`${prefix}${line}`)
    })
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      stderr += line + '\n'
      if (echo) console.error(`${prefix}${line}`)
    })
    child.once('error', (e) => finish(e))
    child.once('exit', (code, sig) => finish(new Error(`${prefix || cmd} exited (${code ?? sig}) before ready${echo ? '' : '\n' + stderr}`)))
  })
}

/** Stop a child: SIGTERM, then SIGKILL after `graceMs`. */
function stop (child, graceMs = 3000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs)
    child.once('exit', () => { clearTimeout(t); resolve() })
    child.kill('SIGTERM')
  })
}

/**
 * Start one child per peer id (`script` with the env `envFor(id, i)` gives
 * it), stop them all on Ctrl-C, and resolve the peers' ready infos. If one
 * fails to start, the others are stopped and the error is thrown.
 */
async function startPeers (ids, script, envFor) {
  const children = []
  const bye = async () => { await Promise.all(children.map((c) => stop(c))); process.exit(0) }
  process.on('SIGINT', bye)
  process.on('SIGTERM', bye)
  const settled = await Promise.allSettled(ids.map((id, i) =>
    spawnPeer(process.execPath, [script], { PEER_ID: String(id), ...envFor(id, i) }, { prefix: `[peer ${id}] ` })))
  for (const s of settled) if (s.status === 'fulfilled') children.push(s.value.child)
  const failed = settled.find((s) => s.status === 'rejected')
  if (failed) { await Promise.all(children.map((c) => stop(c))); throw failed.reason }
  return settled.map((s) => s.value.info)
}

/** `id@127.0.0.1:port` of every other peer, for the PEERS variable. */
function peerList (ids, self, portOf) {
  return ids.filter((o) => o !== self).map((o) => `${o}@127.0.0.1:${portOf(o)}`).join(',')
}

module.exports = { freePort, spawnPeer, stop, startPeers, peerList }
