'use strict'

// Network faults from a TCP proxy in front of a real redis-server with a password and a
// non-zero database: stalls, resets, connections dropped mid-handshake, cut replies, latency.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const { once } = require('node:events')
const { startRedis } = require('./helpers/redis-server.js')
const { startProxy } = require('./helpers/fault-proxy.js')
const { waitUntil, collect } = require('./helpers/wait.js')
const { hasCode } = require('./helpers/expect.js')
const { createRedisStoreAdapter } = require('../index.js')

const PASSWORD = 'open sesame'
const DB = 3

// The command names a client wrote, in order, from the RESP it sent.
function commandNames(resp) {
  const names = []
  const pattern = /\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n/g
  for (let match; (match = pattern.exec(resp));) names.push(match[1].toUpperCase())
  return names
}

const transient = (err) => ['ERR_STORE_CONNECTION', 'ERR_STORE_TIMEOUT'].includes(err.code)

describe('faults through a TCP proxy', () => {
  let server
  let proxy
  const open = (options) => createRedisStoreAdapter({
    host: '127.0.0.1', port: proxy.port, password: PASSWORD, db: DB,
    commandTimeout: 500, connectTimeout: 1000, onError: () => {}, ...options,
  })
  // A call that succeeds once the adapter has a working connection again.
  const succeeds = (call) => call().then(() => true, (err) => {
    assert.ok(transient(err), `unexpected ${err.code}: ${err.message}`)
    return false
  })

  before(async () => {
    server = await startRedis('--requirepass', PASSWORD)
    proxy = await startProxy(server.port)
  })
  after(async () => {
    await proxy.close()
    await server.stop()
  })

  it('calls during a stall reject with ERR_STORE_TIMEOUT, and the adapter serves again after', async () => {
    const store = open()
    await store.set('stall', 'before')
    proxy.stall()
    const during = await Promise.allSettled([store.get('stall'), store.set('stall', 'during'), store.increment('stall:n')])
    proxy.resume()
    for (const outcome of during) {
      assert.equal(outcome.status, 'rejected')
      hasCode('ERR_STORE_TIMEOUT')(outcome.reason)
    }
    // The stalled bytes never reached the server: nothing half-written.
    assert.equal(await store.get('stall'), 'before')
    assert.equal(await server.cli('-n', String(DB), 'EXISTS', 'stall:n'), '0')
    await store.close()
  })

  it('calls in flight when every connection is reset reject with ERR_STORE_CONNECTION; the next call works', async () => {
    const store = open()
    await store.set('reset', 1)
    proxy.latency(50)
    const inFlight = Promise.allSettled([store.get('reset'), store.increment('reset:n')])
    await waitUntil(() => proxy.connections > 0)
    proxy.resetAll()
    proxy.latency(0)
    for (const outcome of await inFlight) {
      if (outcome.status === 'rejected') hasCode('ERR_STORE_CONNECTION')(outcome.reason)
    }
    assert.equal(await store.get('reset'), 1)
    await store.close()
  })

  it('connections dropped mid-handshake are retried; AUTH and SELECT come before any command and any re-SUBSCRIBE', async () => {
    const firstConnection = proxy.accepted
    proxy.dropNext(2)
    const store = open()
    await waitUntil(() => succeeds(() => store.set('handshake', 'done')), { what: 'a working connection' })
    assert.equal(JSON.parse(await server.cli('-n', String(DB), 'GET', 'handshake')), 'done')

    const { callback, all } = collect(1)
    await store.subscribe('news', callback)
    // Lose the Pub/Sub connection and its next two replacements mid-handshake.
    proxy.dropNext(2)
    proxy.resetAll()
    const publisher = createRedisStoreAdapter({ url: server.url, password: PASSWORD, db: DB })
    await waitUntil(async () => (await server.numsub('news')) === '1', { what: 're-subscription' })
    await publisher.publish('news', 'after the drops')
    assert.deepEqual(await all, [{ message: 'after the drops', channel: 'news' }])
    await publisher.close()
    await store.close()

    assert.equal(proxy.dropped, 4)
    let subscriptions = 0
    for (let i = firstConnection; i < proxy.accepted; i++) {
      const names = commandNames(proxy.sent(i))
      if (names.length === 0) continue
      assert.deepEqual(names.slice(0, 2), ['AUTH', 'SELECT'], `connection ${i}: ${names.join(' ')}`)
      if (names.includes('SUBSCRIBE')) subscriptions++
    }
    assert.ok(subscriptions >= 2, 'subscribed on the first connection and again on a replacement')
  })

  it('no call ever resolves with another call\'s reply, through latency, cut replies and resets', async () => {
    const store = open({ commandTimeout: 2000 })
    const keys = Array.from({ length: 40 }, (_, i) => `own:${i}`)
    let settledWithValue = 0
    proxy.latency(1)
    for (let round = 0; round < 30; round++) {
      const calls = keys.flatMap((key) => [
        store.set(key, { key, round }).then(() => store.get(key)).then((value) => {
          if (value !== null) {
            assert.equal(value.key, key)
            settledWithValue++
          }
        }),
        store.has(key).then((has) => assert.equal(typeof has, 'boolean')),
        store.increment(`${key}:n`).then((n) => assert.ok(Number.isInteger(n) && n > 0)),
      ])
      if (round % 3 === 1) proxy.cutNextReply()
      if (round % 5 === 2) setImmediate(() => proxy.resetAll())
      for (const outcome of await Promise.allSettled(calls)) {
        if (outcome.status === 'rejected') assert.ok(transient(outcome.reason), outcome.reason.stack)
      }
    }
    proxy.latency(0)
    assert.ok(settledWithValue > keys.length * 10, `${settledWithValue} gets answered`)
    await store.close()
  })
})

// A peer that is not a sane Redis: each connection answers every command with `reply`.
async function startHostileServer(reply) {
  const server = net.createServer((socket) => {
    socket.on('data', () => socket.write(reply))
    socket.on('error', () => {})
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return { port: server.address().port, close: () => new Promise((resolve) => server.close(resolve)) }
}

describe('a hostile or broken server', () => {
  const cases = [
    ['a string of 2^63 bytes announced', '$9223372036854775807\r\n', /512 MB/],
    ['a string of 64 GB announced', '$68719476736\r\n', /512 MB/],
    ['arrays nested without end', '*1\r\n'.repeat(20000), /nested deeper than any reply/],
    ['a reply of the wrong type for the command', '*2\r\n$1\r\na\r\n$1\r\nb\r\n', /does not fit/],
    ['a string followed by the wrong bytes', '$1\r\nabc\r\n', /wrong length/],
  ]
  for (const [what, reply, message] of cases) {
    it(`${what}: the call rejects with ERR_STORE_CONNECTION, and nothing crashes or hangs`, async () => {
      const hostile = await startHostileServer(reply)
      const store = createRedisStoreAdapter({ host: '127.0.0.1', port: hostile.port, commandTimeout: 2000, onError: () => {} })
      await assert.rejects(store.get('k'), (err) => {
        hasCode('ERR_STORE_CONNECTION')(err)
        assert.match(err.message, message)
        return true
      })
      await assert.rejects(store.set('k', 1), (err) => transient(err))
      await store.close()
      await hostile.close()
    })
  }
})
