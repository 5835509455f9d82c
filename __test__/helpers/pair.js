'use strict'
// Two (or more) replicators in one process wired through addPeer and
// applyPatches, with frames queued so a test can count and deliver them.
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { Replicator } = require('../..')

const SCHEMA = {
  up: `CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY, a TEXT, b INTEGER, deletedAt INTEGER) STRICT;
       CREATE TABLE t_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, a TEXT, b INTEGER, deletedAt INTEGER) STRICT;
       CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL, title TEXT, done INTEGER, deletedAt INTEGER,
         PRIMARY KEY (id, tenantId)) STRICT;
       CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL, _sequenceId INTEGER NOT NULL, _peerId INTEGER NOT NULL,
         id INTEGER, tenantId INTEGER, title TEXT, done INTEGER, deletedAt INTEGER) STRICT;
       CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);`
}

/** A scratch directory, replicators opened in it, and a cleanup. */
function cluster (prefix = 'quilt-pair-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  const opened = []
  let n = 0
  // Frames in flight, per receiving peer id: [{ from, frame }].
  const queues = new Map()
  const byId = new Map()
  return {
    open (peerId, opts = {}) {
      const r = new Replicator({ path: path.join(dir, `r-${n++}.db`), peerId, heartbeatMs: 0, ...opts })
      opened.push(r)
      byId.set(peerId, r)
      queues.set(peerId, [])
      r.migrate([SCHEMA])
      return r
    },
    /** Connect every opened replicator with every other. */
    connect () {
      for (const a of opened) {
        for (const b of opened) {
          if (a === b) continue
          a.addPeer(b.peerId, (frame) => queues.get(b.peerId).push({ from: a.peerId, frame: Buffer.from(frame) }))
        }
      }
      this.deliver()
    },
    /** Every replicator flushes, then every frame is delivered. */
    sync () {
      for (const r of opened) r.flush()
      this.deliver()
    },
    /** Frames queued for `peerId` (taken). */
    take (peerId) {
      const q = queues.get(peerId)
      return q.splice(0, q.length)
    },
    /** Deliver every queued frame (and the answers they cause) until quiet. */
    deliver (rounds = 20) {
      for (let i = 0; i < rounds; i++) {
        let moved = 0
        for (const [id, q] of queues) {
          const r = byId.get(id)
          for (const { frame } of q.splice(0, q.length)) {
            r.applyPatches(frame)
            moved++
          }
        }
        if (moved === 0) return
      }
    },
    async close () {
      for (const r of opened) await r.close({ timeoutMs: 0 }).catch(() => {})
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

module.exports = { cluster, SCHEMA }
