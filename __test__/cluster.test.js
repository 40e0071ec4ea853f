'use strict'

// Redis Cluster: real clusters of three masters with a replica each, made by the helper on
// loopback. Keys go to their slot's master with no redirection, hash tags and the keyPrefix
// are honoured, and calls ride through resharding and a failover.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { execFile } = require('node:child_process')
const { promisify } = require('node:util')
const { performance } = require('node:perf_hooks')
const { startCluster, keySlot } = require('./helpers/cluster.js')
const { startProxy } = require('./helpers/fault-proxy.js')
const { waitUntil } = require('./helpers/wait.js')
const { hasCode } = require('./helpers/expect.js')
const Redis = require('ioredis')
const { createRedisStoreAdapter } = require('../index.js')

const run = promisify(execFile)
// A failover fits inside these (cluster-node-timeout is 2000 ms).
const COMMAND_TIMEOUT = 8000
const CONNECT_TIMEOUT = 8000

let prefixes = 0
function open(cluster, options = {}) {
  return createRedisStoreAdapter({
    cluster: { nodes: cluster.seeds.slice(0, 1) },
    keyPrefix: `c${++prefixes}:`,
    commandTimeout: COMMAND_TIMEOUT,
    connectTimeout: CONNECT_TIMEOUT,
    onError: () => {},
    ...options,
  })
}

async function movedCounts(cluster) {
  const counts = []
  for (const node of cluster.nodes) {
    const stats = await node.cli('INFO', 'errorstats')
    counts.push(Number(/errorstat_MOVED:count=(\d+)/.exec(stats)?.[1] ?? 0))
  }
  return counts
}

// Chains of awaited calls on keys of their own, each counting what was acknowledged; a get
// follows only an acknowledged set and must return it.
function startLoad(store, chains) {
  let stopped = false
  const state = Array.from({ length: chains }, (_, i) => ({ key: `load:${i}`, counter: `count:${i}`, acked: 0, failures: [], wrong: [], rounds: 0 }))
  const loops = state.map(async (chain) => {
    for (let n = 1; !stopped; n++) {
      try {
        await store.set(chain.key, n)
        const got = await store.get(chain.key)
        if (got !== n) chain.wrong.push({ expected: n, got })
        await store.increment(chain.counter)
        chain.acked++
        chain.rounds++
      } catch (err) {
        chain.failures.push({ at: performance.now(), code: err.code, message: err.message })
      }
    }
  })
  return {
    state,
    rounds: () => state.reduce((sum, chain) => sum + chain.rounds, 0),
    async stop() {
      stopped = true
      await Promise.all(loops)
    },
  }
}

