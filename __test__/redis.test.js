'use strict'

// Redis-only behaviour: inputs, interop with other clients, faults from the server itself.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { once } = require('node:events')
const { inspect } = require('node:util')
const Redis = require('ioredis')
const { startRedis, freePort } = require('./helpers/redis-server.js')
const { waitUntil, collect } = require('./helpers/wait.js')
const { hasCode } = require('./helpers/expect.js')
const { startProxy } = require('./helpers/fault-proxy.js')
const { createRedisStoreAdapter } = require('../index.js')

describe('Redis inputs', () => {
  const invalid = (input, pattern) =>
    assert.throws(() => createRedisStoreAdapter(input), (err) => {
      hasCode('ERR_STORE_INVALID_ARGUMENT', TypeError)(err)
      if (pattern) assert.match(err.message, pattern)
      return true
    })

  it('refuses malformed URLs and options with a coded TypeError', () => {
    invalid('not a url')
    invalid('http://127.0.0.1:6379', /scheme/)
    invalid('redis://127.0.0.1:6379/notadb')
    invalid('redis://127.0.0.1:99999')
    invalid(42)
    invalid([])
    invalid({ port: 'x' })
    invalid({ port: 0 })
    invalid({ db: -1 })
    invalid({ host: 5 })
    invalid({ keyPrefix: 1 })
    invalid({ connectTimeout: -5 })
    invalid({ commandTimeout: NaN })
    invalid({ onError: 'x' })
    invalid({ tls: 'yes' })
    invalid({ hots: 'typo' }, /unknown Redis option "hots"/)
    invalid('redis://:p%zz@127.0.0.1:6379', /percent-encoding/)
    invalid({ tls: { cert: 'PEM' } }, /go together/)
    invalid({ tls: { ca: 42 } })
    invalid({ tls: { ca: '/etc/ssl/not-a-pem-but-a-path.crt' } }, /no PEM certificate/)
    invalid({ tls: { servername: '' } }, /servername/)
    invalid({ url: 'unix:///tmp/redis.sock', tls: true }, /unix socket/)
    invalid('redis://127.0.0.1:6379/4294967296', /database number/)
  })

  it('refuses what Redis Cluster does not serve in this release, and says so', () => {
    const nodes = ['redis://127.0.0.1:7000']
    invalid({ cluster: { nodes, pubsub: 'shard' } }, /"classic" or "sharded"/)
    invalid({ cluster: { nodes, natMap: { 'a:1': 'b:2' } } }, /must map to \{ host, port \}/)
    invalid({ cluster: { nodes, natMap: { a: { host: 'b', port: 2 } } } }, /"host:port"/)
    invalid({ cluster: { nodes, natMap: { 'a:1': { host: 'b', port: 0 } } } }, /port/)
    invalid({ cluster: { nodes, natMap: { 'a:1': { host: '', port: 2 } } } }, /"host" must be/)
    invalid({ cluster: { nodes, natMap: { 'a:1': { host: 'b', port: 2, tls: true } } } }, /unknown/)
    invalid({ cluster: { nodes }, db: 1 }, /database 0/)
    invalid({ cluster: { nodes }, url: 'redis://127.0.0.1:7000' }, /cannot be combined/)
    invalid({ cluster: { nodes: [] } }, /non-empty list/)
    invalid({ cluster: { nodes: ['rediss://127.0.0.1:7000', 'redis://127.0.0.1:7001'] } }, /mixes/)
    invalid({ cluster: { nodes: ['rediss://127.0.0.1:7000'] }, tls: false }, /contradict/)
    invalid({ cluster: { nodes: [{ host: '127.0.0.1', port: 7000, password: 'x' }] } }, /unknown cluster\.nodes entry option "password"/)
  })

  it('refuses an ioredis client with TLS to its sentinels rather than connect in plain text', () => {
    const sentinelClient = new Redis({ sentinels: [{ host: '127.0.0.1', port: 1 }], name: 'mymaster', enableTLSForSentinelMode: true, lazyConnect: true })
    invalid(sentinelClient, /TLS to sentinels/)
    sentinelClient.disconnect()
  })

  it('never puts a password into a factory error', () => {
    for (const input of ['redis://:hunter2-secret@127.0.0.1:6379/nodb', { url: 'redis://:hunter2-secret@/', port: 'x' }]) {
      assert.throws(() => createRedisStoreAdapter(input), (err) => {
        assert.doesNotMatch(`${err.message} ${err.stack} ${inspect(err)}`, /hunter2/)
        return true
      })
    }
  })
})

