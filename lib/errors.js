'use strict'
// Errors with a string `code` (API.md, Errors). The native layer encodes
// them as `QUILT\x1f<code>\x1f<class>\x1f<message>`; `fromNative` rebuilds
// the right class: TypeError and RangeError for bad arguments, Error else.

class QuiltError extends Error {
  constructor (code, message, options) {
    super(message, options)
    this.name = 'QuiltError'
    this.code = code
  }
}

function make (code, klass, message) {
  let err
  if (klass === 'TypeError') err = new TypeError(message)
  else if (klass === 'RangeError') err = new RangeError(message)
  else err = new QuiltError(code, message)
  err.code = code
  return err
}

function fromNative (e) {
  if (e && typeof e.message === 'string' && e.message.startsWith('QUILT\x1f')) {
    const [, code, klass, ...rest] = e.message.split('\x1f')
    return make(code, klass, rest.join('\x1f'))
  }
  if (e && typeof e === 'object' && !e.code) e.code = 'E_ARG'
  return e
}

const typeError = (message) => make('E_ARG', 'TypeError', message)
const rangeError = (message) => make('E_ARG', 'RangeError', message)

module.exports = { QuiltError, fromNative, make, typeError, rangeError }
