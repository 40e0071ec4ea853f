'use strict'

// Kindling under the Igniter.js store manager (@igniter-js/store): kv, counters, claims,
// batches, typed events, streams, scans and scopes over both backends (Redis standalone, under
// Sentinel and in a cluster); on Redis, the same
// keys read and written by the official ioredis adapter, both ways.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const Redis = require('ioredis')
const { IgniterStore, IgniterStoreEvents, IgniterStoreRedisAdapter } = require('@igniter-js/store')
const { backends, sentinelBackend, clusterBackend } = require('./helpers/backends.js')
const { startRedis } = require('./helpers/redis-server.js')
const { waitUntil } = require('./helpers/wait.js')
const { hasCode: code } = require('./helpers/expect.js')
const { createRedisStoreAdapter } = require('../index.js')

// A hand-written Standard Schema (what zod and others expose as '~standard').
function schema(check) {
  return {
    '~standard': {
      version: 1,
      vendor: 'kindling-test',
      validate: (value) => (check(value) ? { value } : { issues: [{ message: 'invalid payload' }] }),
    },
  }
}

const OrderEvents = IgniterStoreEvents.create('orders')
  .event('placed', schema((v) => v !== null && typeof v === 'object' && typeof v.orderId === 'string' && typeof v.total === 'number'))
  .event('cancelled', schema((v) => v !== null && typeof v === 'object' && typeof v.orderId === 'string'))
  .build()

function buildStore(adapter, service) {
  return IgniterStore.create()
    .withAdapter(adapter)
    .withService(service)
    .addScope('organization')
    .addScope('workspace')
    .addEvents(OrderEvents)
    .build()
}

let services = 0
const uniqueService = () => `svc${process.pid}x${++services}`

// The key the manager builds: igniter:store:<service>[:<scope>:<id>]...:<namespace>:<key>.
const managerKey = (service, namespace, key) => `igniter:store:${service}:${namespace}:${key}`

function deferred() {
  let resolve
  const promise = new Promise((r) => (resolve = r))
  return { promise, resolve }
}

// Stream ids 'ms-seq' in order.
function compareIds(x, y) {
  const [xm, xs] = x.split('-').map(BigInt)
  const [ym, ys] = y.split('-').map(BigInt)
  if (xm !== ym) return xm < ym ? -1 : 1
  return xs === ys ? 0 : xs < ys ? -1 : 1
}
const msOf = (id) => id.split('-')[0]

function assertIncreasingIds(ids) {
  for (const id of ids) assert.match(id, /^\d+-\d+$/)
  for (let i = 1; i < ids.length; i++) assert.ok(compareIds(ids[i - 1], ids[i]) < 0, `${ids[i - 1]} before ${ids[i]}`)
}

// Every key a scan of `pattern` hands out, following cursors until '0'.
async function scanAll(store, pattern, count = 10) {
  const seen = new Set()
  let cursor = '0'
  let pages = 0
  do {
    const page = await store.dev.scan(pattern, { cursor, count })
    assert.equal(typeof page.cursor, 'string')
    assert.ok(Array.isArray(page.keys))
    for (const key of page.keys) seen.add(key)
    cursor = page.cursor
    pages++
    assert.ok(pages < 10000, 'the scan never returned cursor 0')
  } while (cursor !== '0')
  return { keys: [...seen].sort(), pages }
}

const sorted = (list) => [...list].sort()

async function blockedClients(server) {
  const info = await server.cli('INFO', 'clients')
  return Number(/blocked_clients:(\d+)/.exec(info)[1])
}

// Far beyond the test timeout: a blocking read given this can only end through an entry
// (or close), so a read that is not woken by an append fails the test by its timeout.
const BLOCK_FOREVER_MS = 600_000

