'use strict'
// A real S3-compatible server for the snapshot tests: the moto server from
// PyPI on 127.0.0.1. `.ci/run` starts one and sets QUILT_S3_ENDPOINT; when
// it is not set, this starts its own (and stops it at exit).
const { spawn, spawnSync } = require('node:child_process')
const http = require('node:http')
const net = require('node:net')

function freePort () {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
    s.on('error', reject)
  })
}

function request (method, url) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
    })
    req.on('error', reject)
    req.setTimeout(5000, () => req.destroy(new Error('timeout')))
    req.end()
  })
}

async function waitUp (endpoint, ms) {
  const until = Date.now() + ms
  while (Date.now() < until) {
    try {
      await request('GET', endpoint + '/')
      return true
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
  return false
}

let started = null

/** Endpoint of a running moto server, or null (with the reason) when none can run. */
async function s3 () {
  if (process.env.QUILT_S3_ENDPOINT) return { endpoint: process.env.QUILT_S3_ENDPOINT }
  if (started) return started
  const which = spawnSync('sh', ['-c', 'command -v moto_server'], { encoding: 'utf8' })
  if (which.status !== 0) return { endpoint: null, reason: "moto_server not installed (pip install 'moto[server]')" }
  const port = await freePort()
  const child = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' })
  process.on('exit', () => child.kill())
  const endpoint = `http://127.0.0.1:${port}`
  if (!(await waitUp(endpoint, 20000))) {
    child.kill()
    return { endpoint: null, reason: 'moto_server did not start' }
  }
  started = { endpoint, child }
  return started
}

async function createBucket (endpoint, bucket) {
  const code = await request('PUT', `${endpoint}/${bucket}`)
  if (code >= 300 && code !== 409) throw new Error(`create bucket ${bucket}: HTTP ${code}`)
}

function s3Options (endpoint) {
  return { endpoint, region: 'us-east-1', accessKeyId: 'test', secretAccessKey: 'test', allowHttp: true }
}

function stop () {
  if (started && started.child) started.child.kill()
  started = null
}

module.exports = { s3, createBucket, s3Options, stop, freePort }
