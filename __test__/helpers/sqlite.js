'use strict'
// A plain SQLite handle for tests that inspect files directly: better-sqlite3
// under Node, bun:sqlite under Bun (which cannot load better-sqlite3). Only
// the shared surface is used: new Database(file, { readonly }), prepare().all/get/run, exec, close.
if (process.versions.bun) {
  const { Database: BunDatabase } = require('bun:sqlite')
  module.exports = class Database extends BunDatabase {
    constructor (file, options = {}) {
      super(file, options.readonly ? { readonly: true } : { create: true, readwrite: true })
    }
  }
} else {
  module.exports = require('better-sqlite3')
}
