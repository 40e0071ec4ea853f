'use strict'

// Pub/Sub delivery latency, Kindling's subscriber against ioredis's, with the publisher in
// another process at fixed rates. The publisher is the same for both (a raw socket writing
// PUBLISH commands in batches every 1 ms), so only the subscriber differs. Each message carries
// its send time; the subscriber records receive time minus send time.
//
//   node bench/pubsub-latency.js
//   env PUBSUB_RATES (10000,30000,60000,120000,200000,300000)   publish rates, msg/s
//   env PUBSUB_SECONDS (3)                                      measured seconds, after 0.5 s warmup
//   env PUBSUB_CLIENTS (kindling,ioredis)                       subscribers to measure
//
// Forks itself: argv[2] = 'subscriber' or 'publisher', argv[3] = JSON { client, url, rate, seconds }.

const { fork, execFileSync } = require('node:child_process')
const net = require('node:net')
const { performance } = require('node:perf_hooks')

const CHANNEL = 'lat'
const WARMUP_MS = 500
const list = (name, fallback) => (process.env[name] ? process.env[name].split(',') : fallback)
const RATES = list('PUBSUB_RATES', ['10000', '30000', '60000', '120000', '200000', '300000']).map(Number)
const SECONDS = Number(process.env.PUBSUB_SECONDS ?? 3)
const CLIENTS = list('PUBSUB_CLIENTS', ['kindling', 'ioredis'])
// Wall-clock ms with sub-ms precision, comparable across processes (both derive it from the
// same system clocks; checked to agree within a few µs between two node processes).
const now = () => performance.timeOrigin + performance.now()
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// --- child roles ------------------------------------------------------------------------

// Counts only messages sent in the measured window (m: 1), then waits for the parent to say
// how many were published, and for them to arrive (or for 1 s of silence).
async function subscriber({ client, url }) {
  const latencies = []
  let errors = 0
  const onMessage = (message) => {
    if (message.m === 1) latencies.push(now() - message.t)
  }
  let close
  if (client === 'kindling') {
    const { createRedisStoreAdapter } = require('../index.js')
    const store = createRedisStoreAdapter({ url, onError: () => errors++ })
    await store.subscribe(CHANNEL, onMessage)
    close = () => store.close()
  } else if (client === 'ioredis') {
    const Redis = require('ioredis')
    const redis = new Redis(url)
    redis.on('error', () => errors++)
    redis.on('message', (channel, text) => onMessage(JSON.parse(text)))
    await redis.subscribe(CHANNEL)
    close = () => redis.quit()
  } else {
    throw new Error(`unknown client ${client}`)
  }
  process.send({ ready: true })
  const { published } = await new Promise((resolve) => process.once('message', resolve))
  for (let idle = 0; latencies.length < published && idle < 1000;) {
    const before = latencies.length
    await sleep(10)
    idle = latencies.length === before ? idle + 10 : 0
  }
  await close()
  const sorted = Float64Array.from(latencies).sort()
  const at = (p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
  return { received: sorted.length, lost: published - sorted.length, p50: at(0.5), p99: at(0.99), max: sorted.at(-1), errors }
}

// 100-byte-ish JSON text, as JSON.stringify would write it; a template keeps batches cheap.
const payload = (seq, t, m) =>
  `{"seq":${seq},"t":${t},"m":${m},"id":4821,"user":"ada.lovelace","email":"ada@example.com","active":true}`
const publishCommand = (text) => `*3\r\n$7\r\nPUBLISH\r\n$${CHANNEL.length}\r\n${CHANNEL}\r\n$${Buffer.byteLength(text)}\r\n${text}\r\n`

// Every 1 ms, writes the PUBLISHes due by then in one write. At most 20 ms of messages wait for
// Redis's reply; past that, due messages are skipped, not queued, so publisher-side queueing
// never counts as latency; the achieved rate is reported instead.
async function publisher({ url, rate, seconds }) {
  const socket = net.connect(Number(new URL(url).port), '127.0.0.1')
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  socket.setNoDelay(true)
  let replies = 0 // one line each (":<subscribers>\r\n")
  socket.on('data', (chunk) => {
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) replies++
  })
  const maxInFlight = Math.max(1000, rate / 50)
  const start = now()
  const measureFrom = start + WARMUP_MS
  const end = measureFrom + seconds * 1000
  let scheduled = 0
  let sent = 0
  let published = 0 // in the measured window
  let skipped = 0
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const t = now()
      if (t >= end) return resolve(clearInterval(timer))
      const due = Math.floor(((t - start) * rate) / 1000)
      const n = Math.min(due - scheduled, maxInFlight - (sent - replies))
      const m = t >= measureFrom ? 1 : 0
      if (m) skipped += due - scheduled - Math.max(n, 0)
      scheduled = due
      if (n <= 0) return
      let batch = ''
      for (let i = 0; i < n; i++) batch += publishCommand(payload(sent + i, t, m))
      socket.write(batch)
      sent += n
      if (m) published += n
    }, 1)
  })
  // Every PUBLISH replied to: Redis has handed each message to the subscriber's connection.
  for (let waited = 0; replies < sent && waited < 10_000; waited += 10) await sleep(10)
  socket.end()
  return { published, achieved: published / seconds, skipped }
}

// --- the parent ---------------------------------------------------------------------------

const live = new Set()