describe('a cluster at rest', () => {
  let cluster
  before(async () => {
    cluster = await startCluster()
  })
  after(async () => {
    await cluster.stop()
  })

  it('sends every key to its slot\'s master: 10,000 keys set and read, no MOVED', async () => {
    const store = open(cluster)
    try {
      await store.set('warm', 1)
      const before = await movedCounts(cluster)
      for (let start = 0; start < 10000; start += 1000) {
        await Promise.all(Array.from({ length: 1000 }, (_, i) => store.set(`key:${start + i}`, start + i)))
      }
      for (let start = 0; start < 10000; start += 1000) {
        const values = await Promise.all(Array.from({ length: 1000 }, (_, i) => store.get(`key:${start + i}`)))
        assert.deepEqual(values, Array.from({ length: 1000 }, (_, i) => start + i))
      }
      assert.deepEqual(await movedCounts(cluster), before, 'MOVED replies per node')
      // Spread over every master.
      for (const master of await cluster.masters()) assert.ok(Number(await master.cli('DBSIZE')) > 2000, `keys on ${master.port}`)
    } finally {
      await store.close()
    }
  })

  it('honours hash tags with the keyPrefix on: {user1}:a and {user1}:b share a slot', async () => {
    const store = open(cluster, { keyPrefix: 'app:' })
    try {
      await store.set('{user1}:a', 'A')
      await store.set('{user1}:b', 'B')
      const owner = await cluster.slotOwner(keySlot('user1'))
      assert.equal(await owner.cli('GET', 'app:{user1}:a'), '"A"')
      assert.equal(await owner.cli('GET', 'app:{user1}:b'), '"B"')
      assert.equal(keySlot('app:{user1}:a'), keySlot('app:{user1}:b'))
    } finally {
      await store.close()
    }
  })

  it('says once, through onError, that a keyPrefix with a hash tag puts every key on one master', async () => {
    const warnings = []
    const store = open(cluster, { keyPrefix: '{tenant}:', onError: (err) => warnings.push(err) })
    try {
      await store.set('a', 1)
      await store.set('b', 2)
      assert.equal(warnings.length, 1)
      hasCode('ERR_STORE_INVALID_ARGUMENT')(warnings[0])
      assert.match(warnings[0].message, /hash tag/)
      const owner = await cluster.slotOwner(keySlot('tenant'))
      assert.equal(await owner.cli('GET', '{tenant}:b'), '2')
    } finally {
      await store.close()
    }
    // Without a tag in the prefix, nothing is said.
    const quiet = []
    const plain = open(cluster, { keyPrefix: 'tenant:', onError: (err) => quiet.push(err) })
    await plain.set('a', 1)
    await plain.close()
    assert.deepEqual(quiet, [])
  })

  it('delivers Pub/Sub across the cluster, published through any master', async () => {
    const subscriber = open(cluster, { keyPrefix: 'ps:' })
    const publisher = open(cluster, { keyPrefix: 'ps:' })
    try {
      const got = []
      let done
      const all = new Promise((resolve) => (done = resolve))
      await subscriber.subscribe('news', (message) => {
        got.push(message)
        if (got.length === 20) done()
      })
      for (let i = 0; i < 20; i++) await publisher.publish('news', i)
      await all
      assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i))
    } finally {
      await Promise.all([subscriber.close(), publisher.close()])
    }
  })

  it('takes an ioredis Cluster instance: its startup nodes, keyPrefix and redisOptions; client is that instance', async () => {
    const [first, second] = cluster.nodes
    const ioredis = new Redis.Cluster([{ host: '127.0.0.1', port: first.port }, `127.0.0.1:${second.port}`], { lazyConnect: true, keyPrefix: 'io:' })
    const store = createRedisStoreAdapter(ioredis)
    try {
      assert.equal(store.client, ioredis)
      await store.set('from-ioredis', { ok: true })
      assert.deepEqual(await store.get('from-ioredis'), { ok: true })
      const owner = await cluster.slotOwner(keySlot('io:from-ioredis'))
      assert.equal(await owner.cli('GET', 'io:from-ioredis'), '{"ok":true}')
    } finally {
      await store.close()
      ioredis.disconnect()
    }
  })

  it('reaches every node where natMap says, for commands, blocking reads and Pub/Sub; an ioredis Cluster\'s natMap too', async () => {
    // A proxy in front of each node stands for the address this process must use; the nodes
    // announce their own. What each proxy carried shows the translation was used.
    const proxies = new Map()
    for (const node of cluster.nodes) proxies.set(node.port, await startProxy(node.port))
    const natMap = Object.fromEntries([...proxies].map(([port, proxy]) => [`127.0.0.1:${port}`, { host: '127.0.0.1', port: proxy.port }]))
    const seed = `127.0.0.1:${proxies.get(cluster.nodes[0].port).port}`
    const ioredis = new Redis.Cluster([seed], { lazyConnect: true, natMap, keyPrefix: 'natio:' })
    const stores = [open(cluster, { cluster: { nodes: [seed], natMap }, keyPrefix: 'nat:' }), createRedisStoreAdapter(ioredis)]
    const carried = (master) => {
      const proxy = proxies.get(master.port)
      return Array.from({ length: proxy.accepted }, (_, i) => proxy.sent(i)).join('')
    }
    try {
      for (const [store, prefix] of [[stores[0], 'nat:'], [stores[1], 'natio:']]) {
        const keys = Array.from({ length: 30 }, (_, i) => `k${i}`)
        await Promise.all(keys.map((key) => store.set(key, key)))
        assert.deepEqual(await Promise.all(keys.map((key) => store.get(key))), keys)
        for (const key of keys) {
          const owner = await cluster.slotOwner(keySlot(prefix + key))
          assert.ok(carried(owner).includes(prefix + key), `${prefix + key} went through the proxy of ${owner.port}`)
        }
      }
      const [store] = stores
      await store.xgroupCreate('nat-stream', 'g', '$')
      const read = store.xreadgroup('nat-stream', 'g', 'c', { blockMs: 60000 })
      const owner = await cluster.slotOwner(keySlot('nat:nat-stream'))
      await waitUntil(() => (carried(owner).match(/XREADGROUP/g) ?? []).length === 1, { what: 'the blocking read to go through the proxy' })
      const id = await store.xadd('nat-stream', { via: 'natMap' })
      assert.deepEqual(await read, [{ id, message: { via: 'natMap' } }])
      let heard
      const message = new Promise((resolve) => (heard = resolve))
      await store.subscribe('nat-news', heard)
      await store.publish('nat-news', 'hello')
      assert.equal(await message, 'hello')
      assert.ok([...cluster.nodes].some((node) => carried(node).includes('SUBSCRIBE')), 'the subscriber went through a proxy')
    } finally {
      await Promise.all(stores.map((store) => store.close()))
      ioredis.disconnect()
      await Promise.all([...proxies.values()].map((proxy) => proxy.close()))
    }
  })

  it('takes natMap as a function, called for each connection to a node; what it throws fails that connection', async () => {
    const proxies = new Map()
    for (const node of cluster.nodes) proxies.set(node.port, await startProxy(node.port))
    const asked = []
    const natMap = (announced) => {
      asked.push(announced)
      const [host, port] = announced.split(':')
      return { host, port: proxies.get(Number(port)).port }
    }
    const seed = `127.0.0.1:${proxies.get(cluster.nodes[0].port).port}`
    const store = open(cluster, { cluster: { nodes: [seed], natMap }, keyPrefix: 'natfn:' })
    const failing = open(cluster, { cluster: { nodes: [seed], natMap: () => { throw new Error('no route to that node') } }, keyPrefix: 'natfn:', connectTimeout: 1000 })
    const misshapen = open(cluster, { cluster: { nodes: [seed], natMap: () => 'elsewhere' }, keyPrefix: 'natfn:', connectTimeout: 1000 })
    try {
      const keys = Array.from({ length: 20 }, (_, i) => `k${i}`)
      await Promise.all(keys.map((key) => store.set(key, key)))
      assert.deepEqual(await Promise.all(keys.map((key) => store.get(key))), keys)
      const masters = await cluster.masters()
      for (const master of masters) assert.ok(asked.includes(`127.0.0.1:${master.port}`), `asked for ${master.port}`)
      for (const master of masters) assert.ok(proxies.get(master.port).accepted > 0, `${master.port} reached through its proxy`)
      for (const [store, words] of [[failing, /natMap failed: .*no route to that node/], [misshapen, /natMap failed: .*expected \{ host, port \}/]]) {
        const err = await store.get('k0').catch((err) => err)
        assert.equal(err.code, 'ERR_STORE_CONNECTION')
        assert.match(err.message, words)
      }
    } finally {
      await Promise.all([store.close(), failing.close(), misshapen.close()])
      await Promise.all([...proxies.values()].map((proxy) => proxy.close()))
    }
  })

  it('mset splits its entries by slot, in entry order within each, with and without TTLs', async () => {
    const store = open(cluster, { keyPrefix: 'ms:' })
    try {
      const entries = Array.from({ length: 100 }, (_, i) => ({ key: `k${i % 60}`, value: i, ...(i % 3 === 0 ? { ttl: 60 } : {}) }))
      await store.mset(entries)
      // The last entry for each key wins, as with one MSET.
      for (let k = 0; k < 60; k++) {
        const last = entries.filter((e) => e.key === `k${k}`).at(-1)
        assert.equal(await store.get(`k${k}`), last.value, `k${k}`)
        const owner = await cluster.slotOwner(keySlot(`ms:k${k}`))
        const ttl = Number(await owner.cli('PTTL', `ms:k${k}`))
        if (last.ttl) assert.ok(ttl > 0 && ttl <= 60000, `k${k} has its TTL (${ttl})`)
        else assert.equal(ttl, -1, `k${k} has no TTL`)
      }
    } finally {
      await store.close()
    }
  })

  it('mget splits its keys by slot and gives the values back in key order', async () => {
    const store = open(cluster, { keyPrefix: 'mg:' })
    try {
      const keys = Array.from({ length: 200 }, (_, i) => `k${i}`)
      await Promise.all(keys.filter((_, i) => i % 4 !== 0).map((key, i) => store.set(key, { key, i })))
      // Written by another client: not JSON, so it comes back as the string it is.
      const plain = await cluster.slotOwner(keySlot('mg:k8'))
      await plain.cli('SET', 'mg:k8', 'not json')
      const values = await store.mget([...keys, 'k1', '{tag}x', '{tag}y'])
      const expected = await Promise.all([...keys, 'k1', '{tag}x', '{tag}y'].map((key) => store.get(key)))
      assert.equal(values.length, 203)
      assert.deepEqual(values, expected)
      assert.equal(values[0], null)
      assert.equal(values[8], 'not json')
      assert.deepEqual(values[200], values[1])
    } finally {
      await store.close()
    }
  })

  it('scan walks every master, its cursor naming the node, and finds every key once per page set', async () => {
    const store = open(cluster, { keyPrefix: 'sc:' })
    try {
      const keys = Array.from({ length: 300 }, (_, i) => `k${i}`)
      await Promise.all(keys.map((key) => store.set(key, 1)))
      await store.set('other', 1)
      const found = new Set()
      const cursors = []
      let cursor = '0'
      do {
        const page = await store.scan('k*', { cursor, count: 10 })
        for (const key of page.keys) found.add(key)
        cursor = page.cursor
        cursors.push(cursor)
      } while (cursor !== '0' && cursors.length < 50000) // the other tests' 10,000 keys make many empty pages
      assert.deepEqual([...found].sort(), [...keys].sort())
      // Every master was visited: its id shows in a cursor.
      const ids = new Set(cursors.filter((c) => c !== '0').map((c) => c.split(':')[0]))
      assert.equal(ids.size, 3)
      for (const master of await cluster.masters()) assert.ok(ids.has(await cluster.nodeId(master)), `master ${master.port} scanned`)
      await assert.rejects(store.scan('k*', { cursor: 'nonsense' }), hasCode('ERR_STORE_INVALID_ARGUMENT'))
      await assert.rejects(store.scan('k*', { cursor: `${'f'.repeat(40)}:0` }), hasCode('ERR_STORE_INVALID_ARGUMENT'))
    } finally {
      await store.close()
    }
  })

  it('sends each blocking read to its stream\'s master, and follows a stream whose slot moved', async () => {
    const prefix = 'blocking:'
    const store = open(cluster, { keyPrefix: prefix })
    try {
      // One stream on each master.
      const streams = new Map()
      for (let i = 0; streams.size < 3; i++) {
        const owner = await cluster.slotOwner(keySlot(`${prefix}s${i}`))
        if (![...streams.values()].includes(owner)) streams.set(`s${i}`, owner)
      }
      for (const stream of streams.keys()) await store.xgroupCreate(stream, 'g', '$')
      const reads = [...streams.keys()].map((stream) => store.xreadgroup(stream, 'g', 'c', { blockMs: 60000 }))
      await waitUntil(async () => (await Promise.all([...streams.values()].map(cluster.blockedOn))).every((n) => n === 1), {
        what: 'one read blocked on each master',
      })
      const ids = await Promise.all([...streams.keys()].map((stream) => store.xadd(stream, { stream })))
      assert.deepEqual(await Promise.all(reads), [...streams.keys()].map((stream, i) => [{ id: ids[i], message: { stream } }]))

      // The first stream's slot moves to the second's master, as a resharding would move it:
      // the pool's map still names the old master, which answers MOVED.
      const [[stream, from], [, to]] = streams
      const slot = keySlot(prefix + stream)
      await cluster.moveSlot(slot, from, to, [prefix + stream])
      const movedBefore = await cluster.blockedOn(to)
      const read = store.xreadgroup(stream, 'g', 'c', { blockMs: 60000 })
      await waitUntil(async () => (await cluster.blockedOn(to)) === movedBefore + 1, { what: 'the read to block on the slot\'s new master' })
      const id2 = await store.xadd(stream, { moved: true })
      assert.deepEqual(await read, [{ id: id2, message: { moved: true } }])
    } finally {
      await store.close()
    }
  })

  it('says why a call could not be served, the same for commands, subscriptions and blocking reads', async () => {
    // A server that takes no password, given one: every kind of connection fails as a login.
    const refused = open(cluster, { password: 'not-configured', connectTimeout: 2000 })
    // No node reachable at all.
    const unreachable = open(cluster, { cluster: { nodes: ['127.0.0.1:1'] }, connectTimeout: 500 })
    try {
      const errors = await Promise.all([
        refused.get('k').catch((err) => err),
        refused.subscribe('ch', () => {}).catch((err) => err),
      ])
      assert.ok(errors.every((err) => err instanceof Error), 'both fail')
      assert.deepEqual(errors.map((err) => err.code), [errors[0].code, errors[0].code])
      assert.match(errors[1].message, /AUTH/)
      const read = await unreachable.xreadgroup('s', 'g', 'c', { blockMs: 100 }).catch((err) => err)
      assert.equal(read.code, 'ERR_STORE_CONNECTION')
      assert.doesNotMatch(read.message, /maxBlockingConnections/)
      assert.match(read.message, /slot map/)
    } finally {
      await Promise.all([refused.close(), unreachable.close()])
    }
  })

  it('sharded Pub/Sub: each shard channel on its slot\'s master, following its slot when it moves', async () => {
    const options = { keyPrefix: 'shard:', cluster: { nodes: cluster.seeds.slice(0, 1), pubsub: 'sharded' } }
    const subscriber = open(cluster, options)
    const publisher = open(cluster, options)
    const channels = Array.from({ length: 12 }, (_, i) => `news${i}`)
    const received = new Map(channels.map((channel) => [channel, []]))
    const numsub = async (node, channel) => Number((await node.cli('PUBSUB', 'SHARDNUMSUB', `shard:${channel}`)).split('\n')[1])
    try {
      await Promise.all(channels.map((channel) => subscriber.subscribe(channel, (n) => received.get(channel).push(n))))
      for (const channel of channels) {
        const owner = await cluster.slotOwner(keySlot(`shard:${channel}`))
        for (const master of await cluster.masters()) assert.equal(await numsub(master, channel), master === owner ? 1 : 0, `${channel} on ${master.port}`)
      }
      await Promise.all(channels.map((channel) => publisher.publish(channel, 1)))
      await waitUntil(() => channels.every((channel) => received.get(channel).length === 1), { what: 'every shard channel delivering' })

      // The first channel's slot moves to another master: the old one pushes sunsubscribe.
      const [moving] = channels
      const slot = keySlot(`shard:${moving}`)
      const from = await cluster.slotOwner(slot)
      const to = (await cluster.masters()).find((master) => master !== from)
      await cluster.moveSlot(slot, from, to)
      await waitUntil(async () => (await numsub(to, moving)) === 1, { what: 'the shard channel subscribed at its slot\'s new master' })
      assert.equal(await numsub(from, moving), 0)
      for (let n = 2; n <= 5; n++) await publisher.publish(moving, n)
      await waitUntil(() => received.get(moving).length === 5, { what: 'the moved channel delivering' })
      assert.deepEqual(received.get(moving), [1, 2, 3, 4, 5])
      await subscriber.unsubscribe(moving)
      assert.equal(await numsub(to, moving), 0)
    } finally {
      await Promise.all([subscriber.close(), publisher.close()])
    }
  })

  it('sharded Pub/Sub: a channel unsubscribed while its subscribe is redirected is held nowhere, and its neighbours are untouched', async () => {
    const errors = []
    const options = { keyPrefix: 'race:', cluster: { nodes: cluster.seeds.slice(0, 1), pubsub: 'sharded' }, onError: (err) => errors.push(err) }
    const store = open(cluster, options)
    const numsub = async (node, channel) => Number((await node.cli('PUBSUB', 'SHARDNUMSUB', `race:${channel}`)).split('\n')[1])
    try {
      // `stays` and `moves` on one master, in different slots.
      const owner = await cluster.slotOwner(keySlot('race:stays'))
      let moves
      for (let i = 0; !moves; i++) {
        const slot = keySlot(`race:m${i}`)
        if (slot !== keySlot('race:stays') && (await cluster.slotOwner(slot)) === owner) moves = `m${i}`
      }
      const heard = []
      await store.subscribe('stays', (message) => heard.push(message))
      // The slot of `moves` goes elsewhere; the adapter's map does not know yet.
      const slot = keySlot(`race:${moves}`)
      const to = (await cluster.masters()).find((node) => node !== owner)
      await cluster.moveSlot(slot, owner, to)
      // Subscribed (sent to the old master, redirected) and unsubscribed at once.
      await Promise.all([store.subscribe(moves, () => {}), store.unsubscribe(moves)])
      for (const master of await cluster.masters()) assert.equal(await numsub(master, moves), 0, `${moves} held on ${master.port}`)
      assert.equal(await numsub(owner, 'stays'), 1)
      await store.publish('stays', 'still here')
      await waitUntil(() => heard.length === 1, { what: 'the neighbour delivering' })
      assert.deepEqual(errors, [])
    } finally {
      await store.close()
    }
  })

  it('a slow natMap function does not starve the JS thread: calls settle within their deadline', async () => {
    let calls = 0
    const natMap = () => {
      calls++
      const until = Date.now() + 1500
      while (Date.now() < until) {} // as a synchronous lookup that hangs would
      return null // the address as announced
    }
    const store = open(cluster, { cluster: { nodes: cluster.seeds.slice(0, 1), natMap }, connectTimeout: 600, commandTimeout: 600 })
    try {
      const err = await store.get('k').then(() => null, (err) => err)
      // It may succeed once an answer is in; either way it settled, and natMap was not asked
      // back to back for every attempt given up.
      if (err) assert.equal(err.code, 'ERR_STORE_CONNECTION')
      assert.ok(calls <= 8, `natMap called ${calls} times`)
    } finally {
      await store.close()
    }
  })

  it('a blocking read sent again after its stream\'s slot moved blocks only for what is left of blockMs', async () => {
    const prefix = 'left:'
    const store = open(cluster, { keyPrefix: prefix })
    try {
      await store.xgroupCreate('s', 'g', '$')
      const slot = keySlot(`${prefix}s`)
      const from = await cluster.slotOwner(slot)
      const to = (await cluster.masters()).find((node) => node !== from)
      const blockMs = 3000
      const began = performance.now()
      const read = store.xreadgroup('s', 'g', 'c', { blockMs })
      await waitUntil(async () => (await cluster.blockedOn(from)) === 1, { what: 'the read blocked' })
      // Two thirds of its block time pass (the scenario, not a wait for an event); then the key
      // migrates: the server lets the read go (UNBLOCKED) and it waits again at `to`.
      await new Promise((resolve) => setTimeout(resolve, (blockMs * 2) / 3))
      await cluster.moveSlot(slot, from, to, [`${prefix}s`])
      assert.deepEqual(await read, [])
      // Sent again with its whole blockMs, it would have ended after about twice blockMs.
      const took = performance.now() - began
      assert.ok(took < blockMs * 1.5, `ended ${Math.round(took)} ms after it began`)
    } finally {
      await store.close()
    }
  })
})

