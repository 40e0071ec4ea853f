'use strict'

// One benchmark measurement in a fresh process, forked by bench/run.js:
//   argv[2] = JSON { client, case, url, seeds?, seconds, warmup } (seeds: a cluster's nodes)
// Sends one result object over IPC, then lets the process exit on its own.

const { readFileSync } = require('node:fs')
const { performance, monitorEventLoopDelay } = require('node:perf_hooks')
const { createRedisStoreAdapter, createMemoryStoreAdapter } = require('..')

const config = JSON.parse(process.argv[2])
const prefix = `bench:${config.client}:${process.pid}:`
const CHANNEL = 'bench-channel'
const CLOCK_TICK_US = 1e6 / 100 // Linux USER_HZ (getconf CLK_TCK) is 100
// 100 bytes once serialized.
const VALUE = { id: 4821, user: 'ada.lovelace', email: 'ada@example.com', roles: ['admin', 'editor'], active: true }
// 9,959 bytes once serialized: the same fields and 120 order lines.
const LARGE_VALUE = {
  ...VALUE,
  items: Array.from({ length: 120 }, (_, i) => ({ sku: `SKU-${String(i).padStart(5, '0')}`, name: `item ${i}`, qty: i % 7, cents: 999 + i, tags: ['bench', 'json'] })),
}

// The same calls over every client: set, get, increment, publish, subscribe, close. The
// subscriber is a second adapter (or connection), as an app with a listener would have.

// An Igniter.js store adapter (Kindling's or @igniter-js/adapter-redis), used through its own
// methods; `create` makes one adapter, and is called again for the subscriber.
function adapterClient(create) {
  const store = create()
  let subscriber = null
  return {
    set: (key, value, ttl) => store.set(key, value, ttl ? { ttl } : undefined),
    get: (key) => store.get(key),
    increment: (key) => store.increment(key),
    publish: (channel, message) => store.publish(channel, message),
    subscribe: (channel, onMessage) => {
      subscriber = create()
      return subscriber.subscribe(channel, onMessage)
    },
    close: () => Promise.all([store.close(), subscriber?.close()]),
    // @igniter-js/store's larger contract.
    mget: (keys) => store.mget(keys),
    mset: (entries) => store.mset(entries),
    xadd: (stream, message, options) => store.xadd(stream, message, options),
    xrange: (stream, options) => store.xrange(stream, options),
    xgroupCreate: (stream, group, startId) => store.xgroupCreate(stream, group, startId),
    xreadgroup: (stream, group, consumer, options) => store.xreadgroup(stream, group, consumer, options),
  }
}

// @igniter-js/store's own Redis adapter over an ioredis instance. It makes a subscriber
// connection with duplicate() at once and has no close(), so both are disconnected at the end
// (disconnect, not quit: quit would wait behind a blocking read). ioredis's keyPrefix misses
// XGROUP's key, so the prefix goes on the names here, as @igniter-js/store's manager does.
function igniterStoreAdapter(url) {
  const Redis = require('ioredis')
  const { IgniterStoreRedisAdapter } = require('@igniter-js/store/adapters')
  const redis = new Redis(url)
  const adapter = IgniterStoreRedisAdapter.create({ redis })
  return {
    set: (key, value, options) => adapter.set(prefix + key, value, options),
    get: (key) => adapter.get(prefix + key),
    increment: (key) => adapter.increment(prefix + key),
    publish: (channel, message) => adapter.publish(prefix + channel, message),
    subscribe: (channel, callback) => adapter.subscribe(prefix + channel, callback),
    mget: (keys) => adapter.mget(keys.map((key) => prefix + key)),
    mset: (entries) => adapter.mset(entries.map((entry) => ({ ...entry, key: prefix + entry.key }))),
    xadd: (stream, message, options) => adapter.xadd(prefix + stream, message, options),
    xrange: (stream, options) => adapter.xrange(prefix + stream, options),
    xgroupCreate: (stream, group, startId) => adapter.xgroupCreate(prefix + stream, group, startId),
    xreadgroup: (stream, group, consumer, options) => adapter.xreadgroup(prefix + stream, group, consumer, options),
    close: async () => {
      redis.disconnect()
      adapter.subscriberClient.disconnect()
    },
  }
}

