import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
const cjs = require('./index.js')
export const Replicator = cjs.Replicator
export const QuiltError = cjs.QuiltError
export default cjs
