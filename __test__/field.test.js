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

// Whether the server answers BUSY (a script runs past busy-reply-threshold).
const serverBusy = async (server) => /BUSY/.test(await server.cli('PING').catch((err) => String(err.stdout)))

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

describe('field: states that were already right', () => {
  // Closes adapters and stops servers however the test ends, so a failure cannot keep the run alive.
  const cleanup = (t, ...things) => t.after(async () => {
    for (const thing of things) await (thing.stop ? thing.stop() : thing.close())
  })

  it('OOM under noeviction: writes refused with the server text, not retried; reads and deletes work; the key keeps its value; writes work once memory is freed', async (t) => {
    // Without latency tracking: its per-command histograms (tens of KB each, made on a
    // command's first use and never freed) would outweigh what a delete frees.
    const server = await startRedis('--maxmemory', '1mb', '--maxmemory-policy', 'noeviction', '--latency-tracking', 'no')
    const commandTimeout = 1000
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout })
    cleanup(t, store, server)
    await store.set('fill:victim', 'old')
    const filler = 'x'.repeat(1024)
    const filled = []
    let refusal
    let refusedAfter
    // Fill until the server refuses; 1 MB holds a few dozen of these past its own needs.
    for (let i = 0; i < 2000 && refusal === undefined; i++) {
      const issued = performance.now()
      try {
        await store.set(`fill:${i}`, filler)
        filled.push(`fill:${i}`)
      } catch (err) {
        refusal = err
        refusedAfter = performance.now() - issued
      }
    }
    assert.ok(refusal !== undefined, `${filled.length} values of 1 KB fitted under maxmemory 1mb`)
    assert.ok(filled.length > 0, 'nothing fitted')
    const isOom = (err) => {
      hasCode('ERR_STORE_REDIS')(err)
      assert.match(err.message, /^OOM/)
      assert.notEqual(err.retryable, true)
      return true
    }
    isOom(refusal)
    // Not a refusal for now: settled with the first answer, not retried to the deadline.
    assert.ok(refusedAfter < commandTimeout, `the OOM refusal took ${refusedAfter.toFixed(0)} ms`)
    const refusedKey = `fill:${filled.length}`
    assert.equal(await store.has(refusedKey), false)
    // The same write to a key that has a value: refused, and the value stays.
    await assert.rejects(store.set('fill:victim', filler), isOom)
    assert.equal(await store.get('fill:victim'), 'old')
    assert.equal(await store.get(filled[0]), filler)
    assert.equal(await store.has(filled.at(-1)), true)
    assert.equal(await server.cli('GET', 'fill:victim'), '"old"')
    for (const key of filled) await store.delete(key)
    assert.equal(await store.has(filled[0]), false)
    await store.set('fill:victim', 'new')
    assert.equal(await store.get('fill:victim'), 'new')
    await store.set(refusedKey, filler)
    assert.equal(await store.get(refusedKey), filler)
  })

  it('READONLY on a replica: writes refused, reads see the master, Pub/Sub works; promoted, the same adapter writes', async (t) => {
    // A full sync starts at once, not after the default 5 s wait for more replicas.
    const master = await startRedis('--repl-diskless-sync-delay', '0')
    cleanup(t, master)
    // The replica writes the RDB it receives to its --dir.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-replica-'))
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
    const replica = await startRedis('--replicaof', '127.0.0.1', String(master.port), '--dir', dir)
    cleanup(t, replica)
    await waitUntil(async () => /^master_link_status:up/m.test(await replica.cli('INFO', 'replication')), { what: 'the replica linked' })
    const onMaster = createRedisStoreAdapter(master.url)
    cleanup(t, onMaster)
    await onMaster.set('k', 'from master')
    await waitUntil(async () => (await replica.cli('GET', 'k')) === '"from master"', { what: 'the key replicated' })
    const errors = []
    const store = createRedisStoreAdapter({ url: replica.url, commandTimeout: 1000, onError: (err) => errors.push(err) })
    cleanup(t, store)
    const got = collect(2)
    await store.subscribe('ro', got.callback)
    await assert.rejects(store.set('k', 'from replica'), (err) => {
      hasCode('ERR_STORE_REDIS')(err)
      assert.match(err.message, /^READONLY/)
      assert.notEqual(err.retryable, true)
      return true
    })
    await assert.rejects(store.increment('n'), /READONLY/)
    assert.equal(await store.get('k'), 'from master')
    assert.equal(await replica.numsub('ro'), '1')
    await replica.cli('PUBLISH', 'ro', '"on the replica"')
    await waitUntil(() => got.messages.length === 1, { what: 'the message on the replica' })
    assert.equal(got.messages[0].message, 'on the replica')

    await replica.cli('REPLICAOF', 'NO', 'ONE')
    await store.set('k', 'promoted')
    assert.equal(await store.get('k'), 'promoted')
    assert.equal(await store.increment('n'), 1)
    assert.equal(await replica.cli('GET', 'k'), '"promoted"')
    assert.equal(await replica.numsub('ro'), '1')
    await store.publish('ro', 'after promotion')
    assert.equal((await got.all)[1].message, 'after promotion')
    assert.deepEqual(errors, [])
  })

  it('CLIENT PAUSE WRITE: a write waits out a pause shorter than its deadline; one past its deadline times out no earlier, and the key holds the old or the new value', async (t) => {
    const server = await startRedis()
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout: 2000 })
    const short = createRedisStoreAdapter({ url: server.url, commandTimeout: 300 })
    cleanup(t, store, short, server)
    await store.set('k', 'old')
    const pausedAt = performance.now()
    await server.cli('CLIENT', 'PAUSE', '800', 'WRITE')
    // Reads are not paused: a get issued during the pause resolves while the write waits.
    const order = []
    const read = store.get('k').then((value) => (order.push('get'), value))
    const write = store.set('k', 'new').then(() => (order.push('set'), performance.now()))
    // Issued after the write on the same adapter: it sees the write.
    const readAfter = store.get('k')
    assert.equal(await read, 'old')
    const written = await write
    assert.deepEqual(order, ['get', 'set'])
    assert.ok(written - pausedAt >= 800 - CLOCK_SLACK_MS, `the write resolved ${(written - pausedAt).toFixed(0)} ms after the pause began`)
    assert.equal(await readAfter, 'new')
    assert.equal(await server.cli('GET', 'k'), '"new"')

    await short.set('k', 'old')
    await server.cli('CLIENT', 'PAUSE', '1500', 'WRITE')
    const issued = performance.now()
    await assert.rejects(short.set('k', 'new'), hasCode('ERR_STORE_TIMEOUT'))
    const waited = performance.now() - issued
    assert.ok(waited >= 300 - CLOCK_SLACK_MS, `timed out ${waited.toFixed(0)} ms after it was issued`)
    assert.ok(waited < 300 + 1000, `timed out ${waited.toFixed(0)} ms after it was issued`)
    // redis-cli's own write waits for the end of the pause.
    await server.cli('SET', 'probe', '1')
    // It may have run: either value, never another.
    assert.ok(['"old"', '"new"'].includes(await server.cli('GET', 'k')))
    assert.ok(['old', 'new'].includes(await short.get('k')))
    await short.set('k', 'after')
    assert.equal(await short.get('k'), 'after')
  })

  it('an idle timeout closes the command connection: the next calls reconnect; the subscription keeps its connection and delivers', async (t) => {
    const server = await startRedis('--timeout', '1')
    const errors = []
    const store = createRedisStoreAdapter({ url: server.url, onError: (err) => errors.push(err) })
    cleanup(t, store, server)
    const got = collect(1)
    await store.subscribe('idle', got.callback)
    await store.set('k', 'v')
    // Connections other than redis-cli's own, as [id, is Pub/Sub].
    const clients = async () => (await server.cli('CLIENT', 'LIST')).split('\n')
      .filter((line) => !/ cmd=client\|list /.test(line))
      .map((line) => [/^id=(\d+)/.exec(line)[1], / sub=[1-9]/.test(line)])
    const before = await clients()
    assert.equal(before.length, 2, JSON.stringify(before))
    const pubsub = before.find(([, sub]) => sub)[0]
    await waitUntil(async () => (await clients()).length === 1, { what: 'the idle command connection closed', timeoutMs: 5000 })
    assert.deepEqual(await clients(), [[pubsub, true]])
    assert.equal(await store.get('k'), 'v')
    await store.set('k', 'w')
    assert.equal(await store.get('k'), 'w')
    assert.equal(await store.increment('n'), 1)
    // The same Pub/Sub connection, still subscribed.
    assert.ok((await clients()).some(([id]) => id === pubsub))
    assert.equal(await server.numsub('idle'), '1')
    await store.publish('idle', 'still here')
    assert.equal((await got.all)[0].message, 'still here')
    assert.deepEqual(errors, [])
  })

  it('SHUTDOWN during a burst of writes with AOF always: every call settles, and every write that resolved is there after the restart', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-aof-'))
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
    const server = await startRedis('--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir)
    const commandTimeout = 2000
    const connectTimeout = 1000
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout, connectTimeout, onError: () => {} })
    cleanup(t, store, server)
    await store.set('warm', 1)
    const killer = await rawConnection(server.port)
    t.after(() => killer.close())
    const exited = once(server.process, 'exit')
    const total = 2000
    // 200 writes in flight, each settled one making the next, so writes still flow when the
    // SHUTDOWN (sent as soon as 500 have resolved) lands; after the first failure, the rest at once.
    const outcomes = []
    let issuedCount = 0
    let resolved = 0
    let all
    const allSettled = new Promise((resolve) => (all = resolve))
    const issue = () => {
      if (issuedCount === total) return
      const key = issuedCount++
      const issued = performance.now()
      store.set(`k:${key}`, key).then(
        () => {
          if (++resolved === 500) killer.send('SHUTDOWN')
          return { key, issued, settled: performance.now() }
        },
        (err) => ({ key, issued, settled: performance.now(), err }),
      ).then((outcome) => {
        outcomes.push(outcome)
        if (outcomes.length === total) all()
        do issue()
        while (outcome.err !== undefined && issuedCount < total)
      })
    }
    for (let i = 0; i < 200; i++) issue()
    await allSettled
    const settled = outcomes.sort((a, b) => a.key - b.key)
    await exited
    const ok = settled.filter((o) => o.err === undefined)
    const failed = settled.filter((o) => o.err !== undefined)
    for (const { key, issued, settled: at, err } of settled) {
      if (err !== undefined) assert.ok(['ERR_STORE_CONNECTION', 'ERR_STORE_TIMEOUT'].includes(err.code), `k:${key}: ${err.code}: ${err.message}`)
      const took = at - issued
      assert.ok(took <= commandTimeout + connectTimeout + 500, `k:${key} settled after ${took.toFixed(0)} ms`)
    }
    assert.ok(ok.length >= 500 && failed.length > 0, `${ok.length} resolved, ${failed.length} failed: the SHUTDOWN did not land in the middle`)

    await server.start()
    // redis-cli prints a missing key as an empty line, and the output comes trimmed: 'warm'
    // (written before the burst) on both ends keeps the lines in place.
    const printed = (await server.cli('MGET', 'warm', ...settled.map((o) => `k:${o.key}`), 'warm')).split('\n')
    assert.equal(printed.length, total + 2)
    assert.equal(printed[0], '1')
    const values = printed.slice(1, -1)
    const missing = ok.filter((o) => values[o.key] !== String(o.key)).map((o) => `k:${o.key}=${JSON.stringify(values[o.key])}`)
    assert.deepEqual(missing, [], `${missing.length} of ${ok.length} resolved writes missing after the restart`)
    // A write that failed may have run or not; nothing else is there.
    for (const { key } of failed) assert.ok(values[key] === '' || values[key] === String(key), `k:${key}=${values[key]}`)
    // The same adapter serves the restarted server.
    assert.equal(await store.get('k:0'), 0)
  })

  it('an ACL user with a password: own keys and channels, NOPERM elsewhere, a wrong password is ERR_STORE_AUTH, and a changed password fails the old adapter at once', async (t) => {
    const server = await startRedis()
    cleanup(t, server)
    await server.cli('ACL', 'SETUSER', 'bob', 'on', '>pw', '~bob:*', '&bob:*', '+@all')
    const errors = []
    const connectTimeout = 1000
    const store = createRedisStoreAdapter({ url: `redis://bob:pw@127.0.0.1:${server.port}`, connectTimeout, onError: (err) => errors.push(err) })
    cleanup(t, store)
    await store.set('bob:x', 1)
    assert.equal(await store.get('bob:x'), 1)
    assert.equal(await store.increment('bob:n'), 1)
    const noperm = (err) => {
      hasCode('ERR_STORE_REDIS')(err)
      assert.match(err.message, /^NOPERM/)
      return true
    }
    await assert.rejects(store.set('alice:x', 1), noperm)
    await assert.rejects(store.get('alice:x'), noperm)
    assert.equal(await server.cli('EXISTS', 'alice:x'), '0')
    const got = collect(1)
    await store.subscribe('bob:ch', got.callback)
    await store.publish('bob:ch', 'hi')
    assert.equal((await got.all)[0].message, 'hi')
    await assert.rejects(store.subscribe('alice:ch', () => {}), noperm)

    const wrong = createRedisStoreAdapter({ url: `redis://bob:nope@127.0.0.1:${server.port}`, connectTimeout, onError: () => {} })
    cleanup(t, wrong)
    await assert.rejects(wrong.get('bob:x'), hasCode('ERR_STORE_AUTH'))

    await server.cli('ACL', 'SETUSER', 'bob', 'resetpass', '>pw2')
    await server.cli('CLIENT', 'KILL', 'USER', 'bob')
    for (const call of [() => store.get('bob:x'), () => store.set('bob:x', 2), () => store.has('bob:x')]) {
      const issued = performance.now()
      await assert.rejects(call(), hasCode('ERR_STORE_AUTH'))
      const waited = performance.now() - issued
      assert.ok(waited < connectTimeout + 500, `refused after ${waited.toFixed(0)} ms`)
    }
    assert.equal(await server.cli('GET', 'bob:x'), '1')
    // The subscription tries again, refused each time, and its loss is reported once.
    const refusals = async () => Number(/errorstat_WRONGPASS:count=(\d+)/.exec(await server.cli('INFO', 'errorstats'))?.[1] ?? 0)
    const seen = await refusals()
    await waitUntil(async () => (await refusals()) >= seen + 3, { what: 'three more refused logins' })
    assert.equal(errors.length, 1, errors.map((e) => e.message).join('\n'))
    hasCode('ERR_STORE_CONNECTION')(errors[0])
    const renewed = createRedisStoreAdapter({ url: `redis://bob:pw2@127.0.0.1:${server.port}`, connectTimeout })
    cleanup(t, renewed)
    await renewed.set('bob:x', 3)
    assert.equal(await renewed.get('bob:x'), 3)
  })
})