describe('Redis server', () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(async () => {
    await server.stop()
  })

  it('reads REDIS_URL when given nothing', async () => {
    const saved = process.env.REDIS_URL
    process.env.REDIS_URL = server.url
    try {
      const store = createRedisStoreAdapter()
      await store.set('from-env', 1)
      assert.equal(await server.cli('GET', 'from-env'), '1')
      await store.close()
    } finally {
      if (saved === undefined) delete process.env.REDIS_URL
      else process.env.REDIS_URL = saved
    }
  })

  it('takes host/port/db options over the URL, and the db from the URL path', async () => {
    const byOptions = createRedisStoreAdapter({ url: 'redis://localhost:1/0', host: '127.0.0.1', port: server.port, db: 3 })
    await byOptions.set('in-db-3', 'x')
    assert.equal(await server.cli('-n', '3', 'GET', 'in-db-3'), '"x"')
    const byUrl = createRedisStoreAdapter(`${server.url}/4`)
    await byUrl.set('in-db-4', 'y')
    assert.equal(await server.cli('-n', '4', 'GET', 'in-db-4'), '"y"')
    await Promise.all([byOptions.close(), byUrl.close()])
  })

  it('interoperates with redis-cli: JSON on the wire, raw strings, TTLs in ms, messages', async () => {
    const store = createRedisStoreAdapter({ url: server.url, keyPrefix: 'app:' })
    await store.set('greeting', 'hi')
    await store.set('object', { a: [1, 2] }, { ttl: 2.5 })
    assert.equal(await server.cli('GET', 'app:greeting'), '"hi"')
    assert.equal(await server.cli('GET', 'app:object'), '{"a":[1,2]}')
    const pttl = Number(await server.cli('PTTL', 'app:object'))
    assert.ok(pttl > 2000 && pttl <= 2500, `PTTL ${pttl}`)
    assert.equal(await server.cli('TTL', 'app:greeting'), '-1')

    await server.cli('SET', 'app:raw', 'plain text')
    await server.cli('SET', 'app:json', '{"from":"cli"}')
    await server.cli('SET', 'app:number', '41')
    assert.equal(await store.get('raw'), 'plain text')
    assert.deepEqual(await store.get('json'), { from: 'cli' })
    assert.equal(await store.increment('number'), 42)

    await store.expire('greeting', 0.25)
    const greetingTtl = Number(await server.cli('PTTL', 'app:greeting'))
    assert.ok(greetingTtl > 0 && greetingTtl <= 250, `PTTL ${greetingTtl}`)

    const { callback, all } = collect(2)
    await store.subscribe('events', callback)
    await server.cli('PUBLISH', 'app:events', '{"n":1}')
    await server.cli('PUBLISH', 'app:events', 'not json')
    assert.deepEqual(await all, [
      { message: { n: 1 }, channel: 'events' },
      { message: 'not json', channel: 'events' },
    ])
    await store.close()
  })

  it('keeps TLS from a rediss:// URL when tls is null', () => {
    const store = createRedisStoreAdapter({ url: 'rediss://127.0.0.1:1', tls: null, connectTimeout: 100 })
    assert.match(inspect(store), /rediss:\/\//)
    return store.close()
  })

  it('an increment that would overflow 64 bits is a RangeError ERR_STORE_NOT_INTEGER', async () => {
    const store = createRedisStoreAdapter({ url: server.url, keyPrefix: 'o:' })
    await server.cli('SET', 'o:max', '9223372036854775807')
    await assert.rejects(store.increment('max'), hasCode('ERR_STORE_NOT_INTEGER', RangeError))
    await store.close()
  })

  it('other server errors are ERR_STORE_REDIS with the server text, and the connection stays usable', async () => {
    const store = createRedisStoreAdapter({ url: server.url, keyPrefix: 'e:' })
    await server.cli('HSET', 'e:hash', 'field', 'value')
    await assert.rejects(store.get('hash'), (err) => {
      hasCode('ERR_STORE_REDIS')(err)
      assert.match(err.message, /WRONGTYPE/)
      return true
    })
    await assert.rejects(store.increment('hash'), hasCode('ERR_STORE_REDIS'))
    await store.set('fine', 1)
    assert.equal(await store.get('fine'), 1)
    await store.close()
  })

  it('after an ACL change revokes one channel, the others are subscribed again and the revoked one is reported', async () => {
    await server.cli('ACL', 'SETUSER', 'bob', 'on', '>bob-pass', '~*', '&acl:*', '+@all')
    const errors = []
    const store = createRedisStoreAdapter({ url: server.url, username: 'bob', password: 'bob-pass', onError: (err) => errors.push(err) })
    try {
      const kept = collect(1)
      await store.subscribe('acl:kept', kept.callback)
      await store.subscribe('acl:revoked', () => assert.fail('a revoked channel delivered'))
      // Redis 7 drops the Pub/Sub connections of a user whose channels are taken away.
      await server.cli('ACL', 'SETUSER', 'bob', 'resetchannels', '&acl:kept')
      await waitUntil(() => errors.some((err) => /acl:revoked/.test(err.message)), { what: 'the revoked channel reported' })
      await waitUntil(async () => (await server.numsub('acl:kept')) === '1', { what: 'acl:kept subscribed again' })
      assert.equal(await server.numsub('acl:revoked'), '0')
      await server.cli('PUBLISH', 'acl:kept', '"still here"')
      assert.deepEqual(await kept.all, [{ message: 'still here', channel: 'acl:kept' }])
      const revoked = errors.find((err) => /acl:revoked/.test(err.message))
      assert.equal(revoked.code, 'ERR_STORE_REDIS')
      assert.match(revoked.message, /NOPERM/)
    } finally {
      await store.close()
      await server.cli('ACL', 'DELUSER', 'bob')
    }
  })

  it('logs in as an ACL user from options or URL user info', async () => {
    await server.cli('ACL', 'SETUSER', 'alice', 'on', '>alice-pass', '~acl:*', '&acl:*', '+@all')
    try {
      for (const input of [
        { url: server.url, username: 'alice', password: 'alice-pass', keyPrefix: 'acl:' },
        { url: `redis://alice:alice-pass@127.0.0.1:${server.port}`, keyPrefix: 'acl:' },
      ]) {
        const store = createRedisStoreAdapter(input)
        await store.set('mine', 'ok')
        assert.equal(await store.get('mine'), 'ok')
        await store.close()
      }
      // A key or a publish outside the user's patterns is refused with the server's words, and
      // the command connection stays.
      const keyed = createRedisStoreAdapter({ url: server.url, username: 'alice', password: 'alice-pass' })
      try {
        await keyed.set('acl:mine', 'ok')
        const aliceCommandIds = async () => (await server.cli('CLIENT', 'LIST', 'TYPE', 'normal'))
          .split('\n').filter((line) => line.includes(' user=alice ')).map((line) => line.match(/\bid=\d+/)[0])
        const connectionsBefore = await aliceCommandIds()
        assert.equal(connectionsBefore.length, 1)
        for (const refused of [keyed.set('forbidden', 1), keyed.get('forbidden'), keyed.publish('forbidden', 1)]) {
          await assert.rejects(refused, (err) => {
            hasCode('ERR_STORE_REDIS')(err)
            assert.match(err.message, /^NOPERM /)
            return true
          })
        }
        assert.equal(await keyed.get('acl:mine'), 'ok')
        assert.deepEqual(await aliceCommandIds(), connectionsBefore)
      } finally {
        await keyed.close()
      }
      // A channel outside the user's patterns is refused; the channels already subscribed
      // stay on the same connection.
      const subscriber = createRedisStoreAdapter({ url: server.url, username: 'alice', password: 'alice-pass' })
      try {
        const { callback, all } = collect(1)
        await subscriber.subscribe('acl:room', callback)
        const pubsubClientIds = async () => (await server.cli('CLIENT', 'LIST', 'TYPE', 'pubsub')).match(/\bid=\d+/g)
        const connectionsBefore = await pubsubClientIds()
        await assert.rejects(subscriber.subscribe('forbidden', () => {}), (err) => {
          hasCode('ERR_STORE_REDIS')(err)
          assert.match(err.message, /NOPERM/)
          return true
        })
        assert.deepEqual(await pubsubClientIds(), connectionsBefore)
        await server.cli('PUBLISH', 'acl:room', '"still here"')
        assert.deepEqual(await all, [{ message: 'still here', channel: 'acl:room' }])
      } finally {
        await subscriber.close()
      }
      const wrong = createRedisStoreAdapter({ url: server.url, username: 'alice', password: 'not-alice-pass' })
      await assert.rejects(wrong.get('acl:mine'), hasCode('ERR_STORE_AUTH'))
      await wrong.close()
    } finally {
      await server.cli('ACL', 'DELUSER', 'alice')
    }
  })

  it('unsubscribe drops the server subscription before it resolves', async () => {
    const store = createRedisStoreAdapter({ url: server.url, keyPrefix: 'u:' })
    const numsub = () => server.numsub('u:room')
    const first = () => {}
    const second = () => {}
    await store.subscribe('room', first)
    await store.subscribe('room', second)
    assert.equal(await numsub(), '1')
    await store.unsubscribe('room', first)
    assert.equal(await numsub(), '1')
    await store.unsubscribe('room', second)
    assert.equal(await numsub(), '0')
    await store.subscribe('room', first)
    assert.equal(await numsub(), '1')
    await store.unsubscribe('room')
    assert.equal(await numsub(), '0')
    await store.close()
  })

  it('takes an ioredis instance: its settings, its keyPrefix, and client is that instance', async () => {
    const ioredis = new Redis({ host: '127.0.0.1', port: server.port, db: 2, keyPrefix: 'io:', lazyConnect: true })
    const store = createRedisStoreAdapter(ioredis)
    assert.equal(store.client, ioredis)
    await store.set('shared', { via: 'kindling' })
    assert.equal(await server.cli('-n', '2', 'GET', 'io:shared'), '{"via":"kindling"}')
    await ioredis.connect()
    assert.equal(await ioredis.get('shared'), '{"via":"kindling"}')
    await ioredis.set('back', '"from ioredis"')
    assert.equal(await store.get('back'), 'from ioredis')
    ioredis.disconnect()
    await store.close()
  })

  it('with an ioredis instance, its keyPrefix is for keys only, as in ioredis: channels meet ioredis\'s', async () => {
    const ioredis = new Redis({ host: '127.0.0.1', port: server.port, keyPrefix: 'app:' })
    const listener = new Redis({ host: '127.0.0.1', port: server.port, keyPrefix: 'app:' })
    const store = createRedisStoreAdapter(ioredis)
    const got = collect(1)
    await store.subscribe('events', got.callback)
    await ioredis.publish('events', '"from ioredis"')
    assert.deepEqual(await got.all, [{ message: 'from ioredis', channel: 'events' }])
    await listener.subscribe('events')
    const heard = once(listener, 'message')
    await store.publish('events', 'from kindling')
    assert.deepEqual(await heard, ['events', '"from kindling"'])
    await store.set('k', 1)
    assert.equal(await server.cli('GET', 'app:k'), '1')
    listener.disconnect()
    ioredis.disconnect()
    await store.close()
  })

  it('restores subscriptions after CLIENT KILL TYPE pubsub', async () => {
    const lost = []
    const store = createRedisStoreAdapter({ url: server.url, keyPrefix: 'k:', onError: (err) => lost.push(err) })
    const numsub = () => server.numsub('k:alive')
    const { callback, all } = collect(1)
    await store.subscribe('alive', callback)
    assert.equal(await numsub(), '1')
    await server.cli('CLIENT', 'KILL', 'TYPE', 'pubsub')
    await waitUntil(async () => lost.length > 0 && (await numsub()) === '1', { what: 'resubscription' })
    assert.equal(lost[0].code, 'ERR_STORE_CONNECTION')
    await server.cli('PUBLISH', 'k:alive', '"after kill"')
    assert.deepEqual(await all, [{ message: 'after kill', channel: 'alive' }])
    await store.close()
  })

  it('a subscribe that times out leaves no server subscription behind', async () => {
    const store = createRedisStoreAdapter({ url: server.url, keyPrefix: 'st:', commandTimeout: 200 })
    await store.subscribe('warm', () => {})
    await server.cli('CLIENT', 'PAUSE', '1500', 'ALL')
    await assert.rejects(store.subscribe('late', () => {}), hasCode('ERR_STORE_TIMEOUT'))
    await server.cli('CLIENT', 'UNPAUSE')
    await waitUntil(async () => (await server.numsub('st:late')) === '0' && (await server.numsub('st:warm')) === '1', { what: 'late subscription gone, warm restored' })
    await store.unsubscribe('late')
    await store.unsubscribe('warm')
    assert.equal(await server.numsub('st:warm'), '0')
    await store.close()
  })

  it('replaces a connection that went silent without closing', async () => {
    const proxy = await startProxy(server.port)
    const lost = []
    const store = createRedisStoreAdapter({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeout: 200, onError: (e) => lost.push(e) })
    await store.set('silent', 1)
    proxy.freezeExisting()
    await assert.rejects(store.get('silent'), hasCode('ERR_STORE_TIMEOUT'))
    // The next call goes out on a new connection instead of timing out forever.
    assert.equal(await store.get('silent'), 1)
    await store.close()
    await proxy.close()
  })

  it('notices a Pub/Sub connection that went silent, and subscribes again', async () => {
    const proxy = await startProxy(server.port)
    const lost = []
    const store = createRedisStoreAdapter({ url: `redis://127.0.0.1:${proxy.port}`, keyPrefix: 'q:', commandTimeout: 200, onError: (e) => lost.push(e) })
    const received = []
    await store.subscribe('quiet', (message) => received.push(message))
    proxy.freezeExisting()
    // Found by a PING that goes unanswered; the new connection subscribes again.
    await waitUntil(async () => lost.length > 0, { what: 'the silent connection reported' })
    assert.equal(lost[0].code, 'ERR_STORE_CONNECTION')
    // At-most-once delivery: publish until one arrives on the restored subscription.
    await waitUntil(async () => {
      await server.cli('PUBLISH', 'q:quiet', '"heard"')
      return received.length > 0
    }, { what: 'a message on the restored subscription' })
    assert.equal(received[0], 'heard')
    await store.close()
    await proxy.close()
  })

  it('times out with ERR_STORE_TIMEOUT while the server is paused, then recovers', async () => {
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout: 150 })
    await store.set('paused', 1)
    await server.cli('CLIENT', 'PAUSE', '1000', 'ALL')
    const started = Date.now()
    await assert.rejects(store.get('paused'), hasCode('ERR_STORE_TIMEOUT'))
    assert.ok(Date.now() - started < 900, 'the timeout fired before the pause ended')
    await server.cli('CLIENT', 'UNPAUSE')
    assert.equal(await store.get('paused'), 1)
    await store.close()
  })
})