describe('a cluster that changes under load', () => {
  let cluster
  before(async () => {
    cluster = await startCluster()
  })
  after(async () => {
    await cluster.stop()
  })

  // 16 workers, each a chain of set/get/increment, through `change`: no call fails, every get
  // returns the last set, every counter equals the increments acknowledged.
  async function throughChange(what, change) {
    const store = open(cluster)
    const load = startLoad(store, 16)
    try {
      await waitUntil(() => load.rounds() > 200, { what: 'the load running' })
      await change()
      const rounds = load.rounds()
      await waitUntil(() => load.rounds() > rounds + 200, { what: `rounds after ${what}` })
    } finally {
      await load.stop()
    }
    try {
      for (const chain of load.state) {
        assert.deepEqual(chain.failures, [], `failures of ${chain.key}`)
        assert.deepEqual(chain.wrong, [], `wrong gets of ${chain.key}`)
        assert.equal(await store.get(chain.counter), chain.acked, `${chain.counter}`)
      }
    } finally {
      await store.close()
    }
  }

  it('resharding 3,000 slots under 16 workers: no call fails, every get returns the last set, counters exact', (t) =>
    throughChange('the resharding', async () => {
      const [from, to] = await cluster.masters()
      const began = performance.now()
      await run('redis-cli', ['--cluster', 'reshard', `127.0.0.1:${from.port}`, '--cluster-from', await cluster.nodeId(from), '--cluster-to', await cluster.nodeId(to),
        '--cluster-slots', '3000', '--cluster-yes'], { maxBuffer: 64 * 1024 * 1024 })
      t.diagnostic(`resharded in ${Math.round(performance.now() - began)} ms`)
    }))

  it('CLUSTER FAILOVER on a replica: no call fails', (t) =>
    throughChange('the failover', async () => {
      const [replica] = await cluster.replicas()
      const began = performance.now()
      assert.equal(await replica.cli('CLUSTER', 'FAILOVER'), 'OK')
      await waitUntil(async () => (await cluster.masters()).includes(replica), { what: 'the replica promoted', timeoutMs: 15000 })
      t.diagnostic(`promoted in ${Math.round(performance.now() - began)} ms`)
    }))

  it('a waiting blocking read follows its stream through a CLUSTER FAILOVER and a slot migration', async () => {
    await cluster.waitHealthy({ timeoutMs: 20000 })
    const prefix = 'follow:'
    const store = open(cluster, { keyPrefix: prefix })
    try {
      await store.xgroupCreate('s', 'g', '$')
      const slot = keySlot(`${prefix}s`)
      // The read waits on the stream's master; its replica takes over gracefully, and the old
      // master lets the read go (UNBLOCKED) without an entry: it waits again on the new one.
      const master = await cluster.slotOwner(slot)
      const read = store.xreadgroup('s', 'g', 'c', { blockMs: 60000 })
      await waitUntil(async () => (await cluster.blockedOn(master)) === 1, { what: 'the read blocked on the master' })
      const replicas = await Promise.all((await cluster.replicas()).map(async (node) => [node, await node.cli('INFO', 'replication')]))
      const [replica] = replicas.find(([, info]) => new RegExp(`master_port:${master.port}\\b`).test(info))
      // A manual failover just after another can stall; asked again, it goes through.
      for (let attempt = 1; !(await cluster.masters()).includes(replica); attempt++) {
        assert.ok(attempt <= 5, 'the replica promoted within five CLUSTER FAILOVERs')
        assert.equal(await replica.cli('CLUSTER', 'FAILOVER'), 'OK')
        await waitUntil(async () => (await cluster.masters()).includes(replica), { what: 'the promotion', timeoutMs: 5000 }).catch(() => {})
      }
      await waitUntil(async () => (await cluster.blockedOn(replica)) === 1, { what: 'the read blocked on the promoted replica', timeoutMs: 15000 })
      const first = await store.xadd('s', { n: 1 })
      assert.deepEqual(await read, [{ id: first, message: { n: 1 } }])

      // The stream's slot migrates while a read waits: the key leaves the node (UNBLOCKED),
      // and the read waits again where the slot went.
      // Every node agrees on the roles again before one is chosen to take the slot.
      await cluster.waitHealthy({ timeoutMs: 20000 })
      const from = replica
      const to = (await cluster.masters()).find((node) => node !== from)
      const again = store.xreadgroup('s', 'g', 'c', { blockMs: 60000 })
      await waitUntil(async () => (await cluster.blockedOn(from)) === 1, { what: 'the read blocked before the migration' })
      await cluster.moveSlot(slot, from, to, [`${prefix}s`])
      await waitUntil(async () => (await cluster.blockedOn(to)) === 1, { what: 'the read blocked where the slot went' })
      const second = await store.xadd('s', { n: 2 })
      assert.deepEqual(await again, [{ id: second, message: { n: 2 } }])
    } finally {
      await store.close()
    }
  })
})

