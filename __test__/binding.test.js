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
  const source = fs.readFileSync(path.join(__dirname, '..', 'index.js'), 'utf8')
  const taken = /const \{([^}]*)\} = native\.Operation/.exec(source)[1]
  const names = [...taken.matchAll(/(\w+): [A-Z_]+/g)].map((m) => m[1]).sort()
  assert.deepEqual(Object.keys(native.Operation).filter((k) => Number.isNaN(Number(k))).sort(), names)
  assert.equal(names.length, 19)
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

it('with no native build for this platform, the loader says what it looked for, not an npm bug', async () => {
  const os = require('node:os')
  const { execFile } = require('node:child_process')
  const { promisify } = require('node:util')
  // The JS package without binding.js or any addon beside it.
  const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-bare-'))
  fs.cpSync(path.join(__dirname, '..', 'lib'), path.join(bare, 'lib'), { recursive: true })
  fs.copyFileSync(path.join(__dirname, '..', 'index.js'), path.join(bare, 'index.js'))
  try {
    await assert.rejects(promisify(execFile)(process.execPath, ['-e', "require('./index.js')"], { cwd: bare }), (err) => {
      assert.match(err.stderr, new RegExp(`kindling has no native build for ${process.platform} ${process.arch}`))
      assert.match(err.stderr, /looked for the package kindling-linux-x64-gnu|looked for the package kindling-/)
      assert.match(err.stderr, /Builds exist for: kindling-linux-x64-gnu, /)
      assert.doesNotMatch(err.stderr, /npm has a bug/)
      return true
    })
  } finally {
    fs.rmSync(bare, { recursive: true, force: true })
  }
})
