'use strict'

// `npm test` on a machine without redis-server says so in one line before any suite runs.

const { it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const preflight = path.join(__dirname, 'helpers', 'preflight.js')

it('names each missing server binary and how to install it, and fails', () => {
  // A PATH that holds node and nothing else.
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-path-'))
  fs.symlinkSync(process.execPath, path.join(bin, 'node'))
  const run = spawnSync(process.execPath, [preflight], { env: { PATH: bin }, encoding: 'utf8' })
  fs.rmSync(bin, { recursive: true, force: true })
  assert.equal(run.status, 1)
  assert.match(run.stderr, /^redis-server not found: .*install redis-server/m)
  assert.match(run.stderr, /^openssl not found: .*install openssl/m)
})

it('passes quietly when everything is there', () => {
  const run = spawnSync(process.execPath, [preflight], { encoding: 'utf8' })
  assert.equal(run.status, 0)
  assert.equal(run.stderr, '')
})
