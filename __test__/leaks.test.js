'use strict'

// Nothing grows with use: native memory (RSS outside V8's heap), the V8 heap in use and the
// process's active resources are the same after the bulk of each workload as after its warmup
// (each scenario in its own process, with --expose-gc).

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { execFile } = require('node:child_process')
const { promisify } = require('node:util')
const { startRedis } = require('./helpers/redis-server.js')

const run = promisify(execFile)
const fixture = path.join(__dirname, 'fixtures', 'leaks.js')
// Allocator noise, not a leak: a leak of even 100 bytes per operation would show as 9 MB here.
const SLACK = 8 * 1024 * 1024
const mb = (bytes) => `${(bytes / 1048576).toFixed(1)} MB`

describe('leaks', () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(async () => {
    await server.stop()
  })

  const cases = [
    ['setGet', '100,000 set/get pairs'],
    ['subscribeCycles', '10,000 subscribe/unsubscribe cycles'],
    ['adapters', '1,000 adapters created, used and closed'],
  ]
  for (const backend of ['memory', 'redis']) {
    for (const [scenario, title] of cases) {
      it(`${backend}: ${title} leave RSS and active resources flat`, async () => {
        const { stdout } = await run(process.execPath, ['--expose-gc', fixture, scenario, backend, server.url], { timeout: 120000 })
        const { outsideHeapGrowth, heapGrowth, before, after } = JSON.parse(stdout)
        assert.deepEqual(after, before)
        assert.ok(outsideHeapGrowth < SLACK, `native memory grew by ${mb(outsideHeapGrowth)}`)
        assert.ok(heapGrowth < SLACK / 2, `the JS heap grew by ${mb(heapGrowth)}`)
      })
    }
  }
})
