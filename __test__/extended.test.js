'use strict'

// The extended adapter API (increment by delta, setNX, mget/mset, scan, streams and consumer
// groups), the same assertions on every backend: bad input first, then what each call does.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { inspect } = require('node:util')
const Redis = require('ioredis')
const { backends } = require('./helpers/backends.js')
const { waitUntil } = require('./helpers/wait.js')
const { hasCode, parseId, compareIds } = require('./helpers/expect.js')
const { startRedis } = require('./helpers/redis-server.js')
const { createRedisStoreAdapter } = require('../index.js')

const INVALID = 'ERR_STORE_INVALID_ARGUMENT'
const SERIALIZE = 'ERR_STORE_SERIALIZE'
const NOT_INTEGER = 'ERR_STORE_NOT_INTEGER'
const CLOSED = 'ERR_STORE_CLOSED'
const REDIS = 'ERR_STORE_REDIS'
const MAX = Number.MAX_SAFE_INTEGER

let unique = 0
const uid = () => `${process.pid}-${++unique}`
const show = (value) => inspect(value, { depth: 2, breakLength: Infinity })

// Values JSON.stringify cannot turn into text, or throws on.
const cyclic = {}
cyclic.self = cyclic
const unserializable = [() => {}, 10n, { n: 1n }, cyclic, undefined, Symbol('s')]

// Strings that are no stream id: only '-', '+', 'ms' and 'ms-seq' are.
const notIds = ['abc', '(1-0', '1-2-3', '-1', '1-', '', '1.5', ' 1', '1-x', '18446744073709551616']

// A call with bad input: it must return a promise (never throw) that rejects with this code
// and error class.
async function refused(call, code, type, what) {
  let result
  assert.doesNotThrow(() => {
    result = call()
  }, `${what} threw synchronously`)
  assert.ok(result instanceof Promise, `${what} returned ${show(result)}, not a promise`)
  await assert.rejects(result, (err) => {
    assert.ok(err instanceof type, `${what}: expected a ${type.name}, got ${err && err.constructor.name}: ${err && err.message}`)
    assert.equal(err.code, code, `${what}: ${err.message}`)
    return true
  }, `${what} resolved`)
}

const assertIncreasing = (ids, what) => {
  for (let i = 1; i < ids.length; i++) assert.ok(compareIds(ids[i - 1], ids[i]) < 0, `${what}: ${ids[i - 1]} before ${ids[i]}`)
}

// Every page of a scan, from cursor '0' back to '0'; `between` runs after each page but the last.
async function scanAll(store, pattern, options = {}, between = async () => {}) {
  const keys = []
  let cursor = '0'
  for (let page = 0; ; page++) {
    assert.ok(page < 20000, 'the scan ends')
    const result = await store.scan(pattern, { ...options, cursor })
    assert.ok(Array.isArray(result.keys), `keys is an array: ${show(result)}`)
    assert.equal(typeof result.cursor, 'string')
    for (const key of result.keys) assert.equal(typeof key, 'string')
    keys.push(...result.keys)
    cursor = result.cursor
    if (cursor === '0') return keys
    await between(page)
  }
}
const sorted = (list) => [...new Set(list)].sort()

// A timer to race against: which comes first says whether something waited, with no threshold.
function timer(ms) {
  let handle
  const fired = new Promise((resolve) => (handle = setTimeout(() => resolve('timer'), ms)))
  return { fired, cancel: () => clearTimeout(handle) }
}

