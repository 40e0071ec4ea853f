'use strict'

const assert = require('node:assert/strict')

// For assert.rejects/throws: the error is a `type` carrying the store error `code`.
const hasCode = (code, type = Error) => (err) => {
  assert.ok(err instanceof type, `expected a ${type.name}, got ${err && err.constructor.name}: ${err && err.message}`)
  assert.equal(err.code, code)
  return true
}

// A stream id 'ms-seq' as [ms, seq], numbers as Redis compares them.
function parseId(id) {
  const match = /^(\d+)-(\d+)$/.exec(id)
  assert.ok(match, `${JSON.stringify(id)} is an 'ms-seq' id`)
  return [BigInt(match[1]), BigInt(match[2])]
}

// Orders two stream ids as Redis does (numbers, not text).
function compareIds(a, b) {
  const [am, as] = parseId(a)
  const [bm, bs] = parseId(b)
  if (am !== bm) return am < bm ? -1 : 1
  return as === bs ? 0 : as < bs ? -1 : 1
}

module.exports = { hasCode, parseId, compareIds }