// A child in `role`; next() resolves to its next IPC message, rejects if it exits first.
// Its output goes to stderr, keeping stdout for the report.
function start(role, config) {
  const child = fork(__filename, [role, JSON.stringify(config)], { stdio: ['ignore', 2, 2, 'ipc'] })
  live.add(child)
  child.once('exit', () => live.delete(child))
  const next = () => new Promise((resolve, reject) => {
    const onExit = (code, signal) => reject(new Error(`${role} exited with ${signal ?? `code ${code}`}`))
    child.once('exit', onExit)
    child.once('message', (message) => {
      child.off('exit', onExit)
      if (message.error) reject(new Error(`${role}: ${message.error}`))
      else resolve(message)
    })
  })
  return { child, next, kill: () => child.kill('SIGKILL') }
}

// One subscriber (the client under test), ready before the publisher starts.
async function measure(client, rate, url) {
  const config = { client, rate, url, seconds: SECONDS }
  const sub = start('subscriber', config)
  let pub = null
  const timer = setTimeout(() => [sub, pub].forEach((c) => c?.kill()), (SECONDS + 40) * 1000)
  try {
    await sub.next()
    pub = start('publisher', config)
    const published = await pub.next()
    const result = sub.next()
    sub.child.send(published)
    return { ...published, ...(await result) }
  } catch (err) {
    for (const c of [sub, pub]) c?.kill()
    return { error: err.message.split('\n')[0] }
  } finally {
    clearTimeout(timer)
  }
}

const tryRun = (file, args) => {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return 'unknown'
  }
}
const int = (n) => Math.round(n).toLocaleString('en-US')
const ms = (n) => (n === undefined ? '–' : n.toFixed(2))
const row = (cells) => `| ${cells.join(' | ')} |`
const both = (a, b, format) => [a, b].map((r) => (r && !r.error ? format(r) : '–')).join(' / ')

function report(results) {
  const k = (rate) => results.get(`kindling/${rate}`)
  const io = (rate) => results.get(`ioredis/${rate}`)
  const ok = (r) => r && !r.error
  const lines = [
    row(['rate (msg/s)', 'published msg/s (k / io)', 'kindling p50', 'kindling p99', 'ioredis p50', 'ioredis p99',
      'p99 ratio (kindling ÷ ioredis)', 'max ms (k / io)', 'lost (k / io)']),
    row(['---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']),
  ]
  for (const rate of RATES) {
    const [a, b] = [k(rate), io(rate)]
    lines.push(row([int(rate), both(a, b, (r) => int(r.achieved)), ms(a?.p50), ms(a?.p99), ms(b?.p50), ms(b?.p99),
      ok(a) && ok(b) ? `${(a.p99 / b.p99).toFixed(2)}×` : '–', both(a, b, (r) => ms(r.max)), both(a, b, (r) => int(r.lost))]))
  }
  const problems = [...results].flatMap(([key, r]) => [
    r.error && `- ${key} FAILED: ${r.error}`,
    r.skipped && `- ${key}: the publisher skipped ${int(r.skipped)} messages (Redis behind by more than 20 ms of them)`,
    r.errors && `- ${key}: the subscriber reported ${r.errors} connection errors`,
  ].filter(Boolean))
  const env = ['PUBSUB_RATES', 'PUBSUB_SECONDS', 'PUBSUB_CLIENTS'].filter((name) => process.env[name] !== undefined)
  return `# Pub/Sub delivery latency

- CPUs (nproc): ${tryRun('nproc', [])}
- Node.js ${process.version}, redis-server ${(tryRun('redis-server', ['--version']).match(/v=(\S+)/) || [])[1] ?? 'unknown'}

\`\`\`
${env.map((name) => `${name}=${process.env[name]} `).join('')}node bench/pubsub-latency.js
\`\`\`

Publisher and subscriber are separate processes, on one private redis-server on loopback
(default settings). The publisher, the same raw-socket one for every client, writes its
PUBLISHes in a batch every 1 ms. Latency: ms from send to the subscriber's callback, over
${SECONDS} s after ${WARMUP_MS / 1000} s warmup. "published": the publish rate achieved in that
window. A p99 ratio below 1: Kindling's p99 is lower.

${lines.join('\n')}
${problems.length ? `\nProblems:\n${problems.join('\n')}\n` : ''}`
}

async function main() {
  process.on('exit', () => live.forEach((child) => child.kill('SIGKILL')))
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130))
  const { startRedis } = require('../__test__/helpers/redis-server.js')
  const server = await startRedis()
  const results = new Map()
  try {
    for (const rate of RATES) {
      for (const client of CLIENTS) {
        process.stderr.write(`${client} at ${int(rate)} msg/s: `)
        const r = await measure(client, rate, server.url)
        results.set(`${client}/${rate}`, r)
        process.stderr.write(r.error ? `FAILED: ${r.error}\n` : `p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, ${int(r.achieved)} msg/s published\n`)
      }
    }
  } finally {
    await server.stop()
  }
  process.stdout.write(report(results))
}

const ROLE = process.argv[2]
if (ROLE === 'subscriber' || ROLE === 'publisher') {
  // An orphan (the parent gone) has nothing left to report to.
  process.on('disconnect', () => process.exit(1))
  const run = ROLE === 'subscriber' ? subscriber : publisher
  run(JSON.parse(process.argv[3])).then(
    (result) => process.send(result, () => process.exit(0)),
    (err) => process.send({ error: String(err?.stack ?? err) }, () => process.exit(1)),
  )
} else {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
