'use strict'

// The states real servers pass through, each set up on a real redis-server: every call settles
// with the right code within its deadline, nothing resolves with a wrong value, and
// subscriptions survive.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { performance } = require('node:perf_hooks')
const { startRedis, freePort } = require('./helpers/redis-server.js')
const { waitUntil, collect } = require('./helpers/wait.js')
const { hasCode } = require('./helpers/expect.js')
const { createRedisStoreAdapter } = require('../index.js')

// Timers may fire a millisecond early against performance.now().
const CLOCK_SLACK_MS = 2

// A plain connection for commands that must not go through the adapter (they hold the
// server busy, or take its only client slot).
async function rawConnection(port) {
  const socket = net.connect(port, '127.0.0.1')
  await once(socket, 'connect')
  let received = ''
  socket.on('data', (chunk) => (received += chunk))
  return {
    socket,
    send: (...args) => socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`),
    received: () => received,
    close: () => socket.destroy(),
  }
}

// A Lua script that keeps the server busy for `ms`, past busy-reply-threshold.
const busyScript = (ms) => `local t=redis.call('TIME') while true do local n=redis.call('TIME') if (n[1]-t[1])*1000000+(n[2]-t[2]) > ${ms * 1000} then break end end return 1`

// Calls issued one every `everyMs` for `forMs`, each recorded with when it settled and how.
async function steadyCalls(call, { everyMs, forMs }) {
  const outcomes = []
  const begin = performance.now()
  while (performance.now() - begin < forMs) {
    const issued = performance.now()
    outcomes.push(call(outcomes.length).then(
      (value) => ({ issued, settled: performance.now(), value }),
      (err) => ({ issued, settled: performance.now(), err }),
    ))
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
  return Promise.all(outcomes)
}

describe('field: passing server states', () => {
  it('a BUSY script: calls are retried through it, subscriptions stay, the health PING counts BUSY as alive', async () => {
    const server = await startRedis('--busy-reply-threshold', '100')
    const errors = []
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout: 1000, onError: (err) => errors.push(err) })
    await store.set('k', 'v')
    const a = collect(1)
    const b = collect(1)
    await store.subscribe('busy:a', a.callback)
    await store.subscribe('busy:b', b.callback)
    // Long enough for two health PINGs (one a second) to meet BUSY.
    const script = await rawConnection(server.port)
    script.send('EVAL', busyScript(2500), '0')
    const outcomes = await steadyCalls(() => store.get('k'), { everyMs: 100, forMs: 2400 })
    await waitUntil(() => script.received().includes(':1'), { what: 'the script to end' })
    script.close()

    for (const { issued, settled, value, err } of outcomes) {
      if (err === undefined) {
        assert.equal(value, 'v')
      } else {
        // Refused all the way to its deadline: the server's words, and retryable.
        hasCode('ERR_STORE_REDIS')(err)
        assert.match(err.message, /^BUSY/)
        assert.equal(err.retryable, true)
        assert.ok(settled - issued >= 1000 - CLOCK_SLACK_MS, `rejected after ${settled - issued} ms`)
      }
    }
    assert.ok(outcomes.some((o) => o.err === undefined), 'calls made near the end ride out the script')
    assert.ok(outcomes.some((o) => o.err !== undefined), 'calls made early outlast their deadline')
    assert.equal(await server.numsub('busy:a'), '1')
    assert.equal(await server.numsub('busy:b'), '1')
    await store.publish('busy:a', 'after')
    await store.publish('busy:b', 'after')
    assert.equal((await a.all)[0].message, 'after')
    assert.equal((await b.all)[0].message, 'after')
    assert.deepEqual(errors, [])
    await store.close()
    await server.stop()
  })

  it('requirepass set, the Pub/Sub connection killed, requirepass cleared: the subscription comes back, reported once', async () => {
    const server = await startRedis()
    const errors = []
    const store = createRedisStoreAdapter({ url: server.url, onError: (err) => errors.push(err) })
    const got = collect(1)
    await store.subscribe('rp', got.callback)
    await server.cli('CONFIG', 'SET', 'requirepass', 'secret')
    const refusals = async () => Number(/errorstat_NOAUTH:count=(\d+)/.exec(await server.cli('-a', 'secret', '--no-auth-warning', 'INFO', 'errorstats'))?.[1] ?? 0)
    await server.cli('-a', 'secret', '--no-auth-warning', 'CLIENT', 'KILL', 'TYPE', 'pubsub')
    // Attempts to subscribe again, each refused with NOAUTH, until the password goes.
    await waitUntil(async () => (await refusals()) >= 3, { what: 'three refused attempts' })
    await server.cli('-a', 'secret', '--no-auth-warning', 'CONFIG', 'SET', 'requirepass', '')
    await waitUntil(async () => (await server.numsub('rp')) === '1', { what: 'the subscription back' })
    await server.cli('PUBLISH', 'rp', '"back"')
    assert.equal((await got.all)[0].message, 'back')
    assert.equal(errors.length, 1, errors.map((e) => e.message).join('\n'))
    hasCode('ERR_STORE_CONNECTION')(errors[0])
    await store.close()
    await server.stop()
  })

  it('DEBUG SLEEP past commandTimeout: no call times out before its own deadline, and every resolved increment was applied', async () => {
    const server = await startRedis('--enable-debug-command', 'yes')
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout: 1000 })
    await store.delete('n')
    const sleeper = await rawConnection(server.port)
    sleeper.send('DEBUG', 'SLEEP', '1.2')
    const outcomes = await steadyCalls(() => store.increment('n'), { everyMs: 20, forMs: 1200 })
    sleeper.close()

    const resolved = outcomes.filter((o) => o.err === undefined)
    const rejected = outcomes.filter((o) => o.err !== undefined)
    for (const { issued, settled, err } of rejected) {
      hasCode('ERR_STORE_TIMEOUT')(err)
      assert.ok(settled - issued >= 1000 - CLOCK_SLACK_MS, `timed out ${(settled - issued).toFixed(0)} ms after it was issued`)
    }
    // The server ran every increment; those that resolved got distinct counts within them.
    const applied = Number(await server.cli('GET', 'n'))
    assert.equal(applied, outcomes.length)
    const values = resolved.map((o) => o.value)
    assert.equal(new Set(values).size, values.length)
    for (const value of values) assert.ok(value >= 1 && value <= applied)
    // Only the calls written in the first 200 ms wait past their deadline.
    assert.ok(resolved.length > outcomes.length / 2, `${resolved.length} of ${outcomes.length} resolved`)
    await store.close()
    await server.stop()
  })

  it('LOADING after a restart: calls are retried until the data is loaded; the subscription is restored and the health PING does not drop it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-loading-'))
    const server = await startRedis('--dir', dir, '--enable-debug-command', 'yes')
    await server.cli('DEBUG', 'POPULATE', '20000')
    await server.cli('SAVE')
    const errors = []
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout: 1000, onError: (err) => errors.push(err) })
    const got = collect(1)
    await store.subscribe('load', got.callback)
    await server.stop()
    // Loading 20,000 keys at 100 µs each stretches loading to a few seconds.
    server.args.push('--key-load-delay', '100', '--loading-process-events-interval-bytes', '1024')
    await server.start({ waitForLoad: false })
    await waitUntil(async () => /^loading:1/m.test(await server.cli('INFO', 'persistence')), { what: 'loading' })

    const outcomes = await steadyCalls(() => store.get('key:1'), { everyMs: 100, forMs: 1500 })
    for (const { issued, settled, value, err } of outcomes) {
      if (err === undefined) {
        assert.equal(value, 'value:1')
      } else {
        hasCode('ERR_STORE_REDIS')(err)
        assert.match(err.message, /^LOADING/)
        assert.equal(err.retryable, true)
        assert.ok(settled - issued >= 1000 - CLOCK_SLACK_MS)
      }
    }
    // Subscribed again while loading, and messages published meanwhile arrive.
    await waitUntil(async () => (await server.numsub('load')) === '1', { what: 'the subscription back' })
    await server.cli('PUBLISH', 'load', '"during"')
    assert.equal((await got.all)[0].message, 'during')
    await waitUntil(async () => /^loading:0/m.test(await server.cli('INFO', 'persistence')), { what: 'loaded', timeoutMs: 20000 })
    assert.equal(await store.get('key:1'), 'value:1')
    // The restart is one outage, reported once; loading is not a lost connection.
    assert.equal(errors.length, 1, errors.map((e) => e.message).join('\n'))
    await store.close()
    await server.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it('MASTERDOWN: calls reject with the server text and retryable; Pub/Sub keeps its connection and loses nothing', async () => {
    const replica = await startRedis('--replicaof', '127.0.0.1', String(await freePort()), '--replica-serve-stale-data', 'no')
    const errors = []
    const store = createRedisStoreAdapter({ url: replica.url, commandTimeout: 1000, onError: (err) => errors.push(err) })
    const count = 20
    const got = collect(count)
    await store.subscribe('md', got.callback)
    await assert.rejects(store.get('k'), (err) => {
      hasCode('ERR_STORE_REDIS')(err)
      assert.match(err.message, /^MASTERDOWN/)
      assert.equal(err.retryable, true)
      return true
    })
    // Published over three health PINGs, all refused with MASTERDOWN.
    for (let i = 0; i < count; i++) {
      await replica.cli('PUBLISH', 'md', String(i))
      await new Promise((resolve) => setTimeout(resolve, 150))
    }
    assert.deepEqual((await got.all).map((m) => m.message), [...Array(count).keys()])
    assert.deepEqual(errors, [])
    await store.close()
    await replica.stop()
  })
})

describe('field: refusals of the connection and of credentials', () => {
  for (const password of [undefined, 'pw']) {
    it(`maxclients${password ? ' with a password' : ''}: ERR_STORE_CONNECTION, retryable, and served once a slot frees`, async () => {
      const server = await startRedis('--maxclients', '1', ...(password ? ['--requirepass', password] : []))
      const holder = await rawConnection(server.port)
      if (password) holder.send('AUTH', password)
      holder.send('PING')
      await waitUntil(() => holder.received().includes('PONG'), { what: 'the slot taken' })
      const store = createRedisStoreAdapter({ url: server.url, password, commandTimeout: 500, connectTimeout: 500, onError: () => {} })
      await assert.rejects(store.get('k'), (err) => {
        hasCode('ERR_STORE_CONNECTION')(err)
        assert.match(err.message, /max number of clients reached/)
        assert.equal(err.retryable, true)
        return true
      })
      holder.close()
      await waitUntil(() => store.get('k').then(() => true, () => false), { what: 'served again' })
      await store.close()
      await server.stop()
    })
  }

  it('a user name without a password logs in as that user', async () => {
    const server = await startRedis()
    await server.cli('ACL', 'SETUSER', 'alice', 'on', 'nopass', '~alice:*', '+@all')
    for (const store of [
      createRedisStoreAdapter(`redis://alice@127.0.0.1:${server.port}`),
      createRedisStoreAdapter({ url: server.url, username: 'alice' }),
    ]) {
      await store.set('alice:x', 1)
      await assert.rejects(store.set('bob:x', 1), (err) => {
        hasCode('ERR_STORE_REDIS')(err)
        assert.match(err.message, /^NOPERM/)
        return true
      })
      await store.close()
    }
    assert.equal(await server.cli('EXISTS', 'bob:x'), '0')
    await server.stop()
  })

  it('an ACL that revokes a channel while the connection is down: that channel is forgotten on both sides, the others come back', async () => {
    const server = await startRedis()
    await server.cli('ACL', 'SETUSER', 'carol', 'on', '>pw', '~*', '&*', '+@all')
    const errors = []
    const store = createRedisStoreAdapter({ url: `redis://carol:pw@127.0.0.1:${server.port}`, onError: (err) => errors.push(err) })
    const kept = collect(1)
    await store.subscribe('kept', kept.callback)
    await store.subscribe('revoked', () => assert.fail('a message on a revoked channel'))
    await server.cli('ACL', 'SETUSER', 'carol', 'resetchannels', '&kept')
    await server.cli('CLIENT', 'KILL', 'TYPE', 'pubsub')
    await waitUntil(() => errors.some((e) => e.channel === 'revoked'), { what: 'the revoked channel reported' })
    const revoked = errors.find((e) => e.channel === 'revoked')
    hasCode('ERR_STORE_REDIS')(revoked)
    assert.match(revoked.message, /NOPERM/)
    await waitUntil(async () => (await server.numsub('kept')) === '1', { what: 'the kept channel back' })
    await server.cli('PUBLISH', 'kept', '"yes"')
    assert.equal((await kept.all)[0].message, 'yes')
    // JS forgot the channel too: subscribing again asks the server, which refuses.
    await assert.rejects(store.subscribe('revoked', () => {}), /NOPERM/)
    await store.close()
    await server.stop()
  })

  it('a lost connection with nothing subscribed is not reported as subscribing again', async () => {
    const server = await startRedis()
    await server.cli('ACL', 'SETUSER', 'dave', 'on', '>pw', '~*', 'resetchannels', '&ok', '+@all')
    const errors = []
    const store = createRedisStoreAdapter({ url: `redis://dave:pw@127.0.0.1:${server.port}`, onError: (err) => errors.push(err) })
    await assert.rejects(store.subscribe('refused', () => {}), /NOPERM/)
    await server.cli('CLIENT', 'KILL', 'USER', 'dave')
    await store.set('k', 1)
    await store.subscribe('ok', () => {})
    await waitUntil(async () => (await server.numsub('ok')) === '1', { what: 'subscribed' })
    assert.deepEqual(errors.map((e) => e.message).filter((m) => /subscribing again/.test(m)), [])
    await store.close()
    await server.stop()
  })

  it('an INCR the server refuses as an overflow leaves the value, and says so', async () => {
    const server = await startRedis()
    const store = createRedisStoreAdapter(server.url)
    await server.cli('SET', 'n', '9223372036854775807')
    await assert.rejects(store.increment('n'), (err) => {
      hasCode('ERR_STORE_NOT_INTEGER', RangeError)(err)
      assert.match(err.message, /would overflow.*unchanged/)
      return true
    })
    assert.equal(await server.cli('GET', 'n'), '9223372036854775807')
    await store.close()
    await server.stop()
  })
})