for (const backend of backends) {
  const redis = backend.name === 'redis'
  // Tests that need a raw client to write what the adapter never writes: Redis only.
  const itWithRaw = redis ? it : () => {}

  describe(`extended API (${backend.name})`, () => {
    let raw = null
    const open = []
    before(async () => {
      await backend.setup()
      if (redis) raw = new Redis(backend.server.url)
    })
    after(async () => {
      await Promise.all(open.map((store) => store.close()))
      if (raw) await raw.quit()
      await backend.teardown()
    })

    // An adapter over data of its own, with a known prefix (for the raw client on Redis).
    const fresh = (options = {}) => {
      const prefix = `x${uid()}:`
      const store = backend.create({ keyPrefix: prefix, ...options })
      open.push(store)
      return { store, prefix }
    }
    // Options under which adapters share data: a named memory store, or the same Redis server.
    const sharedOptions = () => (redis ? {} : { name: `extended-${uid()}` })
    const sharing = (options, prefix) => {
      const store = backend.create({ ...options, keyPrefix: prefix })
      open.push(store)
      return store
    }
    // Resolves once a blocking read just started is waiting: on Redis, when the server counts
    // a blocked client (no event says so; every earlier blocking read in this file has ended,
    // and the one ended by close() comes last); in memory, after a later call on the same adapter.
    const untilBlocked = async (store) => {
      if (redis) {
        await waitUntil(async () => /blocked_clients:[1-9]/.test(await raw.info('clients')), { what: 'a read blocked on the server' })
      } else {
        await store.has('probe')
      }
    }
    const nogroup = (prefix, stream, group) => (err) => {
      hasCode(REDIS)(err)
      assert.ok(err.message.startsWith('NOGROUP'), err.message)
      assert.equal(err.message, `NOGROUP No such key '${prefix}${stream}' or consumer group '${group}' in XREADGROUP with GROUP option`)
      return true
    }

    describe('bad input is rejected before any I/O, and nothing is written', () => {
      it('increment refuses a delta that is not a safe integer; undefined means 1', async () => {
        const { store } = fresh()
        await store.set('count', 5)
        for (const delta of ['1', null, true, {}, [], 1n, Symbol('d'), () => 1]) {
          await refused(() => store.increment('count', delta), INVALID, TypeError, `increment by ${show(delta)}`)
          await refused(() => store.increment('absent', delta), INVALID, TypeError, `increment absent by ${show(delta)}`)
        }
        for (const delta of [1.5, -0.5, NaN, Infinity, -Infinity, 2 ** 53, -(2 ** 53), 1e300]) {
          await refused(() => store.increment('count', delta), INVALID, RangeError, `increment by ${show(delta)}`)
          await refused(() => store.increment('absent', delta), INVALID, RangeError, `increment absent by ${show(delta)}`)
        }
        await refused(() => store.increment(1, 1), INVALID, TypeError, 'increment of key 1')
        assert.equal(await store.get('count'), 5)
        assert.equal(await store.has('absent'), false)
        assert.equal(await store.increment('count', undefined), 6)
      })

      it('setNX refuses a bad ttl, an unknown option and a value that is not JSON', async () => {
        const { store } = fresh()
        await store.set('held', 'old')
        for (const key of ['nx', 'held']) {
          for (const ttl of [-1, -0.001, NaN, Infinity, -Infinity, 1e300, MAX]) {
            await refused(() => store.setNX(key, 'new', { ttl }), INVALID, RangeError, `setNX ${key} ttl ${show(ttl)}`)
          }
          for (const ttl of ['10', true, {}, 10n]) {
            await refused(() => store.setNX(key, 'new', { ttl }), INVALID, TypeError, `setNX ${key} ttl ${show(ttl)}`)
          }
          await refused(() => store.setNX(key, 'new', { tll: 5 }), INVALID, TypeError, `setNX ${key} { tll: 5 }`)
          await refused(() => store.setNX(key, 'new', { ttl: 5, px: 1 }), INVALID, TypeError, `setNX ${key} { ttl, px }`)
          await refused(() => store.setNX(key, 'new', 5), INVALID, TypeError, `setNX ${key} options 5`)
          for (const value of unserializable) {
            await refused(() => store.setNX(key, value), SERIALIZE, TypeError, `setNX ${key} value ${show(value)}`)
          }
        }
        await refused(() => store.setNX(null, 'v'), INVALID, TypeError, 'setNX key null')
        assert.equal(await store.has('nx'), false)
        assert.equal(await store.get('held'), 'old')
        assert.equal(await store.setNX('nx', 'fine', { ttl: undefined }), true)
      })

      it('mget refuses anything but an array of strings', async () => {
        const { store } = fresh()
        await store.set('a', 1)
        for (const keys of ['a', undefined, null, 1, {}, { length: 1, 0: 'a' }, new Set(['a'])]) {
          await refused(() => store.mget(keys), INVALID, TypeError, `mget ${show(keys)}`)
        }
        for (const keys of [[1], ['a', null], ['a', undefined], [Symbol('k')], ['a', {}], ['\uD800']]) {
          await refused(() => store.mget(keys), INVALID, TypeError, `mget ${show(keys)}`)
        }
        assert.deepEqual(await store.mget(['a']), [1])
      })

      it('mset refuses a bad entry anywhere, and then writes none of the entries', async () => {
        const { store } = fresh()
        const first = { key: 'ok-1', value: 1 }
        const last = { key: 'ok-2', value: 'two', ttl: 60 }
        const refuse = (entries, code, type) => refused(() => store.mset(entries), code, type, `mset ${show(entries)}`)
        for (const entries of ['x', undefined, null, 1, { key: 'a', value: 1 }, new Set([first])]) {
          await refuse(entries, INVALID, TypeError)
        }
        for (const bad of ['entry', null, 1, ['bad', 1], { key: 'bad', value: 1, tll: 5 }, { key: 'bad', value: 1, expire: 5 },
          { key: 1, value: 1 }, { value: 1 }, { key: 'bad', value: 1, ttl: '5' }, { key: 'bad', value: 1, ttl: true }]) {
          await refuse([first, bad, last], INVALID, TypeError)
        }
        for (const ttl of [-1, NaN, Infinity, 1e300]) {
          await refuse([first, { key: 'bad', value: 1, ttl }, last], INVALID, RangeError)
        }
        for (const value of unserializable) {
          await refuse([first, { key: 'bad', value }, last], SERIALIZE, TypeError)
          await refuse([first, last, { key: 'bad', value }], SERIALIZE, TypeError)
        }
        assert.deepEqual(await store.mget(['ok-1', 'ok-2', 'bad']), [null, null, null])
        assert.equal(await store.has('ok-1'), false)
        assert.equal(await store.has('ok-2'), false)
      })

      it('scan refuses a bad pattern, count, option or cursor', async () => {
        const { store } = fresh()
        for (const pattern of [1, null, undefined, {}, Symbol('p')]) {
          await refused(() => store.scan(pattern), INVALID, TypeError, `scan pattern ${show(pattern)}`)
        }
        for (const count of [0, -1, 1.5, NaN, Infinity, 2 ** 53]) {
          await refused(() => store.scan('*', { count }), INVALID, RangeError, `scan count ${show(count)}`)
        }
        for (const count of ['10', true, 10n]) {
          await refused(() => store.scan('*', { count }), INVALID, TypeError, `scan count ${show(count)}`)
        }
        await refused(() => store.scan('*', { cursr: '0' }), INVALID, TypeError, 'scan { cursr }')
        await refused(() => store.scan('*', { match: '*' }), INVALID, TypeError, 'scan { match }')
        await refused(() => store.scan('*', 5), INVALID, TypeError, 'scan options 5')
        await refused(() => store.scan('*', { cursor: 0 }), INVALID, TypeError, 'scan cursor 0 (a number)')
        for (const cursor of ['abc', '-1', '', '1.5', ' 0']) {
          await refused(() => store.scan('*', { cursor }), INVALID, Error, `scan cursor ${show(cursor)}`)
        }
      })

      it('xadd refuses a bad maxLen, approximate, option or message, and adds nothing', async () => {
        const { store, prefix } = fresh()
        const what = (options) => `xadd ${show(options)}`
        for (const maxLen of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
          await refused(() => store.xadd('s', { a: 1 }, { maxLen }), INVALID, RangeError, what({ maxLen }))
        }
        for (const maxLen of ['10', true, 10n]) {
          await refused(() => store.xadd('s', { a: 1 }, { maxLen }), INVALID, TypeError, what({ maxLen }))
        }
        for (const approximate of ['yes', 1, {}]) {
          await refused(() => store.xadd('s', { a: 1 }, { maxLen: 5, approximate }), INVALID, TypeError, what({ approximate }))
        }
        await refused(() => store.xadd('s', { a: 1 }, { maxlen: 5 }), INVALID, TypeError, what({ maxlen: 5 }))
        await refused(() => store.xadd('s', { a: 1 }, 5), INVALID, TypeError, 'xadd options 5')
        await refused(() => store.xadd(1, { a: 1 }), INVALID, TypeError, 'xadd to stream 1')
        for (const message of unserializable) {
          await refused(() => store.xadd('s', message), SERIALIZE, TypeError, `xadd message ${show(message)}`)
        }
        assert.deepEqual(await store.xrange('s'), [])
        if (redis) assert.equal(await raw.exists(`${prefix}s`), 0)
      })

      it('xgroupCreate refuses a bad startId and creates neither stream nor group', async () => {
        const { store, prefix } = fresh()
        for (const startId of notIds) {
          await refused(() => store.xgroupCreate('s', 'g', startId), INVALID, Error, `xgroupCreate startId ${show(startId)}`)
        }
        for (const startId of [0, {}, true]) {
          await refused(() => store.xgroupCreate('s', 'g', startId), INVALID, TypeError, `xgroupCreate startId ${show(startId)}`)
        }
        await refused(() => store.xgroupCreate('s', 1), INVALID, TypeError, 'xgroupCreate group 1')
        await refused(() => store.xgroupCreate(null, 'g'), INVALID, TypeError, 'xgroupCreate stream null')
        await assert.rejects(store.xreadgroup('s', 'g', 'c'), nogroup(prefix, 's', 'g'))
        if (redis) assert.equal(await raw.exists(`${prefix}s`), 0)
      })

      it('xreadgroup refuses a bad count, blockMs, consumer or option, and consumes nothing', async () => {
        const { store } = fresh()
        const id = await store.xadd('s', { only: true })
        await store.xgroupCreate('s', 'g')
        const read = (consumer, options) => () => store.xreadgroup('s', 'g', consumer, options)
        for (const count of [0, -1, 1.5, NaN, Infinity, 2 ** 53]) {
          await refused(read('c', { count }), INVALID, RangeError, `xreadgroup count ${show(count)}`)
        }
        for (const blockMs of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
          await refused(read('c', { blockMs }), INVALID, RangeError, `xreadgroup blockMs ${show(blockMs)}`)
        }
        for (const bad of [{ count: '1' }, { blockMs: '10' }, { blockMs: true }, { block: 10 }, { count: 1, group: 'g' }]) {
          await refused(read('c', bad), INVALID, TypeError, `xreadgroup ${show(bad)}`)
        }
        await refused(read('c', 5), INVALID, TypeError, 'xreadgroup options 5')
        for (const consumer of [1, null, undefined, {}]) {
          await refused(read(consumer), INVALID, TypeError, `xreadgroup consumer ${show(consumer)}`)
        }
        await refused(() => store.xreadgroup('s', 1, 'c'), INVALID, TypeError, 'xreadgroup group 1')
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c'), [{ id, message: { only: true } }])
      })

      it('xrange and xrevrange refuse a bad id, count or option', async () => {
        const { store } = fresh()
        await store.xadd('s', 1)
        for (const method of ['xrange', 'xrevrange']) {
          const range = (options) => () => store[method]('s', options)
          for (const id of notIds) {
            await refused(range({ startId: id }), INVALID, Error, `${method} startId ${show(id)}`)
            await refused(range({ endId: id }), INVALID, Error, `${method} endId ${show(id)}`)
          }
          for (const id of [1, {}, true]) {
            await refused(range({ startId: id }), INVALID, TypeError, `${method} startId ${show(id)}`)
          }
          for (const count of [0, -1, 1.5, NaN, 2 ** 53]) {
            await refused(range({ count }), INVALID, RangeError, `${method} count ${show(count)}`)
          }
          await refused(range({ count: '2' }), INVALID, TypeError, `${method} count '2'`)
          await refused(range({ start: '-' }), INVALID, TypeError, `${method} { start }`)
          await refused(range(5), INVALID, TypeError, `${method} options 5`)
          await refused(() => store[method](1), INVALID, TypeError, `${method} stream 1`)
        }
        assert.equal((await store.xrange('s')).length, 1)
      })

      it('xack refuses anything but an array of ids, and acknowledges none', async () => {
        const { store, prefix } = fresh()
        const id = await store.xadd('s', 1)
        await store.xgroupCreate('s', 'g')
        assert.equal((await store.xreadgroup('s', 'g', 'c')).length, 1)
        for (const ids of ['1-0', null, undefined, {}, new Set([id])]) {
          await refused(() => store.xack('s', 'g', ids), INVALID, TypeError, `xack ${show(ids)}`)
        }
        await refused(() => store.xack('s', 'g', [1]), INVALID, TypeError, 'xack [1]')
        await refused(() => store.xack('s', 'g', [id, null]), INVALID, TypeError, 'xack [id, null]')
        for (const bad of ['abc', '1-2-3', '', '+', '-', '(1-0']) {
          await refused(() => store.xack('s', 'g', [id, bad]), INVALID, Error, `xack [id, ${show(bad)}]`)
        }
        await refused(() => store.xack('s', 1, [id]), INVALID, TypeError, 'xack group 1')
        if (redis) assert.equal((await raw.xpending(`${prefix}s`, 'g'))[0], 1, 'the entry is still pending')
      })

      it('the new calls never throw synchronously', () => {
        const { store } = fresh()
        const calls = [
          () => store.increment('k', 'x'), () => store.setNX(Symbol('k'), 1), () => store.mget(Symbol('k')),
          () => store.mset([Symbol('e')]), () => store.scan(Symbol('p')), () => store.xadd('s', Symbol('m')),
          () => store.xgroupCreate('s', Symbol('g')), () => store.xreadgroup('s', 'g', 'c', { count: Symbol('n') }),
          () => store.xrange('s', { startId: Symbol('i') }), () => store.xrevrange(Symbol('s')), () => store.xack('s', 'g', [Symbol('i')]),
          () => store.mset([{ key: 'k', value: 1, ttl: Symbol('t') }]), () => store.scan('*', { cursor: Symbol('c') }),
        ]
        for (const call of calls) {
          let result
          assert.doesNotThrow(() => {
            result = call()
          }, call.toString())
          assert.ok(result instanceof Promise, call.toString())
          result.catch(() => {})
        }
      })
    })

    describe('increment by a delta', () => {
      it('adds any safe integer delta, negative too, starting from 0 for a missing key', async () => {
        const { store, prefix } = fresh()
        assert.equal(await store.increment('d', 5), 5)
        assert.equal(await store.increment('d', -7), -2)
        assert.equal(await store.increment('d'), -1)
        assert.equal(await store.increment('d', undefined), 0)
        assert.equal(await store.increment('d', 0), 0)
        assert.equal(await store.get('d'), 0)
        assert.equal(await store.increment('neg', -3), -3)
        assert.equal(await store.increment('max', MAX), MAX)
        assert.equal(await store.increment('min', -MAX), -MAX)
        if (redis) assert.equal(await raw.get(`${prefix}neg`), '-3')
      })

      // The memory store refuses before writing; Redis holds 64-bit integers, so there the
      // increment has run, and the error says what the value now is.
      it('refuses a result past +-(2^53 - 1) with a RangeError; memory leaves the value, Redis says what it became', async () => {
        const { store } = fresh()
        const beyond = (made) => (err) => {
          assert.equal(err.code, NOT_INTEGER)
          assert.ok(err instanceof RangeError)
          if (redis) assert.match(err.message, new RegExp(`now ${made}\\b`))
          return true
        }
        await store.set('big', 9007199254740990)
        await assert.rejects(store.increment('big', 5), beyond('9007199254740995'))
        await store.set('big', 9007199254740990)
        assert.equal(await store.increment('big', 1), MAX)
        await assert.rejects(store.increment('big'), beyond('9007199254740992'))
        if (!redis) assert.equal(await store.get('big'), MAX)
        await store.set('small', -9007199254740990)
        await assert.rejects(store.increment('small', -5), beyond('-9007199254740995'))
        if (!redis) assert.equal(await store.get('small'), -9007199254740990)
      })

      it('refuses a stored value that is not an integer and leaves it', async () => {
        const { store } = fresh()
        for (const value of ['text', 1.5, { a: 1 }, '12', true, [1], null]) {
          await store.set('v', value)
          await assert.rejects(store.increment('v', 3), hasCode(NOT_INTEGER))
          await assert.rejects(store.increment('v', -3), hasCode(NOT_INTEGER))
          assert.deepEqual(await store.get('v'), value)
        }
      })

      itWithRaw('counts on integer text another client wrote', async () => {
        const { store, prefix } = fresh()
        await raw.set(`${prefix}raw`, '12')
        assert.equal(await store.increment('raw', 3), 15)
        assert.equal(await raw.get(`${prefix}raw`), '15')
      })
    })

    describe('setNX', () => {
      it('stores only when the key is absent, as JSON', async () => {
        const { store, prefix } = fresh()
        assert.equal(await store.setNX('lock', { owner: 'a' }), true)
        assert.equal(await store.setNX('lock', { owner: 'b' }), false)
        assert.deepEqual(await store.get('lock'), { owner: 'a' })
        await store.delete('lock')
        assert.equal(await store.setNX('lock', 'again'), true)
        assert.equal(await store.get('lock'), 'again')
        if (redis) assert.equal(await raw.get(`${prefix}lock`), '"again"')
      })

      it('with a ttl the key expires, and can then be set again', async () => {
        const { store } = fresh()
        assert.equal(await store.setNX('brief', 'first', { ttl: 0.05 }), true)
        assert.equal(await store.get('brief'), 'first')
        await waitUntil(async () => (await store.has('brief')) === false)
        assert.equal(await store.setNX('brief', 'second'), true)
        assert.equal(await store.get('brief'), 'second')
      })

      it('a refused setNX leaves the value and its lack of expiry; ttl 0 means none', async () => {
        const { store } = fresh()
        await store.set('kept', 'x')
        assert.equal(await store.setNX('kept', 'y', { ttl: 0.05 }), false)
        assert.equal(await store.setNX('zero', 'z', { ttl: 0 }), true)
        await store.set('marker', 1, { ttl: 0.1 })
        await waitUntil(async () => (await store.has('marker')) === false)
        assert.equal(await store.get('kept'), 'x')
        assert.equal(await store.get('zero'), 'z')
      })

      it('exactly one of many concurrent setNX calls across adapters wins', async () => {
        const options = sharedOptions()
        const prefix = `nx${uid()}:`
        const a = sharing(options, prefix)
        const b = sharing(options, prefix)
        const results = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).setNX('claim', i)))
        assert.equal(results.filter((won) => won === true).length, 1)
        assert.ok(results.every((won) => typeof won === 'boolean'))
        assert.equal(await a.get('claim'), results.indexOf(true))
      })
    })

    describe('mget and mset', () => {
      it('mget gives values in key order, null for missing, [] for []', async () => {
        const { store } = fresh()
        assert.deepEqual(await store.mget([]), [])
        await store.set('a', 1)
        await store.set('b', { x: [1, 'two'] })
        await store.set('c', 'plain words, not JSON text')
        await store.set('n', null)
        assert.deepEqual(await store.mget(['a', 'missing', 'b', 'c', 'a', 'n', '']),
          [1, null, { x: [1, 'two'] }, 'plain words, not JSON text', 1, null, null])
      })

      itWithRaw('mget gives text another client wrote that is not JSON as it is', async () => {
        const { store, prefix } = fresh()
        await raw.set(`${prefix}raw`, 'not {json')
        await raw.set(`${prefix}num`, '42')
        assert.deepEqual(await store.mget(['raw', 'num']), ['not {json', 42])
      })

      it('mset writes every entry as JSON, and mget reads many in order', async () => {
        const { store, prefix } = fresh()
        assert.equal(await store.mset([]), undefined)
        const entries = Array.from({ length: 300 }, (_, i) => ({ key: `k${i}`, value: i % 3 ? { i } : `s${i}` }))
        assert.equal(await store.mset(entries), undefined)
        const keys = entries.map((e) => e.key).reverse()
        assert.deepEqual(await store.mget(keys), entries.map((e) => e.value).reverse())
        if (redis) assert.equal(await raw.get(`${prefix}k1`), '{"i":1}')
      })

      it('mset gives each entry its own ttl or none; one without a ttl loses an earlier expiry', async () => {
        const { store } = fresh()
        await store.set('old', 'was', { ttl: 0.05 })
        await store.mset([
          { key: 'keep', value: 1 },
          { key: 'short', value: 'soon', ttl: 0.05 },
          { key: 'zero', value: [1], ttl: 0 },
          { key: 'undef', value: null, ttl: undefined },
          { key: 'old', value: 'now' },
          { key: 'long', value: 'x', ttl: 3600 },
        ])
        const keys = ['keep', 'short', 'zero', 'undef', 'old', 'long']
        assert.deepEqual(await store.mget(keys), [1, 'soon', [1], null, 'now', 'x'])
        await waitUntil(async () => (await store.has('short')) === false)
        assert.deepEqual(await store.mget(keys), [1, null, [1], null, 'now', 'x'])
        assert.equal(await store.has('undef'), true)
      })

      it('mget and mset keep to the adapter\'s prefix', async () => {
        const options = sharedOptions()
        const n = uid()
        const a = sharing(options, `ma${n}:`)
        const b = sharing(options, `mb${n}:`)
        await a.mset([{ key: 'k', value: 'from a' }])
        await b.mset([{ key: 'j', value: 'from b' }])
        assert.deepEqual(await a.mget(['k', 'j']), ['from a', null])
        assert.deepEqual(await b.mget(['k', 'j']), [null, 'from b'])
      })
    })

    describe('expiry and close', () => {
      it('an expired key is neither scanned nor read by mget', async () => {
        const { store } = fresh()
        await store.mset([{ key: 'gone', value: 1, ttl: 0.05 }, { key: 'stays', value: 2 }])
        await waitUntil(async () => (await store.has('gone')) === false)
        assert.deepEqual(await scanAll(store, '*'), ['stays'])
        assert.deepEqual(await store.mget(['gone', 'stays']), [null, 2])
      })

      it('after close every new call rejects ERR_STORE_CLOSED, empty batches too', async () => {
        const { store } = fresh()
        await store.close()
        const calls = {
          increment: () => store.increment('k', 2), setNX: () => store.setNX('k', 1), mget: () => store.mget([]),
          mset: () => store.mset([]), scan: () => store.scan('*'), xadd: () => store.xadd('s', 1),
          xgroupCreate: () => store.xgroupCreate('s', 'g'), xreadgroup: () => store.xreadgroup('s', 'g', 'c'),
          xrange: () => store.xrange('s'), xrevrange: () => store.xrevrange('s'), xack: () => store.xack('s', 'g', []),
        }
        for (const [name, call] of Object.entries(calls)) await refused(call, CLOSED, Error, name)
      })
    })

    describe('scan', () => {
      const globKeys = ['hello', 'hallo', 'hxllo', 'hbllo', 'hllo', 'heeeello', 'h*llo', 'h?llo', 'h[a]llo',
        'other', 'a*', 'a*b', 'ab', 'a\\b', 'é', 'éé']

      it('follows the Redis glob rules', async () => {
        const { store } = fresh()
        await store.mset(globKeys.map((key) => ({ key, value: key })))
        const cases = {
          '*': globKeys,
          'h?llo': ['hello', 'hallo', 'hxllo', 'hbllo', 'h*llo', 'h?llo'],
          'h*llo': ['hello', 'hallo', 'hxllo', 'hbllo', 'hllo', 'heeeello', 'h*llo', 'h?llo', 'h[a]llo'],
          'h[ae]llo': ['hello', 'hallo'],
          'h[^e]llo': ['hallo', 'hxllo', 'hbllo', 'h*llo', 'h?llo'],
          'h[a-b]llo': ['hallo', 'hbllo'],
          'h\\*llo': ['h*llo'],
          'h\\?llo': ['h?llo'],
          'h\\[a\\]llo': ['h[a]llo'],
          'a\\*': ['a*'],
          'a*': ['a*', 'a*b', 'ab', 'a\\b'],
          'a\\\\b': ['a\\b'],
          '[ah]?': ['a*', 'ab'],
          'é*': ['é', 'éé'],
          'other': ['other'],
          'nomatch*': [],
        }
        for (const [pattern, expected] of Object.entries(cases)) {
          assert.deepEqual(sorted(await scanAll(store, pattern)), sorted(expected), `pattern ${show(pattern)}`)
          assert.deepEqual(sorted(await scanAll(store, pattern, { count: 3 })), sorted(expected), `pattern ${show(pattern)}, count 3`)
        }
      })

      it('no keys under the prefix gives none; options may be undefined', async () => {
        const { store } = fresh()
        // On Redis other prefixes' keys are there too: a page may be empty with the scan not done.
        if (!redis) assert.deepEqual(await store.scan('*'), { keys: [], cursor: '0' })
        assert.deepEqual(await scanAll(store, '*'), [])
        assert.deepEqual(await scanAll(store, '*', { cursor: undefined, count: undefined }), [])
        const first = await store.scan('*', { cursor: undefined, count: undefined })
        assert.deepEqual(first.keys, [])
        assert.equal(typeof first.cursor, 'string')
        await store.set('one', 1)
        assert.deepEqual(await scanAll(store, '*', { count: undefined }), ['one'])
      })

      it('sees only the keys under the adapter\'s prefix, and gives them without it', async () => {
        const options = sharedOptions()
        const n = uid()
        const a = sharing(options, `pa${n}:`)
        const b = sharing(options, `pb${n}:`)
        await a.mset([{ key: 'k1', value: 1 }, { key: 'k2', value: 2 }, { key: 'both', value: 'a' }])
        await b.mset([{ key: 'k3', value: 3 }, { key: 'both', value: 'b' }])
        assert.deepEqual(sorted(await scanAll(a, '*')), ['both', 'k1', 'k2'])
        assert.deepEqual(sorted(await scanAll(b, '*')), ['both', 'k3'])
        assert.deepEqual(sorted(await scanAll(a, 'k*', { count: 1 })), ['k1', 'k2'])
        assert.deepEqual(sorted(await scanAll(b, 'k?')), ['k3'])
        if (redis) {
          await raw.set(`pa${n}:written-raw`, '1')
          assert.deepEqual(sorted(await scanAll(a, 'w*')), ['written-raw'])
        }
      })

      it('a prefix with glob characters in it is matched literally', async () => {
        const options = sharedOptions()
        const n = uid()
        const prefixes = [`${n}g*:`, `${n}gx:`, `${n}g?:`, `${n}g\\:`, `${n}g:`, `${n}g[x]:`, `${n}g[^a]:`]
        const stores = prefixes.map((prefix) => sharing(options, prefix))
        await Promise.all(stores.map((store, i) => store.mset([{ key: 'common', value: i }, { key: `own-${i}`, value: i }])))
        for (const [i, store] of stores.entries()) {
          assert.deepEqual(sorted(await scanAll(store, '*')), ['common', `own-${i}`], `prefix ${show(prefixes[i])}`)
          assert.deepEqual(await scanAll(store, 'common'), ['common'], `prefix ${show(prefixes[i])}`)
        }
      })

      it('paging by count returns every key present for the whole scan while others come and go', async () => {
        const { store } = fresh()
        const stable = Array.from({ length: 150 }, (_, i) => `stable:${i}`)
        const doomed = Array.from({ length: 80 }, (_, i) => `doomed:${i}`)
        await store.mset([...stable, ...doomed].map((key) => ({ key, value: 0 })))
        const added = []
        let pages = 0
        const keys = await scanAll(store, '*', { count: 7 }, async (page) => {
          pages++
          for (let j = 0; j < 3; j++) {
            const key = `added:${page}:${j}`
            added.push(key)
            await store.set(key, page)
          }
          await store.delete(doomed[(2 * page) % doomed.length])
          await store.delete(doomed[(2 * page + 1) % doomed.length])
          await store.set(stable[page % stable.length], page)
        })
        assert.ok(pages > 1, 'the scan took more than one page')
        const seen = new Set(keys)
        for (const key of stable) assert.ok(seen.has(key), `${key} was returned`)
        const known = new Set([...stable, ...doomed, ...added])
        for (const key of seen) assert.ok(known.has(key), `${key} is a key that was written`)
        const matching = await scanAll(store, 'stable:1*', { count: 4 }, async (page) => {
          await store.set(`stable:1x${page}`, 1)
          await store.delete(`stable:1x${page}`)
        })
        assert.deepEqual(sorted(matching), stable.filter((key) => key.startsWith('stable:1')).sort())
      })
    })

    describe('streams', () => {
      it('xadd gives increasing ids and stores the message as JSON in the field data', async () => {
        const { store, prefix } = fresh()
        const messages = [{ a: [1, 'two'] }, 'text', 42, null, [1, 2], true, { nested: { deep: 'é' } }]
        const ids = []
        for (let round = 0; round < 5; round++) {
          for (const message of messages) ids.push(await store.xadd('s', message))
        }
        assertIncreasing(ids, 'xadd ids')
        const all = Array.from({ length: 5 }, () => messages).flat()
        assert.deepEqual(await store.xrange('s'), ids.map((id, i) => ({ id, message: all[i] })))
        if (redis) {
          const entries = await raw.xrange(`${prefix}s`, '-', '+')
          assert.deepEqual(entries, ids.map((id, i) => [id, ['data', JSON.stringify(all[i])]]))
        }
      })

      it('maxLen trims exactly when approximate is false, and keeps the newest', async () => {
        const { store } = fresh()
        const ids = []
        for (let i = 0; i < 10; i++) ids.push(await store.xadd('exact', { i }, { maxLen: 3, approximate: false }))
        assert.deepEqual(await store.xrange('exact'), [7, 8, 9].map((i) => ({ id: ids[i], message: { i } })))
        for (let i = 0; i < 10; i++) await store.xadd('rough', { i }, { maxLen: 3, approximate: true })
        const rough = (await store.xrange('rough')).map((e) => e.message.i)
        assert.ok(rough.length >= 3, `approximate keeps at least maxLen: ${rough}`)
        assert.deepEqual(rough, Array.from({ length: rough.length }, (_, k) => 10 - rough.length + k), 'the newest, in order')
        const id = await store.xadd('none', 'gone', { maxLen: 0, approximate: false })
        parseId(id)
        assert.deepEqual(await store.xrange('none'), [])
        await store.xadd('undef', 'kept', { maxLen: undefined, approximate: undefined })
        assert.equal((await store.xrange('undef')).length, 1)
      })

      it('xrange and xrevrange take startId as the low end and endId as the high end', async () => {
        const { store } = fresh()
        const ids = []
        for (let i = 0; i < 6; i++) ids.push(await store.xadd('r', { i }))
        const entries = ids.map((id, i) => ({ id, message: { i } }))
        const pick = (...indexes) => indexes.map((i) => entries[i])
        assert.deepEqual(await store.xrange('r'), entries)
        assert.deepEqual(await store.xrevrange('r'), [...entries].reverse())
        assert.deepEqual(await store.xrange('r', { startId: '-', endId: '+' }), entries)
        assert.deepEqual(await store.xrange('r', { startId: ids[1], endId: ids[3] }), pick(1, 2, 3))
        assert.deepEqual(await store.xrevrange('r', { startId: ids[1], endId: ids[3] }), pick(3, 2, 1))
        assert.deepEqual(await store.xrange('r', { count: 2 }), pick(0, 1))
        assert.deepEqual(await store.xrevrange('r', { count: 2 }), pick(5, 4))
        assert.deepEqual(await store.xrange('r', { startId: ids[2], count: 2 }), pick(2, 3))
        assert.deepEqual(await store.xrevrange('r', { endId: ids[3], count: 2 }), pick(3, 2))
        assert.deepEqual(await store.xrange('r', { startId: ids[4], endId: ids[1] }), [])
        assert.deepEqual(await store.xrevrange('r', { startId: ids[4], endId: ids[1] }), [])
        const [ms1, seq1] = parseId(ids[1])
        assert.deepEqual(await store.xrange('r', { startId: `${ms1}-${seq1 + 1n}` }), pick(2, 3, 4, 5))
        const after1 = `${ms1}-${seq1 + 1n}`
        assert.deepEqual(await store.xrevrange('r', { endId: after1 }), entries.filter((e) => compareIds(e.id, after1) <= 0).reverse())
        // The 'ms' form: from ms-0 as the low end, to the last seq of ms as the high end.
        for (const ms of new Set(ids.map((id) => parseId(id)[0]))) {
          const same = entries.filter((e) => parseId(e.id)[0] === ms)
          assert.deepEqual(await store.xrange('r', { startId: String(ms), endId: String(ms) }), same)
          assert.deepEqual(await store.xrevrange('r', { startId: String(ms), endId: String(ms) }), [...same].reverse())
          assert.deepEqual(await store.xrange('r', { startId: String(ms) }), entries.filter((e) => parseId(e.id)[0] >= ms))
        }
        assert.deepEqual(await store.xrange('r', { reverse: true }), entries, 'reverse is ignored')
        assert.deepEqual(await store.xrevrange('r', { reverse: false }), [...entries].reverse(), 'reverse is ignored')
        assert.deepEqual(await store.xrange('r', { startId: undefined, endId: undefined, count: undefined, reverse: undefined }), entries)
      })

      it('a missing stream has no entries', async () => {
        const { store } = fresh()
        assert.deepEqual(await store.xrange('missing'), [])
        assert.deepEqual(await store.xrevrange('missing'), [])
        assert.deepEqual(await store.xrange('missing', { startId: '1', endId: '2-0', count: 5 }), [])
      })

      it('xgroupCreate creates a missing stream and is idempotent, without moving the group', async () => {
        const { store, prefix } = fresh()
        assert.equal(await store.xgroupCreate('s', 'g'), undefined)
        if (redis) assert.equal(await raw.type(`${prefix}s`), 'stream')
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c'), [])
        const id = await store.xadd('s', 'first')
        assert.equal(await store.xgroupCreate('s', 'g'), undefined)
        assert.equal(await store.xgroupCreate('s', 'g', '0'), undefined)
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c'), [{ id, message: 'first' }])
        assert.equal(await store.xgroupCreate('s', 'g', '0'), undefined)
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c'), [], 'the second create did not start the group over')
      })

      it('a group from \'$\' reads only later entries; from an id, those after it', async () => {
        const { store } = fresh()
        const ids = []
        for (let i = 0; i < 4; i++) ids.push(await store.xadd('s', i))
        await store.xgroupCreate('s', 'latest', '$')
        await store.xgroupCreate('s', 'all')
        await store.xgroupCreate('s', 'after1', ids[1])
        const [ms2] = parseId(ids[2])
        await store.xgroupCreate('s', 'fromMs', String(ms2))
        const later = await store.xadd('s', 'later')
        assert.deepEqual(await store.xreadgroup('s', 'latest', 'c'), [{ id: later, message: 'later' }])
        const all = [...ids.map((id, i) => ({ id, message: i })), { id: later, message: 'later' }]
        assert.deepEqual(await store.xreadgroup('s', 'all', 'c'), all)
        assert.deepEqual(await store.xreadgroup('s', 'after1', 'c'), all.slice(2))
        assert.deepEqual(await store.xreadgroup('s', 'fromMs', 'c'), all.filter((e) => compareIds(e.id, `${ms2}-0`) > 0))
      })

      it('xreadgroup gives entries in id order, at most count, each to one consumer only', async () => {
        const { store } = fresh()
        const ids = []
        for (let i = 0; i < 6; i++) ids.push(await store.xadd('s', { i }))
        await store.xgroupCreate('s', 'g')
        await store.xgroupCreate('s', 'other')
        const entries = ids.map((id, i) => ({ id, message: { i } }))
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c1', { count: 2 }), entries.slice(0, 2))
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c2', { count: 3 }), entries.slice(2, 5))
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c1', { count: undefined, blockMs: undefined }), entries.slice(5))
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c2'), [])
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c1', { blockMs: 0 }), [])
        assert.deepEqual(await store.xreadgroup('s', 'other', 'c1'), entries, 'another group reads them all again')
      })

      it('concurrent consumers on two adapters never get the same entry, and get them all', async () => {
        const options = sharedOptions()
        const prefix = `cc${uid()}:`
        const a = sharing(options, prefix)
        const b = sharing(options, prefix)
        const ids = []
        for (let i = 0; i < 60; i++) ids.push(await a.xadd('s', i))
        await a.xgroupCreate('s', 'g')
        await b.xgroupCreate('s', 'g')
        const consume = async (store, consumer) => {
          const got = []
          for (;;) {
            const batch = await store.xreadgroup('s', 'g', consumer, { count: 4 })
            assert.ok(batch.length <= 4)
            if (batch.length === 0) return got
            got.push(...batch)
          }
        }
        const results = await Promise.all([consume(a, 'a1'), consume(a, 'a2'), consume(b, 'b1'), consume(b, 'b2')])
        for (const got of results) assertIncreasing(got.map((e) => e.id), 'one consumer\'s entries')
        const delivered = results.flat().map((e) => e.id)
        assert.equal(new Set(delivered).size, delivered.length, 'no entry twice')
        assert.deepEqual([...delivered].sort(compareIds), ids)
        for (const entry of results.flat()) assert.equal(entry.message, ids.indexOf(entry.id))
      })

      itWithRaw('an entry with data that is not JSON, or no data field, comes as its field object', async () => {
        const { store, prefix } = fresh()
        await store.xgroupCreate('s', 'g')
        const key = `${prefix}s`
        const notJson = await raw.xadd(key, '*', 'data', 'not json')
        const noData = await raw.xadd(key, '*', 'a', '1', 'b', 'two')
        const extra = await raw.xadd(key, '*', 'data', '{"x":1}', 'extra', 'y')
        const plain = await store.xadd('s', { fine: true })
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c'), [
          { id: notJson, message: { data: 'not json' } },
          { id: noData, message: { a: '1', b: 'two' } },
          { id: extra, message: { x: 1 } },
          { id: plain, message: { fine: true } },
        ])
      })

      it('a missing group or stream is ERR_STORE_REDIS NOGROUP', async () => {
        const { store, prefix } = fresh()
        await assert.rejects(store.xreadgroup('nostream', 'g', 'c'), nogroup(prefix, 'nostream', 'g'))
        await store.xadd('s', 1)
        await assert.rejects(store.xreadgroup('s', 'nogroup', 'c'), nogroup(prefix, 's', 'nogroup'))
        await assert.rejects(store.xreadgroup('s', 'nogroup', 'c', { blockMs: 50 }), nogroup(prefix, 's', 'nogroup'))
      })

      it('a blocking read with nothing there resolves []', async () => {
        const { store } = fresh()
        await store.xgroupCreate('s', 'g')
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c', { blockMs: 50 }), [])
        assert.deepEqual(await store.xreadgroup('s', 'g', 'c', { blockMs: 1, count: 3 }), [])
      })

      it('a blocking read delays no other call, and an xadd on the same adapter wakes it', async () => {
        const { store } = fresh()
        await store.xgroupCreate('s', 'g')
        const read = store.xreadgroup('s', 'g', 'c', { blockMs: 30000 })
        await untilBlocked(store)
        const calls = (async () => {
          await store.set('k', 1)
          assert.equal(await store.get('k'), 1)
          assert.equal(await store.increment('n', 2), 2)
          await store.xadd('elsewhere', 'x')
          return 'calls'
        })()
        assert.equal(await Promise.race([read.then(() => 'read'), calls]), 'calls')
        const id = await store.xadd('s', { wake: true })
        assert.deepEqual(await read, [{ id, message: { wake: true } }])
      })

      it('a blocking read is woken by an xadd from another adapter of the same store', async () => {
        const options = sharedOptions()
        const prefix = `wk${uid()}:`
        const reader = sharing(options, prefix)
        const writer = sharing(options, prefix)
        await reader.xgroupCreate('s', 'g')
        const read = reader.xreadgroup('s', 'g', 'c', { blockMs: 30000, count: 5 })
        await untilBlocked(reader)
        const id = await writer.xadd('s', 'from the writer')
        assert.deepEqual(await read, [{ id, message: 'from the writer' }])
      })

      it('a blockMs past 32-bit timers still waits, until an entry comes', async () => {
        const { store } = fresh()
        await store.xgroupCreate('s', 'g')
        const read = store.xreadgroup('s', 'g', 'c', { blockMs: 2 ** 32 + 5 })
        const marker = timer(200)
        assert.equal(await Promise.race([read.then(() => 'read'), marker.fired]), 'timer', 'the read did not end early')
        const id = await store.xadd('s', 'wake')
        assert.deepEqual(await read, [{ id, message: 'wake' }])
      })

      it('close() ends a blocking read at once: it rejects ERR_STORE_CLOSED, then close resolves', async () => {
        const { store } = fresh()
        await store.xgroupCreate('s', 'g')
        const events = []
        const read = store.xreadgroup('s', 'g', 'c', { blockMs: 30000 }).then(
          (entries) => events.push(`read resolved ${show(entries)}`),
          (err) => {
            events.push('read rejected')
            return err
          })
        await untilBlocked(store)
        const closed = store.close().then(() => events.push('close resolved'))
        // The read blocks for 30 s: both settling before a 10 s timer shows neither waited for it.
        const marker = timer(10000)
        const first = await Promise.race([Promise.all([read, closed]).then(() => 'settled'), marker.fired])
        marker.cancel()
        assert.equal(first, 'settled', `before the timer: ${show(events)}`)
        assert.deepEqual(events, ['read rejected', 'close resolved'])
        hasCode(CLOSED)(await read)
        await assert.rejects(store.xreadgroup('s', 'g', 'c'), hasCode(CLOSED))
        await assert.rejects(store.xadd('s', 1), hasCode(CLOSED))
      })

      it('xack resolves for read ids, the \'ms\' form, unknown ids and []', async () => {
        const { store, prefix } = fresh()
        const ids = []
        for (let i = 0; i < 3; i++) ids.push(await store.xadd('s', i))
        await store.xgroupCreate('s', 'g')
        assert.equal((await store.xreadgroup('s', 'g', 'c')).length, 3)
        const pending = async () => (redis ? (await raw.xpending(`${prefix}s`, 'g'))[0] : null)
        if (redis) assert.equal(await pending(), 3)
        assert.equal(await store.xack('s', 'g', []), undefined)
        assert.equal(await store.xack('s', 'g', [ids[0]]), undefined)
        if (redis) assert.equal(await pending(), 2)
        assert.equal(await store.xack('s', 'g', [ids[1], ids[2], '1-0', '5']), undefined)
        if (redis) assert.equal(await pending(), 0)
        assert.equal(await store.xack('s', 'g', [ids[0]]), undefined, 'again')
        assert.equal(await store.xack('missing', 'g', [ids[0]]), undefined, 'on a missing stream')
      })
    })
  })
}