for (const backend of [...backends, sentinelBackend, clusterBackend]) {
  describe(`Igniter store manager over the ${backend.name} backend`, () => {
    before(async () => {
      await backend.setup()
    })
    after(async () => {
      await backend.teardown()
    })

    let shares = 0
    // Two Kindling adapters over the same data (a named memory store, or one Redis server),
    // the same keyPrefix, and a manager over each with a fresh service name.
    async function withStores(fn) {
      const n = ++shares
      const options =
        backend.name === 'memory'
          ? { name: `igniter-${process.pid}-${n}`, keyPrefix: `m${n}:` }
          : { keyPrefix: `i${n}:` }
      const a = backend.create(options)
      const b = backend.create(options)
      const service = uniqueService()
      try {
        await fn({
          a,
          b,
          service,
          prefix: options.keyPrefix,
          storeA: buildStore(a, service),
          storeB: buildStore(b, service),
          key: (namespace, key) => managerKey(service, namespace, key),
        })
      } finally {
        await Promise.all([a.close(), b.close()])
      }
    }

    // Server-side state on Redis; the memory store has none to show.
    const redisOnly = backend.name !== 'memory'
    // In a cluster, commands follow redirections to the key's master and blocked clients are
    // counted on every node.
    const cluster = backend.name === 'cluster'
    const cli = (...args) => (cluster ? backend.nodes.cli(...args) : backend.server.cli(...args))
    const blockedNow = () =>
      !redisOnly ? Promise.resolve(0) : cluster ? backend.nodes.blockedClients() : blockedClients(backend.server)
    async function untilBlocked(before, more) {
      if (!redisOnly) return
      await waitUntil(async () => (await blockedNow()) >= before + more, {
        what: `${more} more blocked client(s) on the server`,
      })
    }

    describe('kv', () => {
      it('set, get, exists and remove, seen from the other adapter', () =>
        withStores(async ({ a, storeA, storeB, key }) => {
          const user = { name: 'Ada', tags: ['x', 'y'], n: 1.5 }
          assert.equal(await storeA.kv.get('user:1'), null)
          assert.equal(await storeA.kv.exists('user:1'), false)
          await storeA.kv.set('user:1', user)
          assert.deepEqual(await storeB.kv.get('user:1'), user)
          assert.equal(await storeB.kv.exists('user:1'), true)
          // Stored under the manager's key layout.
          assert.deepEqual(await a.get(key('kv', 'user:1')), user)
          await storeA.kv.set('user:1', 'replaced')
          assert.equal(await storeB.kv.get('user:1'), 'replaced')
          await storeB.kv.remove('user:1')
          assert.equal(await storeA.kv.get('user:1'), null)
          assert.equal(await storeA.kv.exists('user:1'), false)
          await storeB.kv.remove('user:1')
          assert.equal(await storeA.kv.exists('user:1'), false)
        }))

      it('a ttl on set, expire and touch make keys expire; touch can extend; others stay', () =>
        withStores(async ({ storeA, storeB, prefix, key }) => {
          await storeA.kv.set('extended', 'e', { ttl: 1 })
          await storeA.kv.touch('extended', 3600)
          await storeA.kv.set('short', 's', { ttl: 1 })
          await storeA.kv.set('expiring', 'x')
          await storeA.kv.set('touched', 't')
          await storeA.kv.set('kept', 'k')
          await storeA.kv.expire('expiring', 0.2)
          await storeA.kv.touch('touched', 0.2)
          assert.equal(await storeB.kv.get('short'), 's')
          if (redisOnly) {
            const pttl = Number(await cli('PTTL', prefix + key('kv', 'extended')))
            assert.ok(pttl > 1000 && pttl <= 3600_000, `PTTL ${pttl}`)
            assert.equal(await cli('PTTL', prefix + key('kv', 'kept')), '-1')
          }
          await waitUntil(
            async () =>
              !(await storeB.kv.exists('short')) && !(await storeB.kv.exists('expiring')) && !(await storeB.kv.exists('touched')),
            { what: 'short, expiring and touched to expire' },
          )
          assert.equal(await storeB.kv.get('short'), null)
          assert.equal(await storeB.kv.get('touched'), null)
          // Set with a one-second ttl before 'short', then touched to an hour: still there.
          assert.equal(await storeB.kv.get('extended'), 'e')
          assert.equal(await storeB.kv.get('kept'), 'k')
        }))
    })

    describe('counter', () => {
      it('increments and decrements, going below zero', () =>
        withStores(async ({ a, storeA, storeB, key }) => {
          assert.equal(await storeA.counter.increment('hits'), 1)
          assert.equal(await storeB.counter.increment('hits'), 2)
          assert.equal(await storeA.counter.increment('hits'), 3)
          assert.equal(await storeB.counter.decrement('hits'), 2)
          assert.equal(await a.get(key('counter', 'hits')), 2)

          assert.equal(await storeA.counter.decrement('balance'), -1)
          assert.equal(await storeB.counter.decrement('balance'), -2)
          assert.equal(await storeA.counter.increment('balance'), -1)
          assert.equal(await a.get(key('counter', 'balance')), -1)
        }))

      it('concurrent increments and decrements from two adapters all count', () =>
        withStores(async ({ a, storeA, storeB, key }) => {
          const calls = []
          for (let i = 0; i < 150; i++) {
            const store = i % 2 ? storeA : storeB
            calls.push(i % 3 === 0 ? store.counter.decrement('mixed') : store.counter.increment('mixed'))
          }
          const results = await Promise.all(calls)
          // 50 decrements, 100 increments.
          assert.equal(await a.get(key('counter', 'mixed')), 50)
          assert.ok(results.every(Number.isSafeInteger))
        }))

      it('counter.expire makes it start again from 0', () =>
        withStores(async ({ b, storeA, key }) => {
          assert.equal(await storeA.counter.increment('window'), 1)
          assert.equal(await storeA.counter.increment('window'), 2)
          await storeA.counter.expire('window', 0.1)
          await waitUntil(async () => (await b.has(key('counter', 'window'))) === false, { what: 'the counter to expire' })
          assert.equal(await storeA.counter.increment('window'), 1)
        }))
    })

    describe('claim', () => {
      it('claim.once from two adapters: exactly one wins, and the value is the winner', () =>
        withStores(async ({ a, storeA, storeB, key }) => {
          const results = await Promise.all([storeA.claim.once('job:1', 'worker-a'), storeB.claim.once('job:1', 'worker-b')])
          assert.equal(results.filter((won) => won === true).length, 1, `results ${results}`)
          assert.equal(results.filter((won) => won === false).length, 1, `results ${results}`)
          const winner = results[0] ? 'worker-a' : 'worker-b'
          assert.equal(await a.get(key('claim', 'job:1')), winner)
          assert.equal(await storeA.claim.once('job:1', 'late'), false)
          assert.equal(await storeB.claim.once('job:1', 'late'), false)
          assert.equal(await a.get(key('claim', 'job:1')), winner)

          const many = await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 ? storeA : storeB).claim.once('job:2', i)))
          assert.equal(many.filter((won) => won === true).length, 1)
          assert.equal(await a.get(key('claim', 'job:2')), many.indexOf(true))
        }))

      it('a claim with a ttl can be claimed again once it expired; one without stays', () =>
        withStores(async ({ a, storeA, storeB, prefix, key }) => {
          assert.equal(await storeA.claim.once('forever', 'x'), true)
          assert.equal(await storeA.claim.once('lease', 'first', { ttl: 1 }), true)
          assert.equal(await storeB.claim.once('lease', 'second', { ttl: 1 }), false)
          if (redisOnly) {
            const pttl = Number(await cli('PTTL', prefix + key('claim', 'lease')))
            assert.ok(pttl > 0 && pttl <= 1000, `PTTL ${pttl}`)
            assert.equal(await cli('PTTL', prefix + key('claim', 'forever')), '-1')
          }
          await waitUntil(() => storeB.claim.once('lease', 'third', { ttl: 60 }), { what: 'the lease to expire and be claimed again' })
          assert.equal(await a.get(key('claim', 'lease')), 'third')
          assert.equal(await storeA.claim.once('lease', 'fourth', { ttl: 60 }), false)
          // Set before the lease, without a ttl: still held.
          assert.equal(await storeB.claim.once('forever', 'y'), false)
          assert.equal(await a.get(key('claim', 'forever')), 'x')
        }))
    })

    describe('batch', () => {
      it('batch.set with ttl on only some entries; batch.get in key order with null for missing', () =>
        withStores(async ({ storeA, storeB, prefix, key }) => {
          await storeA.batch.set([
            { key: 'a', value: 1 },
            { key: 'b', value: { two: 2 }, ttl: 3600 },
            { key: 'c', value: 'three', ttl: 1 },
            { key: 'd', value: [4, null] },
          ])
          assert.deepEqual(await storeB.batch.get(['a', 'b', 'c', 'd', 'missing']), [1, { two: 2 }, 'three', [4, null], null])
          assert.deepEqual(await storeB.batch.get(['missing', 'd', 'also-missing', 'a', 'a']), [null, [4, null], null, 1, 1])
          assert.deepEqual(await storeB.batch.get([]), [])
          assert.deepEqual(await storeB.kv.get('b'), { two: 2 })
          if (redisOnly) {
            assert.equal(await cli('PTTL', prefix + key('kv', 'a')), '-1')
            assert.equal(await cli('PTTL', prefix + key('kv', 'd')), '-1')
            const pttl = Number(await cli('PTTL', prefix + key('kv', 'b')))
            assert.ok(pttl > 1000 && pttl <= 3600_000, `PTTL ${pttl}`)
            assert.equal(await cli('GET', prefix + key('kv', 'b')), '{"two":2}')
          }
          await waitUntil(async () => (await storeB.kv.exists('c')) === false, { what: 'c to expire' })
          assert.deepEqual(await storeB.batch.get(['a', 'b', 'c', 'd']), [1, { two: 2 }, null, [4, null]])
        }))

      it('a batch with a value that cannot be serialized writes none of its entries', () =>
        withStores(async ({ storeA, storeB }) => {
          await assert.rejects(
            storeA.batch.set([
              { key: 'x', value: 1 },
              { key: 'y', value: 10n },
            ]),
            code('ERR_STORE_SERIALIZE', TypeError),
          )
          assert.deepEqual(await storeB.batch.get(['x', 'y']), [null, null])
        }))
    })

    describe('events', () => {
      it('a typed event published on one adapter reaches a subscriber on the other', () =>
        withStores(async ({ storeA, storeB }) => {
          const first = deferred()
          const firstCalls = []
          const unsubscribe = await storeB.events.orders.placed.subscribe((ctx) => {
            firstCalls.push(ctx)
            first.resolve(ctx)
          })
          await storeA.events.orders.placed.publish({ orderId: 'o-1', total: 42 })
          const ctx = await first.promise
          assert.equal(ctx.type, 'orders:placed')
          assert.deepEqual(ctx.data, { orderId: 'o-1', total: 42 })
          assert.equal(typeof ctx.timestamp, 'string')
          assert.ok(!Number.isNaN(Date.parse(ctx.timestamp)))
          assert.equal(ctx.scope, undefined)

          // The string-based API, on another event.
          const cancelled = deferred()
          await storeB.events.subscribe('orders:cancelled', (c) => cancelled.resolve(c))
          await storeA.events.publish('orders:cancelled', { orderId: 'o-1' })
          const got = await cancelled.promise
          assert.equal(got.type, 'orders:cancelled')
          assert.deepEqual(got.data, { orderId: 'o-1' })

          // The schema is checked before anything is published.
          await assert.rejects(storeA.events.orders.placed.publish({ orderId: 7 }), (err) => {
            assert.equal(err.code, 'STORE_SCHEMA_VALIDATION_FAILED')
            return true
          })

          // After unsubscribe, the first handler hears nothing; a new one on the same event does.
          await unsubscribe()
          const probe = deferred()
          await storeB.events.orders.placed.subscribe((c) => probe.resolve(c))
          await storeA.events.orders.placed.publish({ orderId: 'o-2', total: 1 })
          assert.deepEqual((await probe.promise).data, { orderId: 'o-2', total: 1 })
          assert.equal(firstCalls.length, 1)
        }))
    })

    describe('streams', () => {
      it('append returns increasing ids; range reads both ways, with count and id bounds', () =>
        withStores(async ({ storeA, storeB }) => {
          const ids = []
          for (let i = 0; i < 6; i++) ids.push(await storeA.streams.append('audit', { i, text: `entry ${i}` }))
          assertIncreasingIds(ids)
          const forward = await storeB.streams.range('audit')
          assert.deepEqual(forward, ids.map((id, i) => ({ id, message: { i, text: `entry ${i}` } })))
          const backward = await storeB.streams.range('audit', { reverse: true })
          assert.deepEqual(backward, [...forward].reverse())
          assert.deepEqual(await storeB.streams.range('audit', { count: 2 }), forward.slice(0, 2))
          assert.deepEqual(await storeB.streams.range('audit', { count: 2, reverse: true }), [forward[5], forward[4]])
          // startId is the low end and endId the high end, whichever way it reads.
          assert.deepEqual(await storeB.streams.range('audit', { startId: ids[1], endId: ids[3] }), forward.slice(1, 4))
          assert.deepEqual(
            await storeB.streams.range('audit', { startId: ids[1], endId: ids[3], reverse: true }),
            forward.slice(1, 4).reverse(),
          )
          assert.deepEqual(await storeB.streams.range('audit', { startId: ids[4] }), forward.slice(4))
          assert.deepEqual(await storeB.streams.range('audit', { endId: ids[1], reverse: true }), [forward[1], forward[0]])
          // A bare millisecond id covers every entry of that millisecond.
          const ms = msOf(ids[2])
          const sameMs = forward.filter((entry) => msOf(entry.id) === ms)
          assert.deepEqual(await storeB.streams.range('audit', { startId: ms, endId: ms }), sameMs)
          assert.deepEqual(await storeB.streams.range('never-written'), [])
          assert.deepEqual(await storeB.streams.range('never-written', { reverse: true }), [])
        }))

      it('append with maxLen keeps only the newest maxLen entries', () =>
        withStores(async ({ storeA, storeB }) => {
          const ids = []
          for (let i = 0; i < 12; i++) ids.push(await storeA.streams.append('recent', { i }, { maxLen: 5 }))
          assertIncreasingIds(ids)
          const kept = await storeB.streams.range('recent')
          assert.ok(kept.length <= 5, `${kept.length} entries`)
          assert.deepEqual(kept, ids.slice(-5).map((id) => ({ id, message: { i: ids.indexOf(id) } })))
          assert.deepEqual(await storeB.streams.range('recent', { reverse: true }), [...kept].reverse())
          // Approximate trimming is accepted and keeps at least the newest entry.
          const last = await storeA.streams.append('recent', { i: 12 }, { maxLen: 5, approximate: true })
          assert.ok(compareIds(ids[11], last) < 0)
          const [newest] = await storeB.streams.range('recent', { reverse: true, count: 1 })
          assert.deepEqual(newest, { id: last, message: { i: 12 } })
        }))

      it('two consumers of one group never get the same entry, and together get all of them', () =>
        withStores(async ({ storeA, storeB, prefix, key }) => {
          const stream = 'jobs'
          const appended = []
          for (let i = 0; i < 12; i++) appended.push(await storeA.streams.append(stream, { job: i }))
          const one = storeA.streams.group('workers', 'consumer-1')
          const two = storeB.streams.group('workers', 'consumer-2')
          await one.ensure(stream)
          await two.ensure(stream) // a second ensure of the same group resolves
          await one.ensure(stream)

          // Taking turns: each read takes the next three new entries.
          const turns = []
          for (let turn = 0; ; turn++) {
            const batch = await (turn % 2 ? two : one).read(stream, { count: 3 })
            if (batch.length === 0) break
            turns.push(batch)
            assert.ok(turns.length < 100, 'reads never ran out')
          }
          assert.deepEqual(
            turns.map((batch) => batch.map((entry) => entry.id)),
            [appended.slice(0, 3), appended.slice(3, 6), appended.slice(6, 9), appended.slice(9, 12)],
          )
          for (const batch of turns) {
            for (const entry of batch) assert.deepEqual(entry.message, { job: appended.indexOf(entry.id) })
          }
          assert.deepEqual(await one.read(stream, { count: 3 }), [])

          if (redisOnly) {
            const pending = await cli('XPENDING', prefix + key('streams', stream), 'workers')
            assert.equal(pending.split('\n')[0], '12')
          }
          const idsOne = [...turns[0], ...turns[2]].map((entry) => entry.id)
          const idsTwo = [...turns[1], ...turns[3]].map((entry) => entry.id)
          await one.ack(stream, idsOne)
          await two.ack(stream, idsTwo)
          await two.ack(stream, [])
          if (redisOnly) {
            const pending = await cli('XPENDING', prefix + key('streams', stream), 'workers')
            assert.equal(pending.split('\n')[0], '0')
          }

          // At the same time: both drain a new batch concurrently.
          const more = []
          for (let i = 0; i < 40; i++) more.push(await storeA.streams.append(stream, { job: 12 + i }))
          const drain = async (group) => {
            const got = []
            for (;;) {
              const batch = await group.read(stream, { count: 3 })
              if (batch.length === 0) return got
              assert.ok(batch.length <= 3, `${batch.length} entries for count 3`)
              got.push(...batch.map((entry) => entry.id))
            }
          }
          const [gotOne, gotTwo] = await Promise.all([drain(one), drain(two)])
          assert.deepEqual(gotOne.filter((id) => gotTwo.includes(id)), [], 'no entry went to both consumers')
          assert.equal(new Set(gotOne).size, gotOne.length)
          assert.equal(new Set(gotTwo).size, gotTwo.length)
          assert.deepEqual([...gotOne, ...gotTwo].sort(compareIds), more)
          await one.ack(stream, gotOne)
          await two.ack(stream, gotTwo)
          if (redisOnly) {
            const pending = await cli('XPENDING', prefix + key('streams', stream), 'workers')
            assert.equal(pending.split('\n')[0], '0')
          }
        }))

      it("a group made at '$' sees only later entries; ack refuses a malformed id", () =>
        withStores(async ({ storeA, storeB }) => {
          await storeA.streams.append('late', { before: true })
          const late = storeB.streams.group('latecomers', 'c')
          await late.ensure('late', { startId: '$' })
          assert.deepEqual(await late.read('late'), [])
          const id = await storeA.streams.append('late', { before: false })
          assert.deepEqual(await late.read('late'), [{ id, message: { before: false } }])
          await late.ack('late', [id])
          await assert.rejects(late.ack('late', ['abc']), code('ERR_STORE_INVALID_ARGUMENT'))
          // A group on a stream that does not exist yet creates it.
          const fresh = storeA.streams.group('first', 'c')
          await fresh.ensure('fresh')
          const freshId = await storeB.streams.append('fresh', 'hello')
          assert.deepEqual(await fresh.read('fresh'), [{ id: freshId, message: 'hello' }])
        }))

      it('reading a group that does not exist is a NOGROUP error', () =>
        withStores(async ({ storeA, prefix, key }) => {
          await storeA.streams.append('orphan', 1)
          for (const stream of ['orphan', 'no-such-stream']) {
            await assert.rejects(storeA.streams.group('ghosts', 'c').read(stream), (err) => {
              code('ERR_STORE_REDIS')(err)
              assert.equal(
                err.message,
                `NOGROUP No such key '${prefix}${key('streams', stream)}' or consumer group 'ghosts' in XREADGROUP with GROUP option`,
              )
              return true
            })
          }
        }))

      it('a blocking read is woken by an append made after it started, and does not hold up other calls', () =>
        withStores(async ({ storeA, storeB }) => {
          const waiter = storeB.streams.group('waiters', 'w1')
          await waiter.ensure('wake', { startId: '$' })
          const blockedBefore = await blockedNow()
          const reading = waiter.read('wake', { blockMs: BLOCK_FOREVER_MS, count: 10 })
          await untilBlocked(blockedBefore, 1)
          // The adapter that is blocked still answers other calls meanwhile.
          await storeB.kv.set('during-block', 'answered')
          assert.equal(await storeB.kv.get('during-block'), 'answered')
          assert.equal(await storeB.counter.increment('during-block'), 1)
          const id = await storeA.streams.append('wake', { wake: 'up' })
          assert.deepEqual(await reading, [{ id, message: { wake: 'up' } }])
          // With nothing to read, a short block resolves empty.
          assert.deepEqual(await waiter.read('wake', { blockMs: 50 }), [])
        }))

      it('three blocked consumers of one group share three appends, one entry each', () =>
        withStores(async ({ storeA, storeB }) => {
          await storeA.streams.group('pool', 'x').ensure('tasks', { startId: '$' })
          const blockedBefore = await blockedNow()
          const reads = ['c1', 'c2', 'c3'].map((consumer, i) =>
            (i % 2 ? storeA : storeB).streams.group('pool', consumer).read('tasks', { blockMs: BLOCK_FOREVER_MS, count: 1 }),
          )
          await untilBlocked(blockedBefore, 3)
          const ids = []
          for (let i = 0; i < 3; i++) ids.push(await storeA.streams.append('tasks', { task: i }))
          const results = await Promise.all(reads)
          for (const result of results) assert.equal(result.length, 1)
          const got = results.map(([entry]) => entry)
          assert.deepEqual(got.map((entry) => entry.id).sort(compareIds), ids)
          for (const entry of got) assert.deepEqual(entry.message, { task: ids.indexOf(entry.id) })
        }))

      it('close ends a blocking read at once with ERR_STORE_CLOSED', () =>
        withStores(async ({ b, storeB }) => {
          const group = storeB.streams.group('closing', 'c')
          await group.ensure('never-fed', { startId: '$' })
          const blockedBefore = await blockedNow()
          const reading = group.read('never-fed', { blockMs: BLOCK_FOREVER_MS })
          await untilBlocked(blockedBefore, 1)
          const closed = b.close()
          await assert.rejects(reading, code('ERR_STORE_CLOSED'))
          await closed
          if (redisOnly) {
            await waitUntil(async () => (await blockedNow()) === blockedBefore, {
              what: 'the blocked client to leave the server',
            })
          }
        }))
    })

    describe('dev.scan', () => {
      it('pages through more keys than one page and hands out every key', () =>
        withStores(async ({ a, storeA, storeB, service, key }) => {
          const expected = []
          await Promise.all(
            Array.from({ length: 57 }, (_, i) => {
              expected.push(key('kv', `item:${i}`))
              return storeA.kv.set(`item:${i}`, i)
            }),
          )
          // Keys that must not match: another name, another namespace, another service.
          await storeA.kv.set('other:1', 'x')
          await storeA.counter.increment('item:counter')
          await buildStore(a, `${service}other`).kv.set('item:0', 'elsewhere')

          const all = await scanAll(storeB, 'item:*', 10)
          assert.deepEqual(all.keys, sorted(expected))
          assert.ok(all.pages > 1, `${all.pages} page(s) for 57 keys with count 10`)

          // Glob rules: ? and ranges.
          assert.deepEqual((await scanAll(storeB, 'item:?', 10)).keys, sorted(Array.from({ length: 10 }, (_, i) => key('kv', `item:${i}`))))
          assert.deepEqual(
            (await scanAll(storeB, 'item:[1-2]?', 7)).keys,
            sorted(Array.from({ length: 20 }, (_, i) => key('kv', `item:${10 + i}`))),
          )
          // Default options start a scan.
          const first = await storeB.dev.scan('item:*')
          assert.equal(typeof first.cursor, 'string')
          for (const found of first.keys) assert.ok(expected.includes(found), found)
        }))
    })

    describe('scopes', () => {
      it("two scopes never see each other's keys, counters, scans or events", () =>
        withStores(async ({ a, storeA, storeB, service }) => {
          const acme = storeA.scope('organization', 'acme')
          const acmeOnB = storeB.scope('organization', 'acme')
          const globex = storeB.scope('organization', 'globex')

          await acme.kv.set('settings', { theme: 'dark' })
          assert.deepEqual(await acmeOnB.kv.get('settings'), { theme: 'dark' })
          assert.equal(await globex.kv.get('settings'), null)
          assert.equal(await globex.kv.exists('settings'), false)
          assert.equal(await storeB.kv.get('settings'), null)
          assert.deepEqual(await a.get(`igniter:store:${service}:organization:acme:kv:settings`), { theme: 'dark' })

          await globex.kv.set('settings', { theme: 'light' })
          assert.deepEqual(await acmeOnB.kv.get('settings'), { theme: 'dark' })
          await globex.kv.remove('settings')
          assert.deepEqual(await acme.kv.get('settings'), { theme: 'dark' })

          // Nested scopes.
          await acme.scope('workspace', 'ws1').kv.set('settings', 'ws1 only')
          assert.equal(await acmeOnB.scope('workspace', 'ws1').kv.get('settings'), 'ws1 only')
          assert.equal(await globex.scope('workspace', 'ws1').kv.get('settings'), null)
          assert.deepEqual(await acmeOnB.kv.get('settings'), { theme: 'dark' })

          assert.equal(await acme.counter.increment('n'), 1)
          assert.equal(await globex.counter.increment('n'), 1)
          assert.equal(await acmeOnB.counter.increment('n'), 2)
          assert.equal(await globex.counter.decrement('n'), 0)

          await globex.kv.set('mine', 1)
          assert.deepEqual((await scanAll(globex, '*')).keys, [`igniter:store:${service}:organization:globex:kv:mine`])
          assert.deepEqual((await scanAll(acmeOnB, '*')).keys, [`igniter:store:${service}:organization:acme:kv:settings`])

          assert.throws(() => storeA.scope('team', 'x'), (err) => err.code === 'STORE_INVALID_SCOPE_KEY')

          // A scoped event reaches subscribers of that scope only, and says which scope.
          const heardByGlobex = []
          const globexProbe = deferred()
          await globex.events.orders.placed.subscribe((ctx) => {
            heardByGlobex.push(ctx)
            globexProbe.resolve(ctx)
          })
          const acmeHeard = deferred()
          await acmeOnB.events.orders.placed.subscribe((ctx) => acmeHeard.resolve(ctx))
          await acme.events.orders.placed.publish({ orderId: 'acme-1', total: 1 })
          const ctx = await acmeHeard.promise
          assert.deepEqual(ctx.data, { orderId: 'acme-1', total: 1 })
          assert.deepEqual(ctx.scope, { key: 'organization', identifier: 'acme' })
          await storeA.scope('organization', 'globex').events.orders.placed.publish({ orderId: 'globex-1', total: 2 })
          await globexProbe.promise
          assert.deepEqual(heardByGlobex.map((c) => c.data.orderId), ['globex-1'])
        }))
    })
  })
}

