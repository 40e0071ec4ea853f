'use strict'

// Blocking stream reads on Redis: each on a pooled connection of its own, so a read waiting on
// the server never holds up the adapter's other calls; the pool's limit, its wait for a free
// connection, the read's own deadline, and close() ending reads at once.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startRedis } = require('./helpers/redis-server.js')
const { waitUntil } = require('./helpers/wait.js')
const { createRedisStoreAdapter, createMemoryStoreAdapter } = require('../index.js')

let server
before(async () => {
  server = await startRedis()
})
after(async () => {
  await server.stop()
})

let streams = 0
const freshStream = () => `blocking:${++streams}`

// Clients the server holds in a blocking command.
async function blockedClients(on = server) {
  return Number(/^blocked_clients:(\d+)/m.exec(await on.cli('INFO', 'clients'))[1])
}

// Starts a read of group 'g' and returns it (wrapped, so that it is not awaited here) once the
// server holds it.
async function blockedRead(adapter, stream, consumer) {
  const before = await blockedClients()
  const read = adapter.xreadgroup(stream, 'g', consumer, { blockMs: 60000 })
  await waitUntil(async () => (await blockedClients()) === before + 1, { what: 'the read blocked' })
  return { read, before }
}

// How a promise has ended so far, without waiting for it.
function watch(promise) {
  const state = { settled: false, value: undefined, error: undefined }
  promise.then((value) => Object.assign(state, { settled: true, value }), (error) => Object.assign(state, { settled: true, error }))
  return state
}

