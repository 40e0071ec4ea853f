'use strict'

// Soak: minutes of mixed load on one adapter (and a subscriber) while a private redis-server is
// killed (SIGKILL) and restarted at random. Not part of `npm test`.
//   SOAK_MINUTES=10 node bench/soak.js
// Prints a progress line every 30 s and a Markdown summary at the end; exits 1 if a call
// failed with an unexpected code, resolved with another key's value, or never settled.

const { performance } = require('node:perf_hooks')
const { startRedis } = require('../__test__/helpers/redis-server.js')
const { createRedisStoreAdapter } = require('..')

const MINUTES = Number(process.env.SOAK_MINUTES ?? 10)
const WORKERS = Number(process.env.SOAK_WORKERS ?? 32)
const COMMAND_TIMEOUT = 1000
const EXPECTED_DURING_OUTAGE = new Set(['ERR_STORE_CONNECTION', 'ERR_STORE_TIMEOUT'])

const random = (min, max) => min + Math.random() * (max - min)
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const mb = (bytes) => (bytes / 1048576).toFixed(1)

async function main() {
  const server = await startRedis()
  const store = createRedisStoreAdapter({ url: server.url, commandTimeout: COMMAND_TIMEOUT, onError: () => {} })
  const listener = createRedisStoreAdapter({ url: server.url, commandTimeout: COMMAND_TIMEOUT, onError: () => {} })

  const stats = { calls: 0, ok: 0, failed: new Map(), wrongValue: 0, slowest: 0, published: 0, received: 0, outages: 0, downMs: 0, groupsRemade: 0 }
  const rss = []
  let lastSeq = 0
  let reordered = 0
  await listener.subscribe('soak', (message) => {
    stats.received++
    if (message.seq <= lastSeq) reordered++
    lastSeq = message.seq
  })

  // A value that carries its own key: any read that returns another key's value is caught.
  const check = (key, value) => {
    if (value !== null && value.key !== key) stats.wrongValue++
  }
  // The stream's group is lost with the server's data when it is killed (no persistence
  // here): a read that finds it gone makes it again.
  const readGroup = async (w) => {
    try {
      const entries = await store.xreadgroup('soak:stream', 'soak', `worker-${w}`, { count: 10, blockMs: Math.random() < 0.5 ? 50 : 0 })
      for (const entry of entries) if (typeof entry.message.key !== 'string') stats.wrongValue++
      if (entries.length > 0) await store.xack('soak:stream', 'soak', entries.map((entry) => entry.id))
    } catch (err) {
      if (!/^NOGROUP/.test(err.message)) throw err
      stats.groupsRemade++
      await store.xgroupCreate('soak:stream', 'soak', '0')
    }
  }
  const operations = [
    (key) => store.set(key, { key, at: Date.now() }, Math.random() < 0.5 ? { ttl: random(1, 30) } : undefined),
    (key) => store.get(key).then((value) => check(key, value)),
    (key) => store.setNX(`${key}:claim`, { key: `${key}:claim` }, { ttl: random(0.5, 5) }),
    (key) => store.mget([key, `${key}:pair`, key]).then(([a, b, c]) => {
      check(key, a)
      check(`${key}:pair`, b)
      check(key, c)
    }),
    (key) => store.mset([{ key, value: { key }, ttl: random(1, 30) }, { key: `${key}:pair`, value: { key: `${key}:pair` } }]),
    (key) => store.xadd('soak:stream', { key }, { maxLen: 1000, approximate: true }),
    (key, w) => readGroup(w),
    () => store.xrange('soak:stream', { count: 5 }).then((entries) => {
      for (const entry of entries) if (typeof entry.message.key !== 'string') stats.wrongValue++
    }),
    (key, w) => store.scan(`soak:${w}:*`, { count: 20 }).then(({ keys }) => {
      for (const found of keys) if (!found.startsWith(`soak:${w}:`)) stats.wrongValue++
    }),
    (key) => store.increment(`${key}:n`),
    (key) => store.has(key),
    (key) => store.delete(key),
    (key) => store.expire(key, random(0.5, 10)),
    () => store.publish('soak', { seq: ++stats.published }),
  ]
  const deadline = performance.now() + MINUTES * 60_000
  let running = true
  const worker = async (w) => {
    while (running) {
      const key = `soak:${w}:${Math.floor(Math.random() * 50)}`
      const begin = performance.now()
      stats.calls++
      try {
        await operations[Math.floor(Math.random() * operations.length)](key, w)
        stats.ok++
      } catch (err) {
        stats.failed.set(err.code, (stats.failed.get(err.code) ?? 0) + 1)
      }
      stats.slowest = Math.max(stats.slowest, performance.now() - begin)
      // A steady load rather than a flood: about 1 ms between a worker's calls.
      if (stats.calls % 8 === 0) await pause(1)
    }
  }

  const chaos = async () => {
    while (performance.now() < deadline - 15_000) {
      await pause(random(15_000, 45_000))
      const downFor = random(500, 5_000)
      await server.stop('SIGKILL')
      const down = performance.now()
      stats.outages++
      await pause(downFor)
      await server.start()
      stats.downMs += performance.now() - down
    }
  }

  const started = performance.now()
  const report = setInterval(() => {
    const sample = { minute: (performance.now() - started) / 60_000, rss: process.memoryUsage().rss, calls: stats.calls }
    rss.push(sample)
    const failed = [...stats.failed].map(([code, n]) => `${code} ${n}`).join(', ') || 'none'
    console.log(`${sample.minute.toFixed(1)} min: ${stats.calls} calls, ${stats.ok} ok, failed: ${failed}; ` +
      `published ${stats.published}, received ${stats.received}; outages ${stats.outages}; RSS ${mb(sample.rss)} MB`)
  }, 30_000)

  const workers = Array.from({ length: WORKERS }, (_, w) => worker(w))
  await chaos()
  await pause(Math.max(0, deadline - performance.now()))
  running = false
  const settledInTime = await Promise.race([Promise.all(workers).then(() => true), pause(10_000).then(() => false)])
  clearInterval(report)
  await Promise.all([store.close(), listener.close()])
  await server.stop()

  const unexpected = [...stats.failed.keys()].filter((code) => !EXPECTED_DURING_OUTAGE.has(code))
  const rssValues = rss.map((s) => s.rss)
  const failedTotal = [...stats.failed.values()].reduce((a, b) => a + b, 0)
  console.log(`
| soak: ${MINUTES} min, ${WORKERS} workers, redis-server SIGKILLed and restarted at random | |
| --- | ---: |
| calls made | ${stats.calls.toLocaleString('en-US')} |
| succeeded | ${stats.ok.toLocaleString('en-US')} |
| failed | ${failedTotal.toLocaleString('en-US')} (${[...stats.failed].map(([c, n]) => `${c}: ${n.toLocaleString('en-US')}`).join(', ') || 'none'}) |
| resolved with another key's value | ${stats.wrongValue} |
| stream group made again after a restart lost it | ${stats.groupsRemade} |
| slowest call to settle | ${stats.slowest.toFixed(0)} ms (command timeout ${COMMAND_TIMEOUT} ms) |
| outages | ${stats.outages}, ${(stats.downMs / 1000).toFixed(1)} s down in all |
| messages published / received (out of order) | ${stats.published.toLocaleString('en-US')} / ${stats.received.toLocaleString('en-US')} (${reordered}) |
| RSS at 0.5 min / min / max / at the end | ${mb(rssValues[0] ?? 0)} / ${mb(Math.min(...rssValues))} / ${mb(Math.max(...rssValues))} / ${mb(rssValues.at(-1) ?? 0)} MB |`)
  const ok = unexpected.length === 0 && stats.wrongValue === 0 && reordered === 0 && settledInTime
  if (!ok) console.log(`FAILED: unexpected codes ${unexpected.join(', ') || 'none'}, wrong values ${stats.wrongValue}, reordered ${reordered}, settled ${settledInTime}`)
  process.exitCode = ok ? 0 : 1
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