describe('field: reaching the server', () => {
  it('a refused connection names the target, the step and the errno, with a cause', async () => {
    const port = await freePort()
    const store = createRedisStoreAdapter({ host: '127.0.0.1', port, password: 'hunter2' })
    await assert.rejects(store.get('k'), (err) => {
      hasCode('ERR_STORE_CONNECTION')(err)
      assert.match(err.message, new RegExp(`redis://127\\.0\\.0\\.1:${port}/0: TCP connect failed: ECONNREFUSED`))
      assert.doesNotMatch(err.message, /hunter2/)
      assert.equal(err.cause.code, 'ECONNREFUSED')
      assert.equal(err.cause.syscall, 'connect')
      assert.equal(err.cause.address, '127.0.0.1')
      assert.equal(err.cause.port, port)
      return true
    })
    await store.close()
  })

  it('the first call waits one connect attempt, not two, and the error names the step that hung', async () => {
    // A server that accepts and never answers: the TLS handshake hangs.
    const silent = net.createServer(() => {})
    silent.listen(0, '127.0.0.1')
    await once(silent, 'listening')
    const sockets = []
    silent.on('connection', (socket) => sockets.push(socket))
    const store = createRedisStoreAdapter({ url: `rediss://127.0.0.1:${silent.address().port}`, connectTimeout: 800, commandTimeout: 5000 })
    const begin = performance.now()
    await assert.rejects(store.get('k'), (err) => {
      hasCode('ERR_STORE_CONNECTION')(err)
      assert.match(err.message, /within connectTimeout \(800 ms\): the TLS handshake step did not finish/)
      assert.equal(err.cause.code, 'ETIMEDOUT')
      return true
    })
    const waited = performance.now() - begin
    // One attempt's worth; two would be 1600 ms.
    assert.ok(waited < 1200, `waited ${waited.toFixed(0)} ms`)
    await store.close()
    for (const socket of sockets) socket.destroy()
    silent.close()
  })
})

