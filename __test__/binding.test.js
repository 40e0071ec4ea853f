'use strict'

// The JS side's hand-written lists against what Rust defines and exports.

const { it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const native = require('../binding.js')
const { codes } = require('../lib/errors.js')
const { errorCodes } = require('../index.js')

it('the error codes in lib/errors.js and index.d.ts are the ones Rust defines', () => {
  const defined = Object.values(native.ErrorCode).sort()
  assert.deepEqual(Object.values(codes).sort(), defined)
  assert.deepEqual(Object.values(errorCodes).sort(), defined)
  const types = fs.readFileSync(path.join(__dirname, '..', 'index.d.ts'), 'utf8')
  const union = /export type StoreErrorCode =([^]*?)\n\n/.exec(types)[1]
  assert.deepEqual([...union.matchAll(/'(ERR_STORE_\w+)'/g)].map((m) => m[1]).sort(), defined)
  const declared = /export declare const errorCodes: \{([^]*?)\}/.exec(types)[1]
  assert.deepEqual([...declared.matchAll(/'(ERR_STORE_\w+)'/g)].map((m) => m[1]).sort(), defined)
})

it('every operation index.js submits is one Rust decodes', () => {
  assert.deepEqual(Object.keys(native.Operation).filter((k) => Number.isNaN(Number(k))).sort(),
    ['Delete', 'Expire', 'Get', 'Has', 'Increment', 'Publish', 'Set', 'Subscribe', 'Unsubscribe'])
  const source = fs.readFileSync(path.join(__dirname, '..', 'index.js'), 'utf8')
  assert.doesNotMatch(source, /const (GET|SET|PUBLISH) = \d/, 'no operation number of its own')
})

it('a factory error keeps its code: only bad options are ERR_STORE_INVALID_ARGUMENT', () => {
  // A certificate authority that is not PEM is refused by Rust, as an invalid argument.
  const { createRedisStoreAdapter } = require('../index.js')
  assert.throws(() => createRedisStoreAdapter({ tls: { ca: 'not a certificate' } }), (err) => {
    assert.ok(err instanceof TypeError)
    assert.equal(err.code, 'ERR_STORE_INVALID_ARGUMENT')
    return true
  })
})
