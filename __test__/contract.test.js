'use strict'

// The adapter contract (the calls, bad input, errors), the same assertions on every backend.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { once } = require('node:events')
const { performance } = require('node:perf_hooks')
const { backends, sentinelBackend, clusterBackend } = require('./helpers/backends.js')
const { waitUntil, collect } = require('./helpers/wait.js')
const { hasCode: code } = require('./helpers/expect.js')

let shared = 0

for (const backend of [...backends, sentinelBackend, clusterBackend]) {
  describe(`${backend.name} backend`, () => {
    let store
    before(async () => {
      await backend.setup()
      store = backend.create()
    })
    after(async () => {
      await store.close()
      await backend.teardown()
    })
    // Two adapters over the same data: a named memory store, or the same Redis server.
    const sharedOptions = () =>
      backend.name === 'memory' ? { name: `shared-${process.pid}-${++shared}` } : { keyPrefix: `shared-${++shared}:` }

    describe('values', () => {
      it('round-trips JSON values of every kind', async () => {
        const values = [{ a: 1, nested: { list: [1, 'two', null] } }, [1, 2, 3], 'hi', '', 0, -1.5, true, false, null, 'ünïcödé ✓']
        for (const [i, value] of values.entries()) {
          await store.set(`value:${i}`, value)
          assert.deepEqual(await store.get(`value:${i}`), value)
        }
      })

      it('round-trips a value larger than the string buffer (3 MB), then small ones again', async () => {
        const big = { text: 'ü'.repeat(1_500_000) }
        await store.set('big', big)
        assert.deepEqual(await store.get('big'), big)
        await store.set('after-big', 'small')
        assert.equal(await store.get('after-big'), 'small')
      })

      it('keeps multi-byte characters whole where they cross the 16 KB string buffer', async () => {
        for (let pad = 16370; pad < 16390; pad++) {
          const key = 'k'.repeat(pad) + '😀€é' + 'tail'
          const value = 'v'.repeat(pad) + '😀€é' + 'tail'
          await store.set(key, value)
          assert.equal(await store.get(key), value)
          assert.equal(await store.has('k'.repeat(pad) + '😀€é' + 'tai'), false)
          await store.delete(key)
        }
      })

      it('gives null for a missing key', async () => {
        assert.equal(await store.get('missing'), null)
      })

      it('stores strings as JSON', async () => {
        // The JSON text is what other clients see: checked against redis-cli in redis.test.js.
        await store.set('string', 'hi')
        assert.equal(await store.get('string'), 'hi')
      })

      it('delete removes a key and resolves whether or not it existed', async () => {
        await store.set('doomed', 1)
        assert.equal(await store.delete('doomed'), undefined)
        assert.equal(await store.has('doomed'), false)
        assert.equal(await store.get('doomed'), null)
        assert.equal(await store.delete('doomed'), undefined)
      })

      it('has tells whether a key exists', async () => {
        assert.equal(await store.has('present'), false)
        await store.set('present', { x: 1 })
        assert.equal(await store.has('present'), true)
      })

      it('accepts any string as a key, including empty and very long ones', async () => {
        for (const key of ['', ' ', '*', 'a:b:c', 'é'.repeat(5000), '\u0000nul']) {
          await store.set(key, key.length)
          assert.equal(await store.get(key), key.length)
        }
      })

      it('keeps call order for concurrent calls on one key', async () => {
        const calls = []
        for (let i = 0; i < 200; i++) calls.push(store.set('order', i))
        const last = store.get('order')
        await Promise.all(calls)
        assert.equal(await last, 199)
      })
    })

    describe('TTL', () => {
      it('a value set with a ttl expires', async () => {
        await store.set('short', 'soon gone', { ttl: 0.05 })
        assert.equal(await store.get('short'), 'soon gone')
        await waitUntil(async () => (await store.has('short')) === false)
        assert.equal(await store.get('short'), null)
      })

      it('ttl 0 or none stores without expiry and clears an earlier one', async () => {
        await store.set('kept', 1, { ttl: 0.05 })
        await store.set('kept', 2)
        await store.set('kept0', 1, { ttl: 0.05 })
        await store.set('kept0', 2, { ttl: 0 })
        await store.set('marker', 1, { ttl: 0.1 })
        await waitUntil(async () => (await store.has('marker')) === false)
        assert.equal(await store.get('kept'), 2)
        assert.equal(await store.get('kept0'), 2)
      })

      it('expire sets a time to live on an existing key', async () => {
        await store.set('later', 'x')
        await store.expire('later', 0.05)
        await waitUntil(async () => (await store.has('later')) === false)
      })

      it('expire on a missing key is a no-op', async () => {
        await store.expire('never-set', 10)
        assert.equal(await store.has('never-set'), false)
      })

      it('a long ttl keeps the value', async () => {
        await store.set('long', 'x', { ttl: 3600 })
        await store.expire('long', 7200.5)
        await store.set('longest', 'y', { ttl: Number.MAX_SAFE_INTEGER / 1000 })
        assert.equal(await store.get('longest'), 'y')
        assert.equal(await store.get('long'), 'x')
      })
    })

    describe('increment', () => {
      it('counts from 0 and resolves to the new value', async () => {
        assert.equal(await store.increment('counter'), 1)
        assert.equal(await store.increment('counter'), 2)
        assert.equal(await store.get('counter'), 2)
      })

      it('is atomic under concurrency across adapters', async () => {
        const options = sharedOptions()
        const a = backend.create(options)
        const b = backend.create(options)
        const results = await Promise.all(Array.from({ length: 300 }, (_, i) => (i % 2 ? a : b).increment('atomic')))
        assert.deepEqual([...results].sort((x, y) => x - y), Array.from({ length: 300 }, (_, i) => i + 1))
        await Promise.all([a.close(), b.close()])
      })

      it('counts on a stored integer', async () => {
        await store.set('fromTen', 10)
        assert.equal(await store.increment('fromTen'), 11)
      })

      it('refuses a value that is not an integer and leaves it unchanged', async () => {
        for (const value of ['text', 1.5, { a: 1 }]) {
          await store.set('notInt', value)
          await assert.rejects(store.increment('notInt'), code('ERR_STORE_NOT_INTEGER'))
          assert.deepEqual(await store.get('notInt'), value)
        }
      })

      it('refuses a result past Number.MAX_SAFE_INTEGER', async () => {
        await store.set('huge', Number.MAX_SAFE_INTEGER)
        await assert.rejects(store.increment('huge'), code('ERR_STORE_NOT_INTEGER', RangeError))
      })
    })

    describe('bad input is rejected before any I/O', () => {
      const notStrings = [undefined, null, 1, {}, [], Symbol('s'), () => {}]

      it('keys and channels must be strings', async () => {
        for (const bad of notStrings) {
          await assert.rejects(store.get(bad), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
          await assert.rejects(store.set(bad, 1), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
          await assert.rejects(store.delete(bad), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
          await assert.rejects(store.has(bad), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
          await assert.rejects(store.increment(bad), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
          await assert.rejects(store.expire(bad, 1), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
          await assert.rejects(store.publish(bad, 1), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
          await assert.rejects(store.subscribe(bad, () => {}), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
          await assert.rejects(store.unsubscribe(bad), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
        }
      })

      it('names with a lone surrogate are refused rather than merged', async () => {
        await assert.rejects(store.set('\uD800', 1), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
        await assert.rejects(store.publish('a\uDC00', 1), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
        await store.set('\uD83D\uDE00', 'a whole pair is fine')
        assert.equal(await store.get('\uD83D\uDE00'), 'a whole pair is fine')
      })

      it('calls never throw synchronously', () => {
        assert.doesNotThrow(() => store.get(1).catch(() => {}))
        assert.doesNotThrow(() => store.set('k', undefined).catch(() => {}))
        assert.doesNotThrow(() => store.subscribe('c', 'nope').catch(() => {}))
      })

      it('values that are not JSON are refused and the old value stays', async () => {
        const cyclic = {}
        cyclic.self = cyclic
        await store.set('keep', { old: true })
        for (const bad of [undefined, () => {}, Symbol('s'), 10n, cyclic, { n: 1n }]) {
          await assert.rejects(store.set('keep', bad), code('ERR_STORE_SERIALIZE', TypeError))
          await assert.rejects(store.publish('chan', bad), code('ERR_STORE_SERIALIZE', TypeError))
        }
        assert.deepEqual(await store.get('keep'), { old: true })
      })

      it('set refuses a bad ttl and the old value stays', async () => {
        await store.set('ttlKeep', 'old')
        for (const ttl of [-1, -0.001, NaN, Infinity, -Infinity, 1e300, Number.MAX_SAFE_INTEGER]) {
          await assert.rejects(store.set('ttlKeep', 'new', { ttl }), code('ERR_STORE_INVALID_ARGUMENT', RangeError))
        }
        for (const ttl of ['10', true, {}, 10n]) {
          await assert.rejects(store.set('ttlKeep', 'new', { ttl }), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
        }
        await assert.rejects(store.set('ttlKeep', 'new', 5), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
        assert.equal(await store.get('ttlKeep'), 'old')
      })

      it('set refuses unknown options, so a typo never stores a key without its expiry', async () => {
        await assert.rejects(store.set('typo', 'v', { tll: 60 }), (err) => {
          code('ERR_STORE_INVALID_ARGUMENT', TypeError)(err)
          assert.match(err.message, /unknown set option "tll"; known: ttl/)
          return true
        })
        assert.equal(await store.get('typo'), null)
        await assert.rejects(store.set('typo', 'v', { ttl: '60' }), /ttl must be a number of seconds, got "60"/)
        await assert.rejects(store.set('typo', 'v', { ttl: -5 }), /got -5/)
        await assert.rejects(store.expire('typo', NaN), /got NaN/)
      })

      it('expire refuses a ttl that is not a positive finite number', async () => {
        await store.set('expKeep', 'v')
        for (const ttl of [0, -1, NaN, Infinity, -Infinity, 1e300]) {
          await assert.rejects(store.expire('expKeep', ttl), code('ERR_STORE_INVALID_ARGUMENT', RangeError))
        }
        for (const ttl of [undefined, '5', null]) {
          await assert.rejects(store.expire('expKeep', ttl), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
        }
        assert.equal(await store.get('expKeep'), 'v')
        assert.equal(await store.has('expKeep'), true)
      })

      it('callbacks must be functions', async () => {
        for (const bad of [undefined, null, 'f', {}]) {
          await assert.rejects(store.subscribe('c', bad), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
        }
        await assert.rejects(store.unsubscribe('c', 'f'), code('ERR_STORE_INVALID_ARGUMENT', TypeError))
      })
    })

    describe('keyPrefix', () => {
      it('adapters with different prefixes never see each other', async () => {
        const options = sharedOptions()
        const a = backend.create({ ...options, keyPrefix: 'a:' })
        const b = backend.create({ ...options, keyPrefix: 'b:' })
        await a.set('same', 'from a')
        assert.equal(await b.get('same'), null)
        assert.equal(await b.has('same'), false)
        const got = []
        await b.subscribe('news', (m) => got.push(m))
        const mine = collect(1)
        await a.subscribe('news', mine.callback)
        await a.publish('news', 'for a only')
        assert.deepEqual(await mine.all, [{ message: 'for a only', channel: 'news' }])
        await a.close()
        await b.close()
        assert.deepEqual(got, [])
      })

      it('the same prefix shares keys', async () => {
        const options = sharedOptions()
        const a = backend.create({ ...options, keyPrefix: 'same:' })
        const b = backend.create({ ...options, keyPrefix: 'same:' })
        await a.set('k', 1)
        assert.equal(await b.get('k'), 1)
        await a.close()
        await b.close()
      })
    })

    describe('Pub/Sub', () => {
      it('delivers JSON messages with the channel name, in publish order', async () => {
        const { callback, all } = collect(100)
        await store.subscribe('ordered', callback)
        for (let i = 0; i < 100; i++) store.publish('ordered', { i })
        const messages = await all
        assert.deepEqual(messages.map((m) => m.message.i), Array.from({ length: 100 }, (_, i) => i))
        assert.ok(messages.every((m) => m.channel === 'ordered'))
        await store.unsubscribe('ordered')
      })

      it('delivers a backlog longer than one drain batch, complete and in order', async () => {
        const count = 40000
        const { callback, all } = collect(count)
        await store.subscribe('flood', callback)
        const publishes = []
        for (let i = 0; i < count; i++) publishes.push(store.publish('flood', i))
        await Promise.all(publishes)
        const messages = await all
        assert.ok(messages.every((m, i) => m.message === i), 'every message, in publish order')
        await store.unsubscribe('flood')
      })

      it('a long backlog leaves room for timers: one set in the first callback fires before the last message', async () => {
        const count = 300
        let delivered = 0
        let deliveredWhenTimerFired = null
        let allDelivered
        const done = new Promise((resolve) => (allDelivered = resolve))
        await store.subscribe('slow', () => {
          delivered++
          if (delivered === 1) setTimeout(() => (deliveredWhenTimerFired = delivered), 0)
          // A callback that takes a millisecond, as real work does.
          const until = performance.now() + 1
          while (performance.now() < until);
          if (delivered === count) allDelivered()
        })
        const publishes = []
        for (let i = 0; i < count; i++) publishes.push(store.publish('slow', i))
        await Promise.all(publishes)
        await done
        assert.notEqual(deliveredWhenTimerFired, null)
        assert.ok(deliveredWhenTimerFired < count, `the timer fired after ${deliveredWhenTimerFired} of ${count} messages`)
        await store.unsubscribe('slow')
      })

      it('reaches subscribers of another adapter', async () => {
        const options = sharedOptions()
        const publisher = backend.create(options)
        const subscriber = backend.create(options)
        const { callback, all } = collect(1)
        await subscriber.subscribe('cross', callback)
        await publisher.publish('cross', { hello: 'world' })
        assert.deepEqual(await all, [{ message: { hello: 'world' }, channel: 'cross' }])
        await Promise.all([publisher.close(), subscriber.close()])
      })

      it('never runs a callback inside publish', async () => {
        let inside = false
        let ranInside = null
        const { callback, all } = collect(1)
        await store.subscribe('async', (m, c) => {
          ranInside = inside
          callback(m, c)
        })
        inside = true
        const published = store.publish('async', 1)
        inside = false
        await published
        await all
        assert.equal(ranInside, false)
        await store.unsubscribe('async')
      })

      it('the same callback twice on one channel counts once', async () => {
        let calls = 0
        const counting = () => calls++
        const { callback, all } = collect(2)
        await store.subscribe('twice', counting)
        await store.subscribe('twice', counting)
        await store.subscribe('twice', callback)
        await store.publish('twice', 1)
        await store.publish('twice', 2)
        await all
        assert.equal(calls, 2)
        await store.unsubscribe('twice')
      })

      it('unsubscribe with a callback removes only that callback', async () => {
        const removed = []
        const stays = collect(1)
        const onRemoved = (m) => removed.push(m)
        await store.subscribe('partial', onRemoved)
        await store.subscribe('partial', stays.callback)
        await store.unsubscribe('partial', onRemoved)
        await store.publish('partial', 'after')
        await stays.all
        assert.deepEqual(removed, [])
        await store.unsubscribe('partial')
      })

      it('unsubscribe without a callback stops delivery; unknown ones are no-ops', async () => {
        const got = []
        await store.subscribe('stop', (m) => got.push(m))
        await store.unsubscribe('stop')
        await store.unsubscribe('stop')
        await store.unsubscribe('never-subscribed')
        await store.unsubscribe('never-subscribed', () => {})
        // A later subscription on another channel proves delivery works and 'stop' stayed silent.
        const probe = collect(1)
        await store.subscribe('probe', probe.callback)
        await store.publish('stop', 'dropped')
        await store.publish('probe', 'seen')
        await probe.all
        assert.deepEqual(got, [])
        await store.unsubscribe('probe')
      })

      it('channel names are literal', async () => {
        const star = []
        await store.subscribe('news.*', (m) => star.push(m))
        const probe = collect(1)
        await store.subscribe('news.x', probe.callback)
        await store.publish('news.x', 'x')
        await probe.all
        assert.deepEqual(star, [])
        await store.unsubscribe('news.*')
        await store.unsubscribe('news.x')
      })

      it('a callback that throws or rejects goes to onError and others still run', async () => {
        const errors = []
        const options = { ...sharedOptions(), onError: (err) => errors.push(err) }
        const adapter = backend.create(options)
        const { callback, all } = collect(2)
        await adapter.subscribe('faulty', () => {
          throw new Error('sync boom')
        })
        await adapter.subscribe('faulty', async () => {
          throw new Error('async boom')
        })
        await adapter.subscribe('faulty', callback)
        await adapter.publish('faulty', 1)
        await adapter.publish('faulty', 2)
        await all
        await waitUntil(() => errors.length === 4)
        assert.deepEqual(errors.map((e) => e.message).sort(), ['async boom', 'async boom', 'sync boom', 'sync boom'])
        await adapter.close()
      })

      it('the default onError is a process warning', async () => {
        const adapter = backend.create(sharedOptions())
        await adapter.subscribe('warned', () => {
          throw new Error('to the warning')
        })
        // Node's own listener prints warnings; this one is expected, so it is kept out of the
        // test output while the test listens for it.
        const printers = process.listeners('warning')
        process.removeAllListeners('warning')
        try {
          const warning = once(process, 'warning')
          await adapter.publish('warned', 1)
          const [emitted] = await warning
          assert.equal(emitted.message, 'to the warning')
        } finally {
          for (const printer of printers) process.on('warning', printer)
        }
        await adapter.close()
      })
    })

    describe('close', () => {
      it('an unsubscribe started by a call settling during close still settles', async () => {
        const adapter = backend.create(sharedOptions())
        await adapter.subscribe('closing-channel', () => {})
        const settled = adapter.get('x')
        const closed = adapter.close()
        const unsubscribed = settled.then(() => adapter.unsubscribe('closing-channel'))
        await closed
        assert.equal(await unsubscribed, undefined)
      })

      it('settles pending calls, then rejects later ones with ERR_STORE_CLOSED; idempotent', async () => {
        const adapter = backend.create(sharedOptions())
        const pending = [adapter.set('c', 1), adapter.get('c'), adapter.increment('n')]
        const closed = adapter.close()
        assert.deepEqual(await Promise.all(pending), [undefined, 1, 1])
        await closed
        await adapter.close()
        await assert.rejects(adapter.get('c'), code('ERR_STORE_CLOSED'))
        await assert.rejects(adapter.set('c', 2), code('ERR_STORE_CLOSED'))
        await assert.rejects(adapter.subscribe('c', () => {}), code('ERR_STORE_CLOSED'))
        await assert.rejects(adapter.publish('c', 1), code('ERR_STORE_CLOSED'))
      })

      it('releases subscriptions: closed adapters get no messages', async () => {
        const options = sharedOptions()
        const closing = backend.create(options)
        const got = []
        await closing.subscribe('after-close', (m) => got.push(m))
        await closing.close()
        const other = backend.create(options)
        const probe = collect(1)
        await other.subscribe('after-close', probe.callback)
        await other.publish('after-close', 'x')
        await probe.all
        assert.deepEqual(got, [])
        await other.close()
      })
    })

    it('exposes client and a redacted inspect', () => {
      assert.ok(store.client !== undefined)
      assert.match(require('node:util').inspect(store), /StoreAdapter/)
    })
  })
}