// @igniter-js/adapter-redis over an ioredis instance. The adapter makes its subscriber
// connection with redis.duplicate() and has no close(), so the duplicates are kept to quit.
function igniterAdapter(url) {
  const Redis = require('ioredis')
  const { createRedisStoreAdapter } = require('@igniter-js/adapter-redis')
  const redis = new Redis(url, { keyPrefix: prefix })
  const connections = [redis]
  const duplicate = redis.duplicate
  redis.duplicate = (...args) => {
    connections.push(duplicate.apply(redis, args))
    return connections.at(-1)
  }
  return { ...createRedisStoreAdapter(redis), close: () => Promise.all(connections.map((c) => c.quit())) }
}

// A plain Redis client doing its own JSON.stringify/parse and key prefix, as an app would;
// `redis` wraps one library: set(key, text, px; 0 for no TTL), get, incr, publish(channel,
// text), subscribe(channel, onText) on a second connection, close.
function plainClient(redis) {
  return {
    set: (key, value, ttl) => redis.set(prefix + key, JSON.stringify(value), ttl ? Math.round(ttl * 1000) : 0),
    get: async (key) => {
      const text = await redis.get(prefix + key)
      return text === null ? null : JSON.parse(text)
    },
    increment: (key) => redis.incr(prefix + key),
    publish: (channel, message) => redis.publish(prefix + channel, JSON.stringify(message)),
    subscribe: (channel, onMessage) => redis.subscribe(prefix + channel, (text) => onMessage(JSON.parse(text))),
    close: () => redis.close(),
  }
}

function ioredis(url) {
  const Redis = require('ioredis')
  // Redis Cluster (BENCH_TOPOLOGY=cluster): ioredis's Cluster client over the same nodes.
  const redis = config.seeds ? new Redis.Cluster(config.seeds) : new Redis(url)
  let subscriber = null
  return {
    set: (key, text, px) => (px ? redis.set(key, text, 'PX', px) : redis.set(key, text)),
    get: (key) => redis.get(key),
    incr: (key) => redis.incr(key),
    publish: (channel, text) => redis.publish(channel, text),
    subscribe: async (channel, onText) => {
      subscriber = redis.duplicate()
      subscriber.on('message', (_, text) => onText(text))
      await subscriber.subscribe(channel)
    },
    close: () => Promise.all([redis.quit(), subscriber?.quit()]),
  }
}

async function nodeRedis(url) {
  const { createClient } = require('redis')
  const redis = await createClient({ url }).connect()
  let subscriber = null
  return {
    set: (key, text, px) => redis.set(key, text, px ? { expiration: { type: 'PX', value: px } } : undefined),
    get: (key) => redis.get(key),
    incr: (key) => redis.incr(key),
    publish: (channel, text) => redis.publish(channel, text),
    subscribe: async (channel, onText) => {
      subscriber = await redis.duplicate().connect()
      await subscriber.subscribe(channel, onText)
    },
    close: () => Promise.all([redis.close(), subscriber?.close()]),
  }
}

async function valkeyGlide(url) {
  const { GlideClient, TimeUnit } = require('@valkey/valkey-glide')
  const { hostname, port } = new URL(url)
  // Its default limit of 1000 requests in flight refuses setget-1024's 1024th.
  const connect = (options) => GlideClient.createClient({ addresses: [{ host: hostname, port: Number(port) }], inflightRequestsLimit: 2048, ...options })
  const redis = await connect()
  let subscriber = null
  return {
    set: (key, text, px) => redis.set(key, text, px ? { expiry: { type: TimeUnit.Milliseconds, count: px } } : undefined),
    get: (key) => redis.get(key),
    incr: (key) => redis.incr(key),
    publish: (channel, text) => redis.publish(text, channel),
    subscribe: async (channel, onText) => {
      subscriber = await connect({ pubsubSubscriptions: { channelsAndPatterns: {}, callback: (msg) => onText(msg.message) } })
      await subscriber.subscribe([channel], 5000)
    },
    close: async () => {
      redis.close()
      subscriber?.close()
    },
  }
}

async function makeClient(name, url) {
  switch (name) {
    case 'kindling': return adapterClient(() => createRedisStoreAdapter(config.seeds ? { cluster: { nodes: config.seeds }, keyPrefix: prefix } : { url, keyPrefix: prefix }))
    // Named, so that a second adapter would share the store.
    case 'kindling-memory': return adapterClient(() => createMemoryStoreAdapter({ name: prefix, keyPrefix: prefix }))
    case 'igniter-adapter-redis': return adapterClient(() => igniterAdapter(url))
    case 'igniter-store-redis': return adapterClient(() => igniterStoreAdapter(url))
    case 'ioredis': return plainClient(ioredis(url))
    case 'node-redis': return plainClient(await nodeRedis(url))
    case 'valkey-glide': return plainClient(await valkeyGlide(url))
    default: throw new Error(`unknown client ${name}`)
  }
}

