#!/usr/bin/env node
'use strict'
// `npm install` hook. If a prebuilt binary for this platform loads (an
// optional `quilt-sqlite-<platform>` package, or a `quilt.<platform>.node`
// next to binding.js), there is nothing to do. Otherwise build the addon
// from source with the local Rust toolchain: through @napi-rs/cli when it is
// installed (a clone of the repo), else with plain cargo. Nothing is ever
// downloaded.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const log = (m) => process.stderr.write(`quilt-sqlite: ${m}\n`)

function loads () {
  const r = spawnSync(process.execPath, ['-e', "require('./binding.js')"], { cwd: root, stdio: 'ignore' })
  return r.status === 0
}

function platformFile () {
  const { platform, arch } = process
  let abi = ''
  if (platform === 'linux') {
    const report = process.report && process.report.getReport ? process.report.getReport() : null
    const glibc = report && report.header && report.header.glibcVersionRuntime
    abi = glibc ? '-gnu' : '-musl'
  } else if (platform === 'win32') abi = '-msvc'
  return `quilt.${platform}-${arch}${abi}.node`
}

function run (cmd, args) {
  log(`${cmd} ${args.join(' ')}`)
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' })
  return r.status === 0
}

// In a git checkout the addon must come from these sources: a published
// `quilt-sqlite-<platform>` package (installed as an optional dependency)
// would load too, but it holds the released code, not this tree's.
function prebuilt () {
  if (fs.existsSync(path.join(root, '.git'))) return fs.existsSync(path.join(root, platformFile())) && loads()
  return loads()
}

function main () {
  if (process.env.QUILT_SKIP_BUILD) return 0
  if (prebuilt()) return 0
  log('no prebuilt binary for this platform; building from source (needs Rust, about 4-5 minutes)')
  const napi = path.join(root, 'node_modules', '.bin', process.platform === 'win32' ? 'napi.cmd' : 'napi')
  if (fs.existsSync(napi) && fs.existsSync(path.join(root, 'Cargo.toml'))) {
    if (run(napi, ['build', '--platform', '--release', '--features', 'napi-binding', '--js', 'binding.js', '--dts', 'binding.d.ts']) && loads()) return 0
  }
  const cargo = spawnSync('cargo', ['--version'], { stdio: 'ignore', shell: process.platform === 'win32' })
  if (cargo.status !== 0) {
    log('no prebuilt binary matches this platform and cargo is not installed: install Rust (https://rustup.rs) and run npm install again')
    return 1
  }
  if (!run('cargo', ['build', '--release', '--features', 'napi-binding'])) return 1
  const lib = { linux: 'libquilt.so', darwin: 'libquilt.dylib', win32: 'quilt.dll' }[process.platform] || 'libquilt.so'
  const built = path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), 'release', lib)
  fs.copyFileSync(built, path.join(root, platformFile()))
  if (!loads()) {
    log(`built ${lib} but binding.js cannot load it`)
    return 1
  }
  return 0
}

process.exitCode = main()