describe('field: what a review found', () => {
  it('a call settles before a long Pub/Sub backlog is delivered, not after it', async () => {
    const server = await startRedis()
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout: 1000 })
    const total = 20000
    let delivered = 0
    let allDelivered
    const done = new Promise((resolve) => (allDelivered = resolve))
    await store.subscribe('busy-js', () => {
      const until = performance.now() + 0.2
      while (performance.now() < until);
      if (++delivered === total) allDelivered()
    })
    await store.set('k', 'v')
    // One script publishes the whole backlog at once.
    await server.cli('EVAL', `for i = 1, ${total} do redis.call('PUBLISH', 'busy-js', string.rep('x', 1000)) end`, '0')
    await waitUntil(() => delivered > 0, { what: 'delivery under way' })
    const value = await store.get('k')
    const deliveredWhenSettled = delivered
    await done
    assert.equal(value, 'v')
    assert.ok(deliveredWhenSettled < total, `the get settled after ${deliveredWhenSettled} of ${total} messages`)
    await store.close()
    await server.stop()
  })

  it('calls retried through a BUSY script keep their order: publishes arrive in order, the last set wins', async () => {
    const server = await startRedis('--busy-reply-threshold', '50')
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout: 3000 })
    const received = []
    await store.subscribe('order', (message) => received.push(message))
    const script = await rawConnection(server.port)
    script.send('EVAL', busyScript(400), '0')
    await waitUntil(() => serverBusy(server), { what: 'the server busy' })
    const calls = []
    for (let i = 0; i < 200; i++) {
      calls.push(store.publish('order', i), store.set('last', i))
      await new Promise((resolve) => setTimeout(resolve, 3))
    }
    await Promise.all(calls)
    script.close()
    await waitUntil(() => received.length === 200, { what: 'every message' })
    assert.deepEqual(received, [...Array(200).keys()])
    assert.equal(await store.get('last'), 199)
    await store.close()
    await server.stop()
  })

  it('subscribes made together during a BUSY script settle together, and an unsubscribe it refused is not left on the server', async () => {
    const server = await startRedis('--busy-reply-threshold', '50')
    const store = createRedisStoreAdapter({ url: server.url, commandTimeout: 500, connectTimeout: 500, onError: () => {} })
    await store.subscribe('gone', () => {})
    await store.subscribe('kept', () => {})
    const script = await rawConnection(server.port)
    script.send('EVAL', busyScript(3000), '0')
    await waitUntil(() => serverBusy(server), { what: 'the server busy' })
    const settled = []
    const outcomes = await Promise.allSettled(['a', 'b', 'c', 'd'].map((channel) => store.subscribe(channel, () => {}).finally(() => settled.push(performance.now()))))
    for (const outcome of outcomes) {
      assert.equal(outcome.status, 'rejected')
      assert.equal(outcome.reason.retryable, true)
    }
    // Each waits out its own deadline, not the ones before it in turn (that would put the
    // first and the last 1.5 s apart).
    const spread = Math.max(...settled) - Math.min(...settled)
    assert.ok(spread < 1000, `settled ${spread.toFixed(0)} ms apart`)
    await store.unsubscribe('gone')
    await waitUntil(() => script.received().includes(':1'), { what: 'the script to end' })
    script.close()
    await waitUntil(async () => (await server.numsub('kept')) === '1', { what: 'kept subscribed' })
    assert.equal(await server.numsub('gone'), '0')
    await store.close()
    await server.stop()
  })

  it('a server that accepts and drops every connection is retried with backoff, not in a tight loop', async () => {
    let accepted = 0
    const dropping = net.createServer((socket) => {
      accepted++
      socket.destroy()
    })
    dropping.listen(0, '127.0.0.1')
    await once(dropping, 'listening')
    const store = createRedisStoreAdapter({ url: `redis://127.0.0.1:${dropping.address().port}`, commandTimeout: 200, connectTimeout: 200 })
    let calls = 0
    const until = performance.now() + 1000
    while (performance.now() < until) {
      calls++
      await store.get('k').then(() => assert.fail('a reply from nowhere'), hasCode('ERR_STORE_CONNECTION'))
    }
    await store.close()
    dropping.close()
    // 50 ms doubling to 500 ms: a handful of connections in a second, whatever the calls.
    assert.ok(accepted <= 12, `${accepted} connections for ${calls} calls in 1 s`)
  })

  it('a server at maxclients with a password is retried within the connect budget', async () => {
    const server = await startRedis('--maxclients', '1', '--requirepass', 'pw')
    const holder = await rawConnection(server.port)
    holder.send('AUTH', 'pw')
    await waitUntil(() => holder.received().includes('OK'), { what: 'the slot taken' })
    const store = createRedisStoreAdapter({ url: server.url, password: 'pw', connectTimeout: 3000, commandTimeout: 1000 })
    const pending = store.set('k', 1)
    // The slot frees while the call still waits for a connection.
    const rejected = async () => Number([...holder.received().matchAll(/rejected_connections:(\d+)/g)].at(-1)?.[1] ?? 0)
    await waitUntil(async () => {
      holder.send('INFO', 'stats')
      return (await rejected()) >= 1
    }, { what: 'a refused attempt', everyMs: 50 })
    holder.close()
    await pending
    assert.equal(await store.get('k'), 1)
    await store.close()
    await server.stop()
  })

  it('no subscriber connection is kept when nothing is subscribed', async () => {
    const server = await startRedis()
    await server.cli('ACL', 'SETUSER', 'erin', 'on', '>pw', '~*', 'resetchannels', '+@all')
    const store = createRedisStoreAdapter(`redis://erin:pw@127.0.0.1:${server.port}`)
    await store.set('k', 1)
    await assert.rejects(store.subscribe('refused', () => {}), /NOPERM/)
    const connections = async () => (await server.cli('CLIENT', 'LIST')).split('\n').filter((line) => / user=erin /.test(line)).length
    await waitUntil(async () => (await connections()) === 1, { what: 'only the command connection' })
    await store.close()
    await server.stop()
  })
})
