'use strict'

// Big and hostile values: 50 MB round trips, a value past the server's limit, `__proto__`
// keys, and Pub/Sub payloads from other clients that are huge, binary or not UTF-8.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const { once } = require('node:events')
const { backends } = require('./helpers/backends.js')
const { startRedis } = require('./helpers/redis-server.js')
const { collect } = require('./helpers/wait.js')
const { hasCode } = require('./helpers/expect.js')
const { createRedisStoreAdapter } = require('../index.js')

for (const backend of backends) {
  describe(`values (${backend.name})`, () => {
    before(() => backend.setup())
    after(() => backend.teardown())

    it('a 50 MB value round-trips, and small values after it', async () => {
      const store = backend.create()
      const big = { blob: 'é'.repeat(25 * 1024 * 1024) } // 50 MB of UTF-8
      await store.set('big', big)
      const back = await store.get('big')
      assert.equal(back.blob.length, big.blob.length)
      assert.ok(back.blob === big.blob)
      await store.set('small', { ok: 1 })
      assert.deepEqual(await store.get('small'), { ok: 1 })
      await store.close()
    })

    it('JSON with __proto__ keys comes back as plain data and never pollutes Object.prototype', async () => {
      const store = backend.create()
      const hostile = JSON.parse('{"__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}')
      await store.set('hostile', hostile)
      const back = await store.get('hostile')
      const merged = { ...back }
      Object.assign({}, back)
      assert.equal(Object.getPrototypeOf(back), Object.prototype)
      assert.deepEqual(Object.keys(back).sort(), ['__proto__', 'constructor'])
      assert.equal({}.polluted, undefined)
      assert.equal(merged.polluted, undefined)
      assert.equal(Object.prototype.polluted, undefined)
      await store.close()
    })
  })
}

describe('values against a real server', () => {
  let server
  before(async () => {
    server = await startRedis('--proto-max-bulk-len', '1mb')
  })
  after(async () => {
    await server.stop()
  })

  it('a value past proto-max-bulk-len rejects with the server\'s words; the old value stays and the adapter goes on', async () => {
    const store = createRedisStoreAdapter({ url: server.url, onError: () => {} })
    await store.set('limited', 'old')
    await assert.rejects(store.set('limited', 'x'.repeat(2 * 1024 * 1024)), (err) => {
      hasCode('ERR_STORE_REDIS')(err)
      assert.match(err.message, /bulk length/)
      return true
    })
    assert.equal(await store.get('limited'), 'old')
    await store.close()
  })

  it('a 20 MB message another client publishes arrives whole', async () => {
    const roomy = await startRedis()
    try {
      const store = createRedisStoreAdapter({ url: roomy.url })
      const { callback, all } = collect(1)
      await store.subscribe('huge', callback)
      const socket = net.connect(roomy.port, '127.0.0.1')
      await once(socket, 'connect')
      const payload = Buffer.alloc(20 * 1024 * 1024, 0x71)
      socket.write(Buffer.concat([Buffer.from(`*3\r\n$7\r\nPUBLISH\r\n$4\r\nhuge\r\n$${payload.length}\r\n`), payload, Buffer.from('\r\n')]))
      const [{ message }] = await all
      socket.destroy()
      assert.equal(message.length, payload.length)
      assert.ok(message === 'q'.repeat(payload.length))
      await store.close()
    } finally {
      await roomy.stop()
    }
  })

  it('Pub/Sub payloads from other clients that are huge, binary or not UTF-8 arrive as strings', async () => {
    const errors = []
    const store = createRedisStoreAdapter({ url: server.url, onError: (err) => errors.push(err) })
    const { callback, all } = collect(4)
    await store.subscribe('raw', callback)
    // A raw client writing bytes no library would: invalid UTF-8, NUL, a 900 KB payload.
    const socket = net.connect(server.port, '127.0.0.1')
    await once(socket, 'connect')
    const publish = (payload) => {
      const channel = Buffer.from('raw')
      socket.write(Buffer.concat([
        Buffer.from(`*3\r\n$7\r\nPUBLISH\r\n$${channel.length}\r\n`), channel,
        Buffer.from(`\r\n$${payload.length}\r\n`), payload, Buffer.from('\r\n'),
      ]))
    }
    publish(Buffer.from([0xff, 0xfe, 0x00, 0x41]))
    publish(Buffer.from([0xc3])) // a lone lead byte
    publish(Buffer.alloc(900 * 1024, 0x7a))
    publish(Buffer.from('{"after":"all that"}'))
    const messages = (await all).map((m) => m.message)
    socket.destroy()
    assert.equal(messages[0], '\uFFFD\uFFFD\u0000A')
    assert.equal(messages[1], '\uFFFD')
    assert.equal(messages[2], 'z'.repeat(900 * 1024))
    assert.deepEqual(messages[3], { after: 'all that' })
    assert.deepEqual(errors, [])
    await store.close()
  })
})