describe('Redis over a unix socket', () => {
  it('connects with unix:// and redis+unix:// URLs', async () => {
    const socket = path.join(os.tmpdir(), `kindling-${process.pid}.sock`)
    const server = await startRedis('--unixsocket', socket, '--unixsocketperm', '700')
    try {
      for (const url of [`unix://${socket}`, `redis+unix://${socket}`]) {
        const store = createRedisStoreAdapter(url)
        await store.set('via-socket', url)
        assert.equal(await server.cli('GET', 'via-socket'), JSON.stringify(url))
        await store.close()
      }
    } finally {
      await server.stop()
    }
  })
})

describe('Redis faults', () => {
  it('an unreachable server gives ERR_STORE_CONNECTION', async () => {
    const port = await freePort()
    const store = createRedisStoreAdapter({ url: `redis://127.0.0.1:${port}`, connectTimeout: 500 })
    await assert.rejects(store.get('k'), hasCode('ERR_STORE_CONNECTION'))
    await assert.rejects(store.subscribe('c', () => {}), hasCode('ERR_STORE_CONNECTION'))
    await store.close()
  })

  it('a server that accepts but never answers gives a connection or timeout error in time', async () => {
    const silent = net.createServer(() => {})
    silent.listen(0, '127.0.0.1')
    await once(silent, 'listening')
    const store = createRedisStoreAdapter({ url: `redis://127.0.0.1:${silent.address().port}`, connectTimeout: 200, commandTimeout: 200 })
    const started = Date.now()
    await assert.rejects(store.get('k'), (err) => ['ERR_STORE_CONNECTION', 'ERR_STORE_TIMEOUT'].includes(err.code))
    assert.ok(Date.now() - started < 2000)
    await store.close()
    silent.close()
  })

  it('a wrong password gives ERR_STORE_AUTH with no trace of it anywhere', async () => {
    const server = await startRedis('--requirepass', 'right-pass')
    const warnings = []
    const onWarning = (w) => warnings.push(`${w.message} ${w.stack}`)
    process.on('warning', onWarning)
    try {
      for (const input of [
        `redis://:wrong-SECRET-pass@127.0.0.1:${server.port}`,
        { host: '127.0.0.1', port: server.port, password: 'wrong-SECRET-pass' },
        { url: `redis://default:wrong%2FSECRET%40pass@127.0.0.1:${server.port}` },
      ]) {
        const store = createRedisStoreAdapter(input)
        const errors = [
          await store.get('k').catch((e) => e),
          await store.subscribe('c', () => {}).catch((e) => e),
        ]
        for (const err of errors) {
          hasCode('ERR_STORE_AUTH')(err)
          const everything = `${err.message}\n${err.stack}\n${inspect(err)}\n${inspect(store)}\n${JSON.stringify(err)}`
          assert.doesNotMatch(everything, /SECRET/)
        }
        await store.close()
      }
      const good = createRedisStoreAdapter({ url: server.url, password: 'right-pass' })
      await good.set('k', 1)
      assert.equal(await good.get('k'), 1)
      assert.doesNotMatch(inspect(good), /right-pass/)
      await good.close()
      assert.ok(warnings.every((w) => !/SECRET|right-pass/.test(w)))
    } finally {
      process.off('warning', onWarning)
      await server.stop()
    }
  })

  it('after a restart while idle, the very first call succeeds', async () => {
    const server = await startRedis()
    const store = createRedisStoreAdapter(server.url)
    await store.set('k', 'before')
    await server.stop('SIGKILL')
    await server.start()
    assert.equal(await server.cli('PING'), 'PONG')
    // The dead connection was noticed when it closed, so this call reconnects instead of failing.
    await store.set('k', 'after')
    assert.equal(await store.get('k'), 'after')
    await store.close()
    await server.stop()
  })

  it('works with a server that has no HELLO (RESP2 only), Pub/Sub included', async () => {
    const server = await startRedis('--rename-command', 'HELLO', '')
    const store = createRedisStoreAdapter(server.url)
    await store.set('old', { server: true })
    assert.deepEqual(await store.get('old'), { server: true })
    const { callback, all } = collect(1)
    await store.subscribe('legacy', callback)
    await store.publish('legacy', 'still fine')
    assert.deepEqual(await all, [{ message: 'still fine', channel: 'legacy' }])
    await store.close()
    await server.stop()
  })

  it('after SIGKILL and a restart on the same port, commands and subscriptions come back', async () => {
    const server = await startRedis()
    const lost = []
    const store = createRedisStoreAdapter({ url: server.url, onError: (err) => lost.push(err), commandTimeout: 1000 })
    const numsub = () => server.numsub('phoenix')
    const { callback, all } = collect(1)
    await store.subscribe('phoenix', callback)
    await store.set('before', 1)
    await server.stop('SIGKILL')
    await assert.rejects(store.get('before'), (err) => ['ERR_STORE_CONNECTION', 'ERR_STORE_TIMEOUT'].includes(err.code))
    await server.start()
    await waitUntil(async () => (await numsub()) === '1', { what: 'resubscription after restart' })
    await waitUntil(() => store.set('after', 2).then(() => true, () => false), { what: 'commands after restart' })
    assert.equal(await store.get('after'), 2)
    await server.cli('PUBLISH', 'phoenix', '"reborn"')
    assert.deepEqual(await all, [{ message: 'reborn', channel: 'phoenix' }])
    assert.ok(lost.some((err) => err.code === 'ERR_STORE_CONNECTION'))
    await store.close()
    await server.stop()
  })
})
