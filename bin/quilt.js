#!/usr/bin/env node
'use strict'
// quilt: snapshot, restore, inspect and list from the command line.
//   quilt snapshot <db> <url>        take a snapshot of a database file
//   quilt restore <url> <db>         restore the latest (or --snapshot ID) into a new file
//   quilt inspect <db>               schema version, peers, seq vectors, pending
//   quilt ls <url>                   list the snapshots under a url
// S3 settings: --endpoint URL --region R --allow-http, or the AWS_* env vars.
const { Replicator } = require('../index.js')
const snapshots = require('../lib/snapshot.js')

const USAGE = `usage:
  quilt snapshot <db> <url> [store flags]
  quilt restore <url> <db> [--overwrite] [--snapshot ID] [store flags]
  quilt inspect <db>
  quilt ls <url> [store flags]
store flags: --endpoint URL  --region REGION  --allow-http  (or AWS_* env vars)`

function parse (argv) {
  const pos = []
  const flags = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--overwrite' || a === '--allow-http' || a === '--json' || a === '--help' || a === '-h') flags[a.replace(/^-+/, '')] = true
    else if (a.startsWith('--')) {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`)
      flags[a.slice(2)] = argv[++i]
    } else pos.push(a)
  }
  return { pos, flags }
}

function storeOptions (flags) {
  const o = {}
  if (flags.endpoint) o.endpoint = flags.endpoint
  if (flags.region) o.region = flags.region
  if (flags['allow-http']) o.allowHttp = 'true'
  return Object.keys(o).length ? o : undefined
}

function human (n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`
}

function progress (label) {
  if (!process.stderr.isTTY) return () => {}
  return ({ bytesDone, bytesTotal }) => {
    const pct = bytesTotal ? Math.min(100, (100 * bytesDone) / bytesTotal).toFixed(0) : '?'
    process.stderr.write(`\r${label} ${human(bytesDone)} / ${human(bytesTotal)} (${pct}%)   `)
  }
}

async function main () {
  const { pos, flags } = parse(process.argv.slice(2))
  const [cmd, a, b] = pos
  if (!cmd || flags.help || flags.h) {
    console.log(USAGE)
    return cmd ? 0 : 2
  }
  const options = storeOptions(flags)
  switch (cmd) {
    case 'snapshot': {
      if (!a || !b) throw new Error('quilt snapshot <db> <url>')
      if (!require('node:fs').existsSync(a)) throw new Error(`${a} does not exist`)
      const r = new Replicator({ path: a, heartbeatMs: 0, snapshot: { url: b, options } })
      r.on('snapshot:progress', progress('snapshot'))
      try {
        const info = await r.snapshot()
        if (process.stderr.isTTY) process.stderr.write('\n')
        console.log(flags.json ? JSON.stringify(info) : `snapshot ${info.id}: ${human(info.size)} -> ${human(info.bytes)} at ${info.url}\nsha256 ${info.sha256}`)
      } finally {
        await r.close({ timeoutMs: 0 })
      }
      return 0
    }
    case 'restore': {
      if (!a || !b) throw new Error('quilt restore <url> <db>')
      const info = await Replicator.restore({ from: a, path: b, options, overwrite: !!flags.overwrite, snapshot: flags.snapshot, onProgress: progress('restore') })
      if (process.stderr.isTTY) process.stderr.write('\n')
      console.log(flags.json ? JSON.stringify(info) : `restored ${info.id} into ${b} (new peer id ${info.peerId}; snapshot by peer ${info.snapshotPeerId})`)
      return 0
    }
    case 'inspect': {
      if (!a) throw new Error('quilt inspect <db>')
      const fs = require('node:fs')
      if (!fs.existsSync(a)) throw new Error(`${a} does not exist`)
      const r = new Replicator({ path: a, heartbeatMs: 0 })
      try {
        const s = r.status()
        if (flags.json) {
          console.log(JSON.stringify(s))
        } else {
          console.log(`peer id         ${s.peerId}`)
          console.log(`schema version  ${s.schemaVersion}`)
          console.log(`local seq       ${s.seq}`)
          console.log(`pending         ${s.pending} kept patches waiting for a schema`)
          console.log('origins         peer id  contiguous  last seen seq  missing')
          for (const p of s.peers) console.log(`                ${String(p.peerId).padStart(7)}  ${String(p.contiguousSeq).padStart(10)}  ${String(p.lastSeq).padStart(13)}  ${String(p.missing).padStart(7)}`)
        }
      } finally {
        await r.close({ timeoutMs: 0 })
      }
      return 0
    }
    case 'ls': {
      if (!a) throw new Error('quilt ls <url>')
      const all = await snapshots.list(a, options)
      if (flags.json) console.log(JSON.stringify(all))
      else {
        if (all.length === 0) console.log('no snapshots')
        for (const s of all) console.log(`${s.id}  ${new Date(s.createdAt).toISOString()}  peer ${s.peerId}  schema v${s.schemaVersion}  ${human(s.size)} -> ${human(s.bytes)}`)
      }
      return 0
    }
    default:
      console.error(USAGE)
      return 2
  }
}

main().then((code) => { process.exitCode = code }, (e) => {
  console.error(`quilt: ${e.code ? e.code + ': ' : ''}${e.message}`)
  process.exitCode = 1
})