describe('blocking stream reads (redis)', () => {
  it('16 reads waiting on the server hold up no other call, and an append wakes each group', async () => {
    const adapter = createRedisStoreAdapter({ url: server.url })
    const stream = freshStream()
    const groups = Array.from({ length: 16 }, (_, i) => `g${i}`)
    for (const group of groups) await adapter.xgroupCreate(stream, group, '$')
    const reads = groups.map((group) => watch(adapter.xreadgroup(stream, group, 'reader', { blockMs: 20000 })))
    await waitUntil(async () => (await blockedClients()) === 16, { what: '16 blocked reads' })

    // Other calls go through while every read waits.
    for (let i = 0; i < 50; i++) await adapter.set(`k${i}`, i)
    assert.deepEqual(await adapter.mget(['k0', 'k49']), [0, 49])
    assert.equal(reads.filter((read) => read.settled).length, 0)

    const id = await adapter.xadd(stream, { wake: true })
    await waitUntil(() => reads.every((read) => read.settled), { what: 'every read woken' })
    for (const read of reads) assert.deepEqual(read.value, [{ id, message: { wake: true } }])
    await adapter.close()
  })

  it('past maxBlockingConnections, a read waits for a free connection and then reads', async () => {
    const adapter = createRedisStoreAdapter({ url: server.url, maxBlockingConnections: 2 })
    const stream = freshStream()
    for (const group of ['a', 'b', 'c']) await adapter.xgroupCreate(stream, group, '$')
    const before = await blockedClients()
    const reads = ['a', 'b', 'c'].map((group) => watch(adapter.xreadgroup(stream, group, 'reader', { blockMs: 20000 })))
    await waitUntil(async () => (await blockedClients()) === before + 2, { what: 'two blocked reads' })
    // The third has no connection: the server holds only two.
    const connections = (await server.cli('CLIENT', 'LIST')).split('\n').filter((line) => line.includes('cmd=xreadgroup'))
    assert.equal(connections.length, 2)

    const id = await adapter.xadd(stream, 1)
    await waitUntil(() => reads.every((read) => read.settled), { what: 'all three reads' })
    // The third read got a connection freed by the first two, and the entry its group had not seen.
    for (const read of reads) assert.deepEqual(read.value, [{ id, message: 1 }])
    await adapter.close()
  })

  it('a read that finds no free connection within connectTimeout fails, retryable, having read nothing', async () => {
    const adapter = createRedisStoreAdapter({ url: server.url, maxBlockingConnections: 1, connectTimeout: 200 })
    const stream = freshStream()
    await adapter.xgroupCreate(stream, 'g', '$')
    const first = watch(adapter.xreadgroup(stream, 'g', 'one', { blockMs: 20000 }))
    await waitUntil(async () => (await blockedClients()) >= 1, { what: 'the first read blocked' })
    await assert.rejects(adapter.xreadgroup(stream, 'g', 'two', { blockMs: 20000 }), (err) => {
      assert.equal(err.code, 'ERR_STORE_CONNECTION')
      assert.equal(err.retryable, true)
      assert.match(err.message, /maxBlockingConnections/)
      return true
    })
    assert.equal(first.settled, false)
    const id = await adapter.xadd(stream, 'x')
    await waitUntil(() => first.settled, { what: 'the first read' })
    assert.deepEqual(first.value, [{ id, message: 'x' }])
    await adapter.close()
  })

  it("a read's deadline is blockMs plus commandTimeout: one that blocks past commandTimeout resolves []", async () => {
    const adapter = createRedisStoreAdapter({ url: server.url, commandTimeout: 100 })
    const stream = freshStream()
    await adapter.xgroupCreate(stream, 'g')
    assert.deepEqual(await adapter.xreadgroup(stream, 'g', 'c', { blockMs: 400 }), [])
    await adapter.close()
  })

  it('close() ends a waiting read at once with ERR_STORE_CLOSED and the server sees its connection go', async () => {
    const adapter = createRedisStoreAdapter({ url: server.url })
    const stream = freshStream()
    await adapter.xgroupCreate(stream, 'g', '$')
    const { read, before } = await blockedRead(adapter, stream, 'c')
    const closed = adapter.close()
    await assert.rejects(read, { code: 'ERR_STORE_CLOSED' })
    await closed
    await waitUntil(async () => (await blockedClients()) === before, { what: 'the blocked connection closed' })
    await assert.rejects(adapter.xreadgroup(stream, 'g', 'c', { blockMs: 10 }), { code: 'ERR_STORE_CLOSED' })
  })

  it('close() ends a read on the server at once, while the adapter still waits for its other calls', async () => {
    const adapter = createRedisStoreAdapter({ url: server.url })
    const stream = freshStream()
    await adapter.xgroupCreate(stream, 'g', '$')
    const { read } = await blockedRead(adapter, stream, 'closing')
    // A write the server holds (it counts as blocked too) keeps close() waiting.
    const readers = async () => (await server.cli('CLIENT', 'LIST')).split('\n').filter((line) => line.includes('cmd=xreadgroup')).length
    await server.cli('CLIENT', 'PAUSE', '60000', 'WRITE')
    try {
      const held = watch(adapter.set('held', 1))
      const closed = watch(adapter.close())
      await assert.rejects(read, { code: 'ERR_STORE_CLOSED' })
      await waitUntil(async () => (await readers()) === 0, { what: 'the read gone from the server' })
      assert.equal(held.settled, false)
      assert.equal(closed.settled, false)
      await server.cli('CLIENT', 'UNPAUSE')
      await waitUntil(() => closed.settled, { what: 'close()' })
      assert.equal(held.error, undefined)
    } finally {
      await server.cli('CLIENT', 'UNPAUSE')
    }
    // What is appended now goes to a live consumer, not to the closed one.
    const other = createRedisStoreAdapter({ url: server.url })
    const id = await other.xadd(stream, 'after')
    assert.deepEqual(await other.xreadgroup(stream, 'g', 'live'), [{ id, message: 'after' }])
    await other.close()
  })

  it('a connection lent to a read is reused by the next one', async () => {
    const adapter = createRedisStoreAdapter({ url: server.url })
    const stream = freshStream()
    await adapter.xgroupCreate(stream, 'g', '$')
    const countConnections = async () => (await server.cli('CLIENT', 'LIST')).split('\n').length
    assert.deepEqual(await adapter.xreadgroup(stream, 'g', 'c', { blockMs: 20 }), [])
    const afterFirst = await countConnections()
    for (let i = 0; i < 5; i++) assert.deepEqual(await adapter.xreadgroup(stream, 'g', 'c', { blockMs: 20 }), [])
    assert.equal(await countConnections(), afterFirst)
    await adapter.close()
  })
})

describe('close() and a read already answered', () => {
  it('a read whose entry came before close() resolves with it (memory: deterministic)', async () => {
    const name = `answered-${process.pid}`
    const a = createMemoryStoreAdapter({ name })
    const b = createMemoryStoreAdapter({ name })
    await a.xgroupCreate('s', 'g', '$')
    const read = a.xreadgroup('s', 'g', 'c1', { blockMs: 60000 })
    // b's append answers a's read inside the store; a's JS has not taken the answer yet.
    const id = await b.xadd('s', { job: 1 })
    const closing = a.close()
    assert.deepEqual(await read, [{ id, message: { job: 1 } }])
    await closing
    assert.deepEqual(await b.xreadgroup('s', 'g', 'c2'), [])
    await b.close()
  })
})

