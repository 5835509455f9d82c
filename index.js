'use strict'
// Public entry of quilt-sqlite. The native addon (loaded by the generated
// binding.js) does the SQLite, merge and protocol work; this file owns what
// lives on the JS side: send callbacks, per-turn batching, timers, events,
// waiting for tokens and error objects with a `code`.
const { Replicator } = require('./lib/replicator.js')
const { QuiltError } = require('./lib/errors.js')

module.exports = { Replicator, QuiltError }
module.exports.default = module.exports
