'use strict'
// The public types compile under `tsc --strict` against a typed use of every member.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')

test('index.d.ts type-checks a usage file with --strict', { skip: !fs.existsSync(tsc) && 'typescript is not installed', timeout: 120000 }, () => {
  const r = spawnSync(process.execPath, [tsc, '--noEmit', '-p', path.join(root, 'tsconfig.json')], { encoding: 'utf8' })
  assert.equal(r.status, 0, r.stdout + r.stderr)
})

test('index.d.ts names every error code the contract lists', () => {
  const dts = fs.readFileSync(path.join(root, 'index.d.ts'), 'utf8')
  for (const code of ['E_ARG', 'E_SCHEMA', 'E_FRAME', 'E_AUTH', 'E_DRIFT', 'E_VERSION', 'E_READONLY', 'E_SNAPSHOT', 'E_STALE', 'E_CLOSED', 'E_SQLITE', 'E_GONE']) {
    assert.match(dts, new RegExp(`'${code}'`))
  }
})