describe('a master lost under load', () => {
  let cluster
  before(async () => {
    cluster = await startCluster()
  })
  after(async () => {
    await cluster.stop()
  })

  // Keys on the master about to go (or, `on: false`, on others), found before it goes.
  async function keysOn(master, count, on = true) {
    const keys = []
    for (let i = 0; keys.length < count; i++) {
      if (((await cluster.slotOwner(keySlot(`lost:${i}`))) === master) === on) keys.push(`lost:${i}`)
    }
    return keys
  }
  // Every node as a seed: the one lost in the first test among them.
  const openAll = () => open(cluster, { keyPrefix: '', cluster: { nodes: cluster.seeds } })

  it('SIGKILL: only calls in flight on it fail, the rest wait for the replica and succeed', async (t) => {
    const store = openAll()
    const [victim] = await cluster.masters()
    const keys = await keysOn(victim, 4)
    const elsewhere = await keysOn(victim, 2, false)
    // Chains on the victim's keys and on others'.
    let stopped = false
    let killedAt = Infinity
    const failures = []
    const successes = []
    const chain = async (key) => {
      let acked = 0
      let failed = 0
      for (let n = 1; !stopped; n++) {
        const issued = performance.now()
        try {
          await store.increment(key)
          acked++
          successes.push({ key, issued, settled: performance.now() })
        } catch (err) {
          failed++
          failures.push({ key, issued: issued - killedAt, code: err.code })
        }
      }
      return { key, acked, failed }
    }
    const chains = [...keys, ...elsewhere].map(chain)
    try {
      await waitUntil(() => successes.length > 200, { what: 'the load running' })
      killedAt = performance.now()
      process.kill(victim.process.pid, 'SIGKILL')
      await waitUntil(() => successes.some((s) => keys.includes(s.key) && s.issued > killedAt), { what: 'a call on the lost slots succeeding', timeoutMs: 15000 })
      const window = Math.min(...successes.filter((s) => keys.includes(s.key) && s.issued > killedAt).map((s) => s.settled)) - killedAt
      t.diagnostic(`the first call on the lost master's slots issued after the kill succeeded ${Math.round(window)} ms after it`)
      const count = successes.length
      await waitUntil(() => successes.length > count + 200, { what: 'the load after the failover' })
    } finally {
      stopped = true
    }
    const ended = await Promise.all(chains)
    try {
      for (const failure of failures) {
        assert.ok(['ERR_STORE_CONNECTION', 'ERR_STORE_TIMEOUT'].includes(failure.code), `${failure.key}: ${failure.code}`)
        assert.ok(keys.includes(failure.key) && failure.issued <= 50, `${failure.key} failed, issued ${Math.round(failure.issued)} ms after the kill`)
      }
      for (const { key, acked, failed } of ended) {
        const value = await store.get(key)
        assert.ok(value >= acked && value <= acked + failed, `${key} is ${value}: ${acked} acknowledged, ${failed} failed`)
      }
    } finally {
      await store.close()
    }
  })

  it('SIGSTOP (no FIN): calls issued once the cluster has failed it over succeed', async (t) => {
    await cluster.waitHealthy({ timeoutMs: 20000 })
    const store = openAll()
    // A master with a replica to take over (the one promoted in the test above has none).
    const victim = await cluster.masterWithReplica()
    assert.ok(victim, 'a master with a replica')
    const keys = await keysOn(victim, 3)
    const results = []
    let stoppedAt
    try {
      await store.set(keys[0], 0)
      stoppedAt = performance.now()
      process.kill(victim.process.pid, 'SIGSTOP')
      // Calls that do not wait on each other, every 50 ms, until one issued after the stop
      // succeeds and 40 more have been issued.
      const pending = []
      for (let i = 0; ; i++) {
        const issued = performance.now() - stoppedAt
        pending.push(store.set(keys[i % keys.length], i).then(() => results.push({ issued, ok: true }), (err) => results.push({ issued, code: err.code, message: err.message })))
        const firstOk = results.filter((r) => r.ok).length
        if (firstOk > 0 && pending.length > 40 + results.findIndex((r) => r.ok)) break
        assert.ok(issued < 20000, 'no call succeeded within 20 s of the stop')
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      await Promise.all(pending)
    } finally {
      process.kill(victim.process.pid, 'SIGCONT')
      await store.close()
    }
    results.sort((a, b) => a.issued - b.issued)
    const recovered = results.find((r) => r.ok).issued
    t.diagnostic(`the first call that succeeded was issued ${Math.round(recovered)} ms after the stop`)
    // cluster-node-timeout (2000 ms) plus 3 s.
    assert.ok(recovered <= 5000, `recovered ${Math.round(recovered)} ms after the stop`)
    assert.deepEqual(results.filter((r) => !r.ok && r.issued > recovered).map((r) => `${Math.round(r.issued)} ms: ${r.code}`), [], 'calls issued after the recovery that failed')
    for (const r of results.filter((r) => !r.ok)) assert.ok(['ERR_STORE_CONNECTION', 'ERR_STORE_TIMEOUT'].includes(r.code), r.code)
    // Calls written to the hung master fail once the cluster has failed it over (they may have
    // run), not at commandTimeout, when the failover comes first (as it does here, unless the
    // machine is very busy).
    const failed = results.filter((r) => !r.ok)
    assert.ok(failed.length > 0, 'calls were written to the hung master')
    if (recovered < COMMAND_TIMEOUT - 1000) {
      for (const r of failed) assert.match(r.message, /failed this master over/)
    }
  })

  it('keeps reading the slot map after a read failed while idle, and finds a hung master\'s replica with short timeouts', async (t) => {
    await cluster.waitHealthy({ timeoutMs: 20000 })
    const store = open(cluster, { keyPrefix: '', cluster: { nodes: cluster.seeds }, commandTimeout: 400, connectTimeout: 400 })
    const live = () => cluster.nodes.filter((node) => node.process && node.process.exitCode === null && node.process.signalCode === null)
    const stopped = []
    try {
      await store.set('idle', 1)
      // Every node unreachable for longer than a read's connectTimeout, the adapter idle.
      for (const node of live()) process.kill(node.process.pid, 'SIGSTOP')
      await new Promise((resolve) => setTimeout(resolve, 1500))
      for (const node of live()) process.kill(node.process.pid, 'SIGCONT')
      await cluster.waitHealthy({ timeoutMs: 20000 })
      const victim = await cluster.masterWithReplica()
      const [key] = await keysOn(victim, 1)
      await store.set(key, 'before')
      const began = performance.now()
      process.kill(victim.process.pid, 'SIGSTOP')
      stopped.push(victim)
      let recovered = null
      while (recovered === null && performance.now() - began < 15000) {
        await store.set(key, 'after').then(() => (recovered = performance.now() - began), () => {})
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      t.diagnostic(`calls on the hung master's slots succeeded again ${Math.round(recovered)} ms after the stop`)
      assert.ok(recovered !== null, 'calls on the hung master\'s slots never succeeded again')
    } finally {
      for (const node of stopped) process.kill(node.process.pid, 'SIGCONT')
      await store.close()
    }
  })
})

// One chain per channel publishing 0, 1, 2, ... with one message in flight and 20 ms between;
// the function returned stops them.
function publishInSequence(publisher, channels) {
  let stopped = false
  const chains = channels.map(async (channel) => {
    for (let n = 0; !stopped; n++) {
      await publisher.publish(channel, n).catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  })
  return async () => {
    stopped = true
    await Promise.all(chains)
  }
}

// Every channel's messages as published: none twice, none out of order.
function assertEachOnceInOrder(received) {
  for (const [channel, got] of received) {
    for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1], `${channel}: ${got[i]} after ${got[i - 1]}`)
  }
}

describe('Pub/Sub while its node is lost', () => {
  let cluster
  before(async () => {
    cluster = await startCluster()
  })
  after(async () => {
    await cluster.stop()
  })

  it('100 channels, the subscriber\'s node SIGKILLed: every channel delivers again, no message twice', async (t) => {
    const options = { keyPrefix: '', cluster: { nodes: cluster.seeds } }
    const subscriber = open(cluster, options)
    const publisher = open(cluster, options)
    const channels = Array.from({ length: 100 }, (_, i) => `ch${i}`)
    const received = new Map(channels.map((channel) => [channel, []]))
    let stopPublishing = async () => {}
    try {
      await Promise.all(channels.map((channel) => subscriber.subscribe(channel, (n) => received.get(channel).push(n))))
      // In classic Pub/Sub a node counts only its own subscribers: the one counting ours is it.
      const counts = await Promise.all(cluster.nodes.map((node) => node.cli('PUBSUB', 'NUMSUB', 'ch0')))
      const home = cluster.nodes.filter((node, i) => counts[i].split('\n')[1] === '1')
      assert.equal(home.length, 1, 'the subscriber is on one node')
      stopPublishing = publishInSequence(publisher, channels)
      await waitUntil(() => channels.every((channel) => received.get(channel).length > 3), { what: 'every channel delivering' })
      const before = new Map(channels.map((channel) => [channel, received.get(channel).length]))
      const killedAt = performance.now()
      process.kill(home[0].process.pid, 'SIGKILL')
      // Channels published through other masters show how soon the subscriber moved; the
      // others wait for the lost master's replica too.
      const owners = await Promise.all(channels.map((channel) => cluster.slotOwner(keySlot(channel))))
      const elsewhere = channels.filter((channel, i) => owners[i] !== home[0])
      await waitUntil(() => elsewhere.every((channel) => received.get(channel).length > before.get(channel) + 1), {
        what: 'channels published through other masters delivering again',
        timeoutMs: 20000,
      })
      t.diagnostic(`channels published through other masters delivered again ${Math.round(performance.now() - killedAt)} ms after the kill`)
      await waitUntil(() => channels.every((channel) => received.get(channel).length > before.get(channel) + 3), {
        what: 'every channel delivering again after the kill',
        timeoutMs: 20000,
      })
      t.diagnostic(`every channel delivered again ${Math.round(performance.now() - killedAt)} ms after the kill`)
    } finally {
      await stopPublishing()
      await Promise.all([subscriber.close(), publisher.close()])
    }
    assertEachOnceInOrder(received)
  })

  it('sharded Pub/Sub, a master SIGKILLed: its shard channels move to the promoted replica, no message twice', async (t) => {
    await cluster.waitHealthy({ timeoutMs: 20000 })
    const options = { keyPrefix: 'shard:', cluster: { nodes: cluster.seeds, pubsub: 'sharded' } }
    const subscriber = open(cluster, options)
    const publisher = open(cluster, options)
    const victim = await cluster.masterWithReplica()
    assert.ok(victim, 'a master with a replica')
    const channels = []
    for (let i = 0; channels.length < 30; i++) channels.push(`sk${i}`)
    const owners = await Promise.all(channels.map((channel) => cluster.slotOwner(keySlot(`shard:${channel}`))))
    const onVictim = channels.filter((channel, i) => owners[i] === victim)
    assert.ok(onVictim.length > 0, 'shard channels on the victim')
    const received = new Map(channels.map((channel) => [channel, []]))
    let stopPublishing = async () => {}
    try {
      await Promise.all(channels.map((channel) => subscriber.subscribe(channel, (n) => received.get(channel).push(n))))
      stopPublishing = publishInSequence(publisher, channels)
      await waitUntil(() => channels.every((channel) => received.get(channel).length > 3), { what: 'every shard channel delivering' })
      const before = new Map(channels.map((channel) => [channel, received.get(channel).length]))
      const killedAt = performance.now()
      process.kill(victim.process.pid, 'SIGKILL')
      await waitUntil(() => onVictim.every((channel) => received.get(channel).length > before.get(channel) + 3), {
        what: 'the lost master\'s shard channels delivering again',
        timeoutMs: 20000,
      })
      t.diagnostic(`the lost master's shard channels delivered again ${Math.round(performance.now() - killedAt)} ms after the kill`)
      await waitUntil(() => channels.every((channel) => received.get(channel).length > before.get(channel) + 3), { what: 'every shard channel delivering' })
    } finally {
      await stopPublishing()
      await Promise.all([subscriber.close(), publisher.close()])
    }
    assertEachOnceInOrder(received)
  })

  it('a blocking read waiting on a master that hangs ends, retryable, once the cluster has failed it over', async (t) => {
    await cluster.waitHealthy({ timeoutMs: 20000 })
    const store = open(cluster, { keyPrefix: '', cluster: { nodes: cluster.seeds } })
    const victim = await cluster.masterWithReplica()
    assert.ok(victim, 'a master with a replica')
    let stream
    for (let i = 0; !stream; i++) if ((await cluster.slotOwner(keySlot(`hang${i}`))) === victim) stream = `hang${i}`
    try {
      await store.xgroupCreate(stream, 'g', '$')
      const read = store.xreadgroup(stream, 'g', 'c', { blockMs: 60000 }).then(() => null, (err) => err)
      await waitUntil(async () => (await cluster.blockedOn(victim)) === 1, { what: 'the read blocked' })
      const stoppedAt = performance.now()
      process.kill(victim.process.pid, 'SIGSTOP')
      const err = await read
      t.diagnostic(`the read ended ${Math.round(performance.now() - stoppedAt)} ms after the stop: ${err?.message}`)
      assert.equal(err?.code, 'ERR_STORE_CONNECTION')
      assert.equal(err.retryable, true)
      // A read made now waits on the promoted replica and gets the next entry.
      const next = store.xreadgroup(stream, 'g', 'c', { blockMs: 60000 })
      const id = await store.xadd(stream, { after: true })
      assert.deepEqual(await next, [{ id, message: { after: true } }])
    } finally {
      process.kill(victim.process.pid, 'SIGCONT')
      await store.close()
    }
  })
})
