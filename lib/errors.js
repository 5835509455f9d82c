'use strict'
// Errors with a string `code` (API.md, Errors).
//
// Native calls throw (or reject with) finished error objects: the addon
// builds a `TypeError`/`RangeError` with `code: 'E_ARG'` for bad arguments,
// and for everything else an instance of `QuiltError` (registered below)
// whose `code` it sets itself (src/binding/mod.rs, `js_error`). JS passes
// them on untouched. `make` builds the errors that start in JS (E_STALE,
// E_TIMEOUT, E_CLOSED while closing, 'error' events drained from the core,
// bad arguments to JS-only parameters such as callbacks).

const binding = require('../binding.js')

class QuiltError extends Error {
  constructor (code, message, options) {
    super(message, options)
    this.name = 'QuiltError'
    this.code = code
  }
}

binding.setErrorClass(QuiltError)

function make (code, klass, message) {
  let err
  if (klass === 'TypeError') err = new TypeError(message)
  else if (klass === 'RangeError') err = new RangeError(message)
  else err = new QuiltError(code, message)
  err.code = code
  return err
}

const typeError = (message) => make('E_ARG', 'TypeError', message)
const rangeError = (message) => make('E_ARG', 'RangeError', message)
const closedError = (message = 'the replicator is closed') => make('E_CLOSED', 'Error', message)

module.exports = { QuiltError, make, typeError, rangeError, closedError }
