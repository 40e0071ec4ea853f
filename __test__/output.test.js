'use strict'

// A passing run prints nothing that looks like a failure: warnings a test expects stay out.

const { it } = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { execFile } = require('node:child_process')
const { promisify } = require('node:util')

// Outside this runner's context, so the child prints its own report.
function childEnv() {
  const env = { ...process.env }
  delete env.NODE_TEST_CONTEXT
  return env
}

it('the warning the default onError test expects is not printed', async () => {
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [
    '--test', '--test-reporter=tap', '--test-name-pattern=the default onError is a process warning', path.join(__dirname, 'contract.test.js'),
  ], { env: childEnv() })
  // Once per backend: memory, Redis, Redis through Sentinel, Redis Cluster.
  assert.match(stdout, /# pass 4/)
  assert.doesNotMatch(stdout + stderr, /Error: to the warning/)
})
