'use strict'

// Memory-only behaviour: named and private stores, millisecond TTLs, reclaiming expired keys.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const native = require('../binding.js')
const { createMemoryStoreAdapter } = require('../index.js')
const { waitUntil, collect } = require('./helpers/wait.js')
const { hasCode } = require('./helpers/expect.js')

let names = 0
const uniqueName = () => `memory-test-${process.pid}-${++names}`

// The entries a named store physically holds, expired or not: internal, for reclaim tests.
function entriesHeld(name) {
  const probe = native.createMemory(name, '', 1024, () => {})
  const count = native.memoryEntryCount(probe)
  native.close(probe)
  return count
}

describe('memory store', () => {
  it('adapters of one name share data; other names and unnamed stores do not', async () => {
    const name = uniqueName()
    const a = createMemoryStoreAdapter({ name })
    const b = createMemoryStoreAdapter({ name })
    const other = createMemoryStoreAdapter({ name: uniqueName() })
    const privateOne = createMemoryStoreAdapter()
    const privateTwo = createMemoryStoreAdapter()
    await a.set('k', 'shared')
    assert.equal(await b.get('k'), 'shared')
    assert.equal(await other.get('k'), null)
    await privateOne.set('k', 'mine')
    assert.equal(await privateTwo.get('k'), null)
    assert.deepEqual(a.client, { backend: 'memory', name })
    assert.deepEqual(privateOne.client, { backend: 'memory', name: null })
    await Promise.all([a, b, other, privateOne, privateTwo].map((s) => s.close()))
  })

  it('messages past maxPubSubBacklog are dropped for that subscriber, reported once, and delivery resumes', async () => {
    const errors = []
    let reported
    const report = new Promise((resolve) => (reported = resolve))
    const store = createMemoryStoreAdapter({ maxPubSubBacklog: 10_000, onError: (err) => reported(errors.push(err)) })
    const other = createMemoryStoreAdapter({ name: uniqueName() })
    const got = []
    await store.subscribe('c', (message) => got.push(message.i))
    const payload = 'x'.repeat(1000)
    // Published while JS cannot take any: about ten fit in 10,000 bytes.
    for (let i = 0; i < 100; i++) store.publish('c', { i, payload })
    // Reported in the same drain that delivers what fit, which takes the backlog to nothing.
    await report
    const next = collect(1)
    await store.subscribe('next', next.callback)
    await store.publish('next', 'after')
    await next.all
    assert.ok(got.length >= 9 && got.length <= 11, `${got.length} delivered`)
    assert.deepEqual(got, [...Array(got.length).keys()], 'the first ones, in order')
    assert.equal(errors.length, 1)
    hasCode('ERR_STORE_CONNECTION')(errors[0])
    assert.match(errors[0].message, /maxPubSubBacklog.*dropped/)
    await store.close()
    await other.close()
  })

  it('a named store keeps its data after every adapter of it closed', async () => {
    const name = uniqueName()
    const first = createMemoryStoreAdapter({ name })
    await first.set('persisted', [1, 2])
    await first.close()
    const later = createMemoryStoreAdapter({ name })
    assert.deepEqual(await later.get('persisted'), [1, 2])
    await later.close()
  })

  it('TTLs have sub-second precision', async () => {
    const store = createMemoryStoreAdapter()
    await store.set('ms', 1, { ttl: 0.03 })
    await store.set('second', 1, { ttl: 1 })
    assert.equal(await store.has('ms'), true)
    await waitUntil(async () => !(await store.has('ms')), { everyMs: 1 })
    // A 30 ms TTL ran out while a 1 s one did not: the TTL is not rounded to seconds.
    assert.equal(await store.has('second'), true)
    await store.set('tiny', 1, { ttl: 0.0001 })
    await waitUntil(async () => (await store.get('tiny')) === null, { everyMs: 1 })
    await store.close()
  })

  it('reclaims expired keys that nobody reads', async () => {
    const name = uniqueName()
    const store = createMemoryStoreAdapter({ name })
    // Memory calls complete inside the call, so all of this is written before any TTL runs out.
    const writes = []
    for (let i = 0; i < 1000; i++) writes.push(store.set(`short:${i}`, i, { ttl: 0.1 + (i % 10) / 1000 }))
    writes.push(store.set('stays', 'here'), store.set('rewritten', 1, { ttl: 0.1 }), store.set('rewritten', 2))
    writes.push(store.set('expired-later', 1), store.expire('expired-later', 0.1))
    assert.equal(entriesHeld(name), 1003)
    await Promise.all(writes)
    await waitUntil(() => entriesHeld(name) === 2, { what: 'reclaim' })
    assert.equal(await store.get('stays'), 'here')
    assert.equal(await store.get('rewritten'), 2)
    await store.close()
  })

  it('two copies of the module in one thread keep their calls apart', async () => {
    const first = require('../index.js')
    for (const file of Object.keys(require.cache)) if (file.endsWith('/index.js') || file.includes('/lib/')) delete require.cache[file]
    const second = require('../index.js')
    assert.notEqual(first, second)
    const a = first.createMemoryStoreAdapter()
    const b = second.createMemoryStoreAdapter()
    await b.set('bk', 'from b')
    await a.set('ak', 'from a')
    assert.equal(await a.get('ak'), 'from a')
    assert.equal(await b.get('ak'), null)
    assert.equal(await b.get('bk'), 'from b')
    await Promise.all([a.close(), b.close()])
  })

  it('a blocking read in a worker thread is woken by an append from this thread, and a worker ended mid-read harms nothing', async () => {
    const { Worker } = require('node:worker_threads')
    const name = `worker-streams-${process.pid}`
    const store = createMemoryStoreAdapter({ name })
    await store.xgroupCreate('jobs', 'workers', '$')
    const source = `
      const { parentPort, workerData } = require('node:worker_threads')
      const { createMemoryStoreAdapter } = require(workerData.index)
      const store = createMemoryStoreAdapter({ name: workerData.name })
      // Waiting in the store once the call returns: then the main thread is told.
      const read = store.xreadgroup('jobs', 'workers', workerData.consumer, { blockMs: 60000 })
      parentPort.postMessage('reading')
      read.then((entries) => parentPort.postMessage(entries))
    `
    const start = (consumer) => new Worker(source, { eval: true, workerData: { index: require.resolve('../index.js'), name, consumer } })
    const next = (worker) => new Promise((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
    })
    // A worker ended while its read waits: its read, first in line, must not take the entry.
    const ended = start('gone')
    await next(ended)
    await ended.terminate()

    const worker = start('reader')
    await next(worker)
    const read = next(worker)
    const id = await store.xadd('jobs', { job: 1 })
    assert.deepEqual(await read, [{ id, message: { job: 1 } }])
    await worker.terminate()
    await store.close()
  })

  it('refuses bad options', () => {
    for (const bad of [1, 'x', { name: 1 }, { name: '' }, { keyPrefix: 2 }, { onError: 1 }, { nmae: 'typo' }]) {
      assert.throws(() => createMemoryStoreAdapter(bad), (err) => err instanceof TypeError && err.code === 'ERR_STORE_INVALID_ARGUMENT')
    }
  })
})