// `inFlight` workers, each looping `await op(worker)` until the deadline. The deadline is
// checked in the loop, not by a timer: an in-process store resolves at once, and a loop of
// already-resolved awaits never lets a timer run.
async function loop(inFlight, seconds, op) {
  const end = performance.now() + seconds * 1000
  let calls = 0
  const worker = async (w) => {
    while (performance.now() < end) {
      await op(w)
      calls++
    }
  }
  await Promise.all(Array.from({ length: inFlight }, (_, w) => worker(w)))
  return calls
}

// Main thread only: /proc/self/task/<pid>/stat, utime + stime in clock ticks.
function mainThreadCpuUs() {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * CLOCK_TICK_US
}

// Runs `count` (which resolves to the number of ops done) and measures it: wall time,
// process CPU (every thread), main-thread CPU, and event-loop utilization.
async function measure(count) {
  const cpu = process.cpuUsage()
  const mainCpu = mainThreadCpuUs()
  const elu = performance.eventLoopUtilization()
  const start = performance.now()
  const ops = await count()
  const seconds = (performance.now() - start) / 1000
  const cpuDelta = process.cpuUsage(cpu)
  return {
    ops,
    seconds,
    opsPerSec: ops / seconds,
    cpuUsPerOp: (cpuDelta.user + cpuDelta.system) / ops,
    mainCpuUsPerOp: (mainThreadCpuUs() - mainCpu) / ops,
    elu: performance.eventLoopUtilization(elu).utilization,
  }
}

// Warm up, then measure; `opsPerCall` ops per call of `op`. `starting` runs between the two.
async function timedLoop(inFlight, opsPerCall, op, starting = () => {}) {
  await loop(inFlight, config.warmup, op)
  starting()
  return measure(async () => opsPerCall * (await loop(inFlight, config.seconds, op)))
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]

async function setGet(client, inFlight, value = VALUE) {
  let mismatches = 0
  // With one call in flight, each call's round trip (call to settled promise) is recorded.
  let roundTrips = null
  const timed = async (call) => {
    if (roundTrips === null) return call()
    const start = performance.now()
    const result = await call()
    roundTrips.push(performance.now() - start)
    return result
  }
  const result = await timedLoop(inFlight, 2, async (w) => {
    await timed(() => client.set(`sg:${w}`, value, 60))
    const got = await timed(() => client.get(`sg:${w}`))
    if (got === null || got.id !== value.id || got.email !== value.email || got.items?.length !== value.items?.length) mismatches++
  }, () => {
    if (inFlight === 1) roundTrips = []
  })
  if (mismatches > 0) throw new Error(`${mismatches} get calls did not return the value just set`)
  if (roundTrips) {
    roundTrips.sort((a, b) => a - b)
    result.p50Us = percentile(roundTrips, 0.5) * 1000
    result.p99Us = percentile(roundTrips, 0.99) * 1000
  }
  return result
}

async function increment(client, inFlight) {
  let calls = 0
  let highest = 0
  const result = await timedLoop(inFlight, 1, async () => {
    const n = await client.increment('counter')
    calls++
    if (n > highest) highest = n
  })
  if (highest !== calls) throw new Error(`${calls} increments, but the counter reached ${highest}`)
  return result
}