describe('replies with more than a million elements', () => {
  it('a scan page of 1.1 million keys arrives whole, and calls behind it are answered', async () => {
    const big = await startRedis('--enable-debug-command', 'yes')
    const adapter = createRedisStoreAdapter({ url: big.url })
    try {
      assert.equal(await big.cli('DEBUG', 'POPULATE', '1100000', 'many'), 'OK')
      const page = adapter.scan('many:*', { count: 2000000 })
      const after = adapter.increment('counter')
      const { keys, cursor } = await page
      assert.equal(cursor, '0')
      assert.equal(keys.length, 1100000)
      assert.equal(await after, 1)
    } finally {
      await adapter.close()
      await big.stop()
    }
  })
})

describe('a blocking read and a full server (maxclients)', () => {
  it('waits within connectTimeout for a slot, then reads', async () => {
    const net = require('node:net')
    const full = await startRedis('--maxclients', '3')
    const adapter = createRedisStoreAdapter({ url: full.url, connectTimeout: 10000 })
    await adapter.xgroupCreate('s', 'g', '$')
    // The adapter's command connection and two more fill the server.
    const fillers = []
    for (let i = 0; i < 2; i++) {
      const socket = net.connect(full.port, '127.0.0.1')
      await new Promise((resolve) => socket.once('connect', resolve))
      fillers.push(socket)
    }
    // redis-cli would need a slot of its own: the server is asked through a filler instead.
    const ask = (socket, command) => new Promise((resolve) => {
      let reply = ''
      const onData = (chunk) => {
        reply += chunk
        const header = /^\$(\d+)\r\n/.exec(reply)
        if (header && reply.length >= header[0].length + Number(header[1])) {
          socket.off('data', onData)
          resolve(reply)
        }
      }
      socket.on('data', onData)
      socket.write(`${command}\r\n`)
    })
    const stat = async (name) => Number(new RegExp(`^${name}:(\\d+)`, 'm').exec(await ask(fillers[0], 'INFO'))[1])
    try {
      const read = watch(adapter.xreadgroup('s', 'g', 'c', { blockMs: 20000 }))
      await waitUntil(async () => (await stat('rejected_connections')) >= 2, { what: 'two refused connection attempts' })
      // A slot frees: the next attempt gets it, and the read waits on the server.
      fillers.pop().destroy()
      await waitUntil(async () => (await stat('blocked_clients')) === 1, { what: 'the read blocked' })
      assert.equal(read.settled, false)
      const id = await adapter.xadd('s', 'in')
      await waitUntil(() => read.settled, { what: 'the read' })
      assert.deepEqual(read.value, [{ id, message: 'in' }])
    } finally {
      fillers.forEach((socket) => socket.destroy())
      await adapter.close()
      await full.stop()
    }
  })
})

describe('a blocking read on a stream that goes away', () => {
  for (const backend of ['memory', 'redis']) {
    it(`ends with Redis's UNBLOCKED error when the stream is deleted or overwritten (${backend})`, async () => {
      const adapter = backend === 'redis' ? createRedisStoreAdapter({ url: server.url }) : createMemoryStoreAdapter()
      for (const end of [(stream) => adapter.delete(stream), (stream) => adapter.set(stream, 'a value now')]) {
        const stream = freshStream()
        await adapter.xgroupCreate(stream, 'g', '$')
        const before = backend === 'redis' ? await blockedClients() : 0
        // Watched from the start: the read may end before the delete's own reply comes.
        const read = assert.rejects(adapter.xreadgroup(stream, 'g', 'c', { blockMs: 60000 }), (err) => {
          assert.equal(err.code, 'ERR_STORE_REDIS')
          assert.match(err.message, /^UNBLOCKED the stream key no longer exists/)
          return true
        })
        if (backend === 'redis') await waitUntil(async () => (await blockedClients()) === before + 1, { what: 'the read blocked' })
        await end(stream)
        await read
      }
      await adapter.close()
    })
  }
})

describe('an append trimmed away at once (maxLen 0)', () => {
  for (const backend of ['memory', 'redis']) {
    it(`answers a waiting read with nothing, as Redis does (${backend})`, async () => {
      const adapter = backend === 'redis' ? createRedisStoreAdapter({ url: server.url }) : createMemoryStoreAdapter()
      const stream = freshStream()
      await adapter.xgroupCreate(stream, 'g', '$')
      const before = backend === 'redis' ? await blockedClients() : 0
      const read = watch(adapter.xreadgroup(stream, 'g', 'c', { blockMs: 60000 }))
      if (backend === 'redis') await waitUntil(async () => (await blockedClients()) === before + 1, { what: 'the read blocked' })
      await adapter.xadd(stream, 'gone', { maxLen: 0 })
      await waitUntil(() => read.settled, { what: 'the read answered' })
      assert.deepEqual(read.value, [])
      await adapter.close()
    })
  }
})
