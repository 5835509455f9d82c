'use strict'
const { make } = require('./errors.js')
module.exports = {
  take () { return Promise.reject(make('E_SNAPSHOT', 'Error', 'snapshots are not built yet')) },
  restore () { return Promise.reject(make('E_SNAPSHOT', 'Error', 'snapshots are not built yet')) }
}