describe('interop with the official IgniterStoreRedisAdapter (ioredis)', () => {
  let server, kindling, redis, official
  before(async () => {
    server = await startRedis()
    kindling = createRedisStoreAdapter({ url: server.url })
    redis = new Redis(server.url)
    official = IgniterStoreRedisAdapter.create({ redis })
  })
  after(async () => {
    await kindling.close()
    await official.subscriberClient.quit()
    await redis.quit()
    await server.stop()
  })

  // A manager over each adapter, for the same service: the same keys.
  function stores() {
    const service = uniqueService()
    return {
      service,
      ours: buildStore(kindling, service),
      theirs: buildStore(official, service),
      key: (namespace, key) => managerKey(service, namespace, key),
    }
  }

  it('kv: what Kindling writes the official adapter reads, and the other way round', async () => {
    const { ours, theirs, key } = stores()
    await ours.kv.set('from-kindling', { a: [1, 'two'], b: null })
    assert.deepEqual(await theirs.kv.get('from-kindling'), { a: [1, 'two'], b: null })
    assert.equal(await redis.get(key('kv', 'from-kindling')), '{"a":[1,"two"],"b":null}')
    assert.equal(await theirs.kv.exists('from-kindling'), true)

    await theirs.kv.set('from-ioredis', { n: 2, s: 'ü' })
    assert.deepEqual(await ours.kv.get('from-ioredis'), { n: 2, s: 'ü' })
    assert.equal(await ours.kv.exists('from-ioredis'), true)
    await theirs.kv.set('string', 'plain')
    assert.equal(await ours.kv.get('string'), 'plain')
    await redis.set(key('kv', 'raw'), 'not json')
    assert.equal(await ours.kv.get('raw'), 'not json')

    await ours.kv.remove('from-ioredis')
    assert.equal(await theirs.kv.get('from-ioredis'), null)
    await theirs.kv.remove('from-kindling')
    assert.equal(await ours.kv.get('from-kindling'), null)

    // TTLs: Kindling's are seen by the server; the official adapter's are honoured.
    await ours.kv.set('ttl-kindling', 1, { ttl: 60 })
    const pttl = await redis.pttl(key('kv', 'ttl-kindling'))
    assert.ok(pttl > 0 && pttl <= 60_000, `PTTL ${pttl}`)
    await theirs.kv.set('ttl-ioredis', 2, { ttl: 60 })
    await ours.kv.touch('ttl-ioredis', 30)
    const touched = await redis.pttl(key('kv', 'ttl-ioredis'))
    assert.ok(touched > 0 && touched <= 30_000, `PTTL ${touched}`)
    assert.equal(await theirs.kv.get('ttl-ioredis'), 2)
  })

  it('counters: both count on one key, below zero too', async () => {
    const { ours, theirs, key } = stores()
    assert.equal(await ours.counter.increment('c'), 1)
    assert.equal(await ours.counter.increment('c'), 2)
    assert.equal(await theirs.counter.increment('c'), 3)
    for (let i = 0; i < 5; i++) await theirs.counter.decrement('c')
    assert.equal(await ours.counter.decrement('c'), -3)
    assert.equal(await redis.get(key('counter', 'c')), '-3')
    assert.equal(await theirs.counter.increment('c'), -2)
  })

  it('claims: a claim by either adapter holds against the other', async () => {
    const { ours, theirs, key } = stores()
    assert.equal(await ours.claim.once('k', 'kindling', { ttl: 60 }), true)
    assert.equal(await theirs.claim.once('k', 'ioredis'), false)
    const pttl = await redis.pttl(key('claim', 'k'))
    assert.ok(pttl > 0 && pttl <= 60_000, `PTTL ${pttl}`)
    assert.equal(await theirs.claim.once('o', 'ioredis'), true)
    assert.equal(await ours.claim.once('o', 'kindling', { ttl: 5 }), false)
    assert.equal(await redis.get(key('claim', 'k')), '"kindling"')
    assert.equal(await redis.get(key('claim', 'o')), '"ioredis"')
  })

  it('batches: Kindling mset read by the official mget, and the other way round', async () => {
    const { ours, theirs, key } = stores()
    await ours.batch.set([
      { key: 'k1', value: 1 },
      { key: 'k2', value: { two: 2 }, ttl: 60 },
      { key: 'k3', value: 'three' },
    ])
    assert.deepEqual(await theirs.batch.get(['k1', 'k2', 'k3', 'nope']), [1, { two: 2 }, 'three', null])
    assert.equal(await redis.pttl(key('kv', 'k1')), -1)
    const pttl = await redis.pttl(key('kv', 'k2'))
    assert.ok(pttl > 0 && pttl <= 60_000, `PTTL ${pttl}`)

    await theirs.batch.set([
      { key: 'o1', value: [1] },
      { key: 'o2', value: 'two', ttl: 60 },
    ])
    await redis.set(key('kv', 'o3'), 'raw text')
    assert.deepEqual(await ours.batch.get(['o1', 'nope', 'o2', 'o3', 'k2']), [[1], null, 'two', 'raw text', { two: 2 }])
  })

  it('events: each adapter hears what the other publishes', async () => {
    const { ours, theirs } = stores()
    const heardByOfficial = deferred()
    await theirs.events.orders.placed.subscribe((ctx) => heardByOfficial.resolve(ctx))
    await ours.events.orders.placed.publish({ orderId: 'k-1', total: 3 })
    const a = await heardByOfficial.promise
    assert.equal(a.type, 'orders:placed')
    assert.deepEqual(a.data, { orderId: 'k-1', total: 3 })

    const heardByKindling = deferred()
    await ours.events.orders.cancelled.subscribe((ctx) => heardByKindling.resolve(ctx))
    await theirs.events.orders.cancelled.publish({ orderId: 'o-1' })
    const b = await heardByKindling.promise
    assert.equal(b.type, 'orders:cancelled')
    assert.deepEqual(b.data, { orderId: 'o-1' })
  })

  it('streams: entries and ranges agree both ways; raw XADD fields come back as an object', async () => {
    const { ours, theirs, key } = stores()
    const ids = []
    for (let i = 0; i < 4; i++) ids.push(await ours.streams.append('s', { i }))
    ids.push(await theirs.streams.append('s', { i: 4 }))
    ids.push(await ours.streams.append('s', { i: 5 }, { maxLen: 5 }))
    assertIncreasingIds(ids)
    const expected = ids.slice(1).map((id) => ({ id, message: { i: ids.indexOf(id) } }))
    assert.deepEqual(await theirs.streams.range('s'), expected)
    assert.deepEqual(await ours.streams.range('s'), expected)
    assert.deepEqual(await theirs.streams.range('s', { reverse: true }), [...expected].reverse())
    assert.deepEqual(await ours.streams.range('s', { reverse: true }), [...expected].reverse())
    assert.deepEqual(await ours.streams.range('s', { startId: ids[2], endId: ids[4], reverse: true }), expected.slice(1, 4).reverse())
    // On the wire: one field, data, holding the JSON.
    assert.deepEqual(await redis.xrange(key('streams', 's'), ids[1], ids[1]), [[ids[1], ['data', '{"i":1}']]])

    const raw = await redis.xadd(key('streams', 'raw'), '*', 'a', '1', 'b', 'x')
    const notJson = await redis.xadd(key('streams', 'raw'), '*', 'data', 'not json')
    assert.deepEqual(await ours.streams.range('raw'), [
      { id: raw, message: { a: '1', b: 'x' } },
      { id: notJson, message: { data: 'not json' } },
    ])
  })

  it('consumer groups: a group made by one adapter is read and acked by the other', async () => {
    const { ours, theirs, key } = stores()
    await theirs.streams.group('g', 'official').ensure('q')
    await ours.streams.group('g', 'kindling').ensure('q') // exists already: resolves
    const ids = []
    for (let i = 0; i < 4; i++) ids.push(await theirs.streams.append('q', { i }))
    const mine = await ours.streams.group('g', 'kindling').read('q', { count: 2 })
    assert.deepEqual(mine, ids.slice(0, 2).map((id, i) => ({ id, message: { i } })))
    const theirsRead = await theirs.streams.group('g', 'official').read('q', { count: 10 })
    assert.deepEqual(theirsRead.map((entry) => entry.id), ids.slice(2))
    assert.equal((await redis.xpending(key('streams', 'q'), 'g'))[0], 4)
    await ours.streams.group('g', 'kindling').ack('q', mine.map((entry) => entry.id))
    assert.equal((await redis.xpending(key('streams', 'q'), 'g'))[0], 2)
    await theirs.streams.group('g', 'official').ack('q', ids.slice(2))
    assert.equal((await redis.xpending(key('streams', 'q'), 'g'))[0], 0)

    // A group made by Kindling, read by the official adapter.
    await ours.streams.group('g2', 'kindling').ensure('q2')
    const id = await ours.streams.append('q2', 'hello')
    assert.deepEqual(await theirs.streams.group('g2', 'official').read('q2'), [{ id, message: 'hello' }])

    // XREADGROUP on entries the official adapter wrote raw.
    const rawId = await redis.xadd(key('streams', 'q2'), '*', 'kind', 'raw')
    assert.deepEqual(await ours.streams.group('g2', 'kindling').read('q2'), [{ id: rawId, message: { kind: 'raw' } }])
  })

  it('a blocking Kindling read is woken by an append through the official adapter', async () => {
    const { ours, theirs } = stores()
    const group = ours.streams.group('wait', 'k')
    await group.ensure('w', { startId: '$' })
    const blockedBefore = await blockedClients(server)
    const reading = group.read('w', { blockMs: BLOCK_FOREVER_MS })
    await waitUntil(async () => (await blockedClients(server)) > blockedBefore, { what: 'the read to block on the server' })
    const id = await theirs.streams.append('w', { from: 'ioredis' })
    assert.deepEqual(await reading, [{ id, message: { from: 'ioredis' } }])
  })

  it('scan: each adapter finds every key the other wrote', async () => {
    const { ours, theirs, key } = stores()
    const fromOfficial = Array.from({ length: 23 }, (_, i) => `o:${i}`)
    const fromKindling = Array.from({ length: 23 }, (_, i) => `k:${i}`)
    for (const name of fromOfficial) await theirs.kv.set(name, name)
    for (const name of fromKindling) await ours.kv.set(name, name)
    assert.deepEqual((await scanAll(ours, 'o:*', 5)).keys, sorted(fromOfficial.map((name) => key('kv', name))))
    assert.deepEqual((await scanAll(theirs, 'k:*', 5)).keys, sorted(fromKindling.map((name) => key('kv', name))))
  })
})
