'use strict'

const assert = require('node:assert/strict')

// For assert.rejects/throws: the error is a `type` carrying the store error `code`.
const hasCode = (code, type = Error) => (err) => {
  assert.ok(err instanceof type, `expected a ${type.name}, got ${err && err.constructor.name}: ${err && err.message}`)
  assert.equal(err.code, code)
  return true
}

module.exports = { hasCode }
