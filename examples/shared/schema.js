'use strict'
// The todo table every example replicates. A table is replicated when a
// `<table>_patches` table sits next to it (see API.md, "Tables").
const migrations = [
  {
    up: `CREATE TABLE todo (id INTEGER NOT NULL, tenantId INTEGER NOT NULL,
                           title TEXT, done INTEGER, deletedAt INTEGER,
                           PRIMARY KEY (id, tenantId)) STRICT;
         CREATE TABLE todo_patches (_patchedAt INTEGER NOT NULL,
                                    _sequenceId INTEGER NOT NULL,
                                    _peerId INTEGER NOT NULL,
                                    id INTEGER, tenantId INTEGER, title TEXT,
                                    done INTEGER, deletedAt INTEGER) STRICT;`,
    down: 'DROP TABLE todo_patches; DROP TABLE todo;'
  }
]

/**
 * Turn a JSON body into a todo row. Only the columns present in the body are
 * written (a partial update); `id` is generated when missing.
 */
function todoFromBody (body, randomId) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    const err = new TypeError('body must be a JSON object')
    err.status = 400
    throw err
  }
  const row = { id: body.id ?? randomId(), tenantId: body.tenantId ?? 1 }
  for (const col of ['title', 'done', 'deletedAt']) {
    if (col in body) row[col] = typeof body[col] === 'boolean' ? Number(body[col]) : body[col]
  }
  return row
}

/** Parse `PEERS=2@127.0.0.1:4002,3@127.0.0.1:4003` into [{ id, host, port }]. */
function parsePeers (spec) {
  if (!spec) return []
  return spec.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
    const m = /^(\d+)@([^:]+):(\d+)$/.exec(s)
    if (!m) throw new Error(`PEERS: "${s}" is not id@host:port`)
    return { id: Number(m[1]), host: m[2], port: Number(m[3]) }
  })
}

const SELECT_ALL = 'SELECT id, tenantId, title, done, deletedAt FROM todo ORDER BY tenantId, id'
const SELECT_ONE = 'SELECT id, tenantId, title, done, deletedAt FROM todo WHERE id = ? AND tenantId = ?'

const OPENMETRICS = 'application/openmetrics-text; version=1.0.0; charset=utf-8'

module.exports = { migrations, todoFromBody, parsePeers, SELECT_ALL, SELECT_ONE, OPENMETRICS }