describe('field: a subscriber that JS cannot keep up with', () => {
  it('bounds the messages waiting in native memory, stops reading the socket, reports it once, and recovers', async () => {
    const server = await startRedis()
    const errors = []
    const limit = 1024 * 1024
    const store = createRedisStoreAdapter({ url: server.url, maxPubSubBacklog: limit, onError: (err) => errors.push(err) })
    let received = 0
    await store.subscribe('flood', () => received++)
    // Another process publishes 60 MB while this thread is blocked and cannot take any.
    const publisher = `
      const net = require('node:net')
      const socket = net.connect(${server.port}, '127.0.0.1', () => {
        const payload = 'x'.repeat(100 * 1024)
        const command = '*3\\r\\n$7\\r\\nPUBLISH\\r\\n$5\\r\\nflood\\r\\n$' + payload.length + '\\r\\n' + payload + '\\r\\n'
        for (let i = 0; i < 600; i++) socket.write(command)
        socket.end()
      })
      socket.resume()
      socket.on('close', () => require('node:fs').writeFileSync(process.argv[1], ''))`
    const done = path.join(os.tmpdir(), `kindling-flood-${process.pid}`)
    fs.rmSync(done, { force: true })
    const rssBefore = process.memoryUsage().rss
    const child = spawn(process.execPath, ['-e', publisher, done], { stdio: 'ignore' })
    // Block this thread, as a long synchronous task would, until the publisher is done.
    while (!fs.existsSync(done)) {}
    const rssGrowth = process.memoryUsage().rss - rssBefore
    if (child.exitCode === null) await once(child, 'exit')
    fs.rmSync(done, { force: true })
    assert.ok(rssGrowth < 32 * 1024 * 1024, `RSS grew by ${(rssGrowth / 1048576).toFixed(1)} MB while 60 MB were published`)
    await waitUntil(() => errors.some((e) => /maxPubSubBacklog/.test(e.message)), { what: 'the backlog reported' })
    for (const err of errors.filter((e) => /maxPubSubBacklog/.test(e.message))) hasCode('ERR_STORE_CONNECTION')(err)
    // The server's own limit may have cut the subscriber off meanwhile; either way it comes back.
    await waitUntil(async () => (await server.numsub('flood')) === '1', { what: 'subscribed' })
    const next = collect(1)
    await store.subscribe('after', next.callback)
    await store.publish('after', 1)
    await next.all
    assert.ok(received > 0)
    await store.close()
    await server.stop()
  })
})