describe('memory streams', () => {
  const { createMemoryStoreAdapter } = require('../index.js')

  it('a blocking read is woken by an xadd from another adapter of the same named store, not of another', async () => {
    const name = `extended-wake-${uid()}`
    const reader = createMemoryStoreAdapter({ name })
    const writer = createMemoryStoreAdapter({ name })
    const stranger = createMemoryStoreAdapter({ name: `${name}-other` })
    const unnamed = createMemoryStoreAdapter()
    try {
      await reader.xgroupCreate('s', 'g')
      const read = reader.xreadgroup('s', 'g', 'c', { blockMs: 30000 })
      await reader.has('probe')
      const elsewhere = (async () => {
        await stranger.xadd('s', 'to another store')
        await unnamed.xadd('s', 'to a private store')
        assert.equal((await reader.xrange('s')).length, 0)
        return 'elsewhere'
      })()
      assert.equal(await Promise.race([read.then(() => 'read'), elsewhere]), 'elsewhere')
      const id = await writer.xadd('s', { from: 'writer' })
      assert.deepEqual(await read, [{ id, message: { from: 'writer' } }])
    } finally {
      await Promise.all([reader, writer, stranger, unnamed].map((s) => s.close()))
    }
  })
})

describe('Redis blocking connections', () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(() => server.stop())

  it('with maxBlockingConnections 1, two blocking reads still delay no other call and both get their entry', async () => {
    const store = createRedisStoreAdapter({ url: server.url, keyPrefix: `mb${uid()}:`, maxBlockingConnections: 1 })
    try {
      await store.xgroupCreate('s1', 'g')
      await store.xgroupCreate('s2', 'g')
      const first = store.xreadgroup('s1', 'g', 'c', { blockMs: 30000 })
      const second = store.xreadgroup('s2', 'g', 'c', { blockMs: 30000 })
      const calls = (async () => {
        await store.set('k', 'v')
        assert.equal(await store.get('k'), 'v')
        return 'calls'
      })()
      assert.equal(await Promise.race([first.then(() => 'first'), second.then(() => 'second'), calls]), 'calls')
      const id1 = await store.xadd('s1', 1)
      const id2 = await store.xadd('s2', 2)
      assert.deepEqual(await first, [{ id: id1, message: 1 }])
      assert.deepEqual(await second, [{ id: id2, message: 2 }])
    } finally {
      await store.close()
    }
  })
})