// One publisher, one subscriber (another connection / adapter) in this process. Each message
// carries a sequence number and its send time; counts messages received, not publishes. Also
// records how far the subscriber fell behind, and the longest event-loop stall.
async function pubsub(client, inFlight) {
  let published = 0
  let received = 0
  let maxBacklog = 0
  let highestSeq = -1
  let reordered = 0
  let measuring = false
  const latencies = []
  await client.subscribe(CHANNEL, (message) => {
    received++
    if (message.seq <= highestSeq) reordered++ // late or repeated
    else highestSeq = message.seq
    if (measuring) latencies.push(performance.now() - message.t)
  })
  const publish = async () => {
    await client.publish(CHANNEL, { seq: published++, t: performance.now(), data: VALUE })
    if (published - received > maxBacklog) maxBacklog = published - received
  }
  await loop(inFlight, config.warmup, publish)
  const delay = monitorEventLoopDelay({ resolution: 10 })
  const result = await measure(async () => {
    const before = received
    measuring = true
    delay.enable()
    await loop(inFlight, config.seconds, publish)
    delay.disable()
    measuring = false
    return received - before
  })
  // Let the last messages arrive, for at most 5 s.
  for (let waited = 0; received < published && waited < 5000; waited += 10) {
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  latencies.sort((a, b) => a - b)
  result.p99Ms = percentile(latencies, 0.99)
  Object.assign(result, { published, received, lost: published - received, reordered, maxBacklog, maxLoopDelayMs: delay.max / 1e6 })
  return result
}

// Batches of 100 keys of 100-byte values: one mget or one mset per call, counted as one op.
const BATCH = 100
const batchKeys = (w) => Array.from({ length: BATCH }, (_, i) => `batch:${w}:${i}`)

async function batchGet(client, inFlight) {
  const keys = Array.from({ length: inFlight }, (_, w) => batchKeys(w))
  for (const workerKeys of keys) await client.mset(workerKeys.map((key) => ({ key, value: VALUE })))
  let wrong = 0
  const result = await timedLoop(inFlight, 1, async (w) => {
    const values = await client.mget(keys[w])
    if (values.length !== BATCH || values[BATCH - 1]?.email !== VALUE.email) wrong++
  })
  if (wrong > 0) throw new Error(`${wrong} mget calls did not return the values set`)
  return result
}

async function batchSet(client, inFlight) {
  const entries = Array.from({ length: inFlight }, (_, w) => batchKeys(w).map((key) => ({ key, value: VALUE, ttl: 60 })))
  const result = await timedLoop(inFlight, 1, (w) => client.mset(entries[w]))
  const check = await client.mget(batchKeys(inFlight - 1))
  if (check[0]?.id !== VALUE.id) throw new Error('mset did not store its entries')
  return result
}

// Appends, trimmed as an app would keep a stream bounded.
async function streamAppend(client, inFlight) {
  let wrong = 0
  const result = await timedLoop(inFlight, 1, async () => {
    const id = await client.xadd('stream:append', VALUE, { maxLen: 10000, approximate: true })
    if (typeof id !== 'string') wrong++
  })
  if (wrong > 0) throw new Error(`${wrong} xadd calls did not return an id`)
  return result
}

// Reads of the 10 oldest entries of a 100-entry stream.
async function streamRange(client, inFlight) {
  for (let i = 0; i < 100; i++) await client.xadd('stream:range', { ...VALUE, id: i })
  let wrong = 0
  const result = await timedLoop(inFlight, 1, async () => {
    const entries = await client.xrange('stream:range', { count: 10 })
    if (entries.length !== 10 || entries[9].message.id !== 9) wrong++
  })
  if (wrong > 0) throw new Error(`${wrong} xrange calls did not return the entries`)
  return result
}

// set+get while 16 consumers wait in blocking reads on a stream nobody appends to, each
// reading again as soon as its read returns empty. The reads run until the measurement is
// over; their count is reported, not timed.
async function setGetWhileBlocked(client, inFlight) {
  const READERS = 16
  const stream = 'stream:idle'
  await client.xgroupCreate(stream, 'workers', '$')
  let reading = true
  const readers = Array.from({ length: READERS }, async (_, r) => {
    while (reading) await client.xreadgroup(stream, 'workers', `reader-${r}`, { blockMs: 500 })
  })
  const result = await setGet(client, inFlight)
  reading = false
  await Promise.all(readers)
  return result
}

const cases = {
  'setget-1': (client) => setGet(client, 1),
  'setget-64': (client) => setGet(client, 64),
  'setget-1024': (client) => setGet(client, 1024),
  'setget10k-64': (client) => setGet(client, 64, LARGE_VALUE),
  'incr-64': (client) => increment(client, 64),
  'pubsub-256': (client) => pubsub(client, 256),
  'mget100-64': (client) => batchGet(client, 64),
  'mset100-64': (client) => batchSet(client, 64),
  'xadd-64': (client) => streamAppend(client, 64),
  'xrange-64': (client) => streamRange(client, 64),
  'setget-64-blocked': (client) => setGetWhileBlocked(client, 64),
}

async function main() {
  const client = await makeClient(config.client, config.url)
  const result = await cases[config.case](client)
  await client.close()
  process.send(result, () => process.disconnect())
}

// Started from the event loop: eventLoopUtilization() reads 0 before the loop has begun.
setImmediate(() => main().catch((err) => {
  process.send({ error: err && err.stack ? err.stack : String(err) }, () => process.exit(1))
}))
