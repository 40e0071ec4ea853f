'use strict'

// The server gone for 10 s under a steady load of calls: every call settles within its
// timeouts, nothing piles up, and the adapter serves again within a second of the return.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const { performance } = require('node:perf_hooks')
const { startRedis } = require('./helpers/redis-server.js')
const { createRedisStoreAdapter } = require('../index.js')

const COMMAND_TIMEOUT = 500
const CONNECT_TIMEOUT = 500
const OUTAGE_MS = 10_000
const CALLS_PER_TICK = 10
const TICK_MS = 5

describe('a 10 s outage under load', () => {
  it('settles every call in time, keeps memory flat and serves again within a second', async () => {
    const server = await startRedis()
    const store = createRedisStoreAdapter({
      url: server.url, commandTimeout: COMMAND_TIMEOUT, connectTimeout: CONNECT_TIMEOUT, onError: () => {},
    })
    await store.set('up', true)

    // Calls started at a fixed rate, not waiting for each other, as a busy app makes them.
    let started = 0
    let settled = 0
    let slowest = 0
    let maxInFlight = 0
    const failures = new Map()
    const call = () => {
      const begin = performance.now()
      started++
      const n = started
      const op = n % 2 ? store.set(`load:${n % 100}`, { n }) : store.get(`load:${n % 100}`)
      return op.then(() => true, (err) => {
        failures.set(err.code, (failures.get(err.code) ?? 0) + 1)
        return false
      }).finally(() => {
        settled++
        slowest = Math.max(slowest, performance.now() - begin)
      })
    }
    const load = setInterval(() => {
      for (let i = 0; i < CALLS_PER_TICK; i++) call()
      maxInFlight = Math.max(maxInFlight, started - settled)
    }, TICK_MS)

    // Native memory: RSS outside V8's heap, which grows its young generation under load anyway.
    const outsideHeap = () => process.memoryUsage().rss - process.memoryUsage().heapTotal
    const nativeBefore = outsideHeap()
    let nativeMax = nativeBefore
    const sampler = setInterval(() => (nativeMax = Math.max(nativeMax, outsideHeap())), 250)

    await server.stop('SIGKILL')
    const down = performance.now()
    await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS))
    const startedWhileDown = started
    await server.start()
    const back = performance.now()
    // The first call made after the server is back that succeeds.
    let servedAt
    while (servedAt === undefined) {
      if (await call()) servedAt = performance.now()
    }
    clearInterval(load)
    clearInterval(sampler)
    while (settled < started) await new Promise((resolve) => setImmediate(resolve))
    await store.close()
    await server.stop()

    assert.ok(back - down >= OUTAGE_MS)
    assert.ok(startedWhileDown > 1000, `${startedWhileDown} calls made`)
    for (const code of failures.keys()) assert.ok(['ERR_STORE_CONNECTION', 'ERR_STORE_TIMEOUT'].includes(code), code)
    // The slack covers timers firing late on a loaded machine.
    assert.ok(slowest <= COMMAND_TIMEOUT + CONNECT_TIMEOUT + 250, `slowest call settled after ${slowest.toFixed(0)} ms`)
    assert.ok(maxInFlight <= 2000, `${maxInFlight} calls in flight at most`)
    assert.ok(nativeMax - nativeBefore < 16 * 1024 * 1024, `native memory grew by ${((nativeMax - nativeBefore) / 1048576).toFixed(1)} MB`)
    assert.ok(servedAt - back <= 1000, `served again ${(servedAt - back).toFixed(0)} ms after the server returned`)
  })
})
