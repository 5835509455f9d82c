'use strict'
// DEBUG=quilt* logging, off by default. When off, `debug(...)` is a no-op
// function, so call sites cost one call and no formatting.
const util = require('node:util')

function enabled (ns) {
  const spec = process.env.DEBUG || ''
  return spec.split(/[\s,]+/).filter(Boolean).some((p) => {
    if (p.startsWith('-')) return false
    const re = new RegExp('^' + p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$')
    return re.test(ns)
  })
}

module.exports = function debug (ns) {
  if (!enabled(ns)) {
    const off = () => {}
    off.enabled = false
    return off
  }
  const on = (fmt, ...args) => process.stderr.write(`${ns} ${util.format(fmt, ...args)}\n`)
  on.enabled = true
  return on
}
