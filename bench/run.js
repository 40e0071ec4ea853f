'use strict'

// Kindling against ioredis, node-redis, valkey-glide and @igniter-js/adapter-redis on a
// private redis-server; every measurement runs in a fresh child process (bench/client.js).
// The competitors other than ioredis come from bench/package.json, installed into
// bench/node_modules on first use, never by the root package.
//
//   node bench/run.js [--write]      --write also rewrites BENCHMARKS.md (keeping its
//                                    hand-written "Levers measured" section)
//   env BENCH_SECONDS (3)            measured seconds per run, after a 0.5 s warmup
//   env BENCH_RUNS (3)               runs per client and case, in alternating order
//   env BENCH_CASES (all)            comma-separated case ids, e.g. setget-1,pubsub-256
//   env BENCH_CLIENTS (all)          comma-separated client ids, e.g. kindling,valkey-glide
//   env BENCH_TOPOLOGY (standalone)  cluster: three masters with a replica each, Kindling
//                                    against ioredis's Redis.Cluster (set+get, increment, Pub/Sub)
//   env BENCH_PLACEMENT (none)       same: redis-server and each client process pinned to CPU 1;
//                                    cross: redis-server on CPU 1, each client on CPU 0

const { fork, execFileSync } = require('node:child_process')
const { once } = require('node:events')
const fs = require('node:fs')
const path = require('node:path')
const { startRedis } = require('../__test__/helpers/redis-server.js')
const { startCluster } = require('../__test__/helpers/cluster.js')

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3)
const RUNS = Number(process.env.BENCH_RUNS ?? 3)
const WARMUP = 0.5
const CHILD_TIMEOUT_MS = Math.max(60, 2 * SECONDS + 20) * 1000
const WRITE = process.argv.includes('--write')
const ROOT = path.join(__dirname, '..')
const LEVERS_HEADING = '## Levers measured'
const PLACEMENT = process.env.BENCH_PLACEMENT
const SERVER_CPU = '1'
const CLIENT_CPU = { same: '1', cross: '0' }[PLACEMENT]

const COMPETITORS = ['ioredis', 'node-redis', 'valkey-glide', 'igniter-adapter-redis', 'igniter-store-redis']
// The cases of the core contract; @igniter-js/store's adapter takes part in them too.
const REDIS_CLIENTS = ['kindling', ...COMPETITORS]
const ALL_CLIENTS = [...REDIS_CLIENTS, 'kindling-memory']
// The cases of @igniter-js/store's larger contract: the adapters that implement it.
const STORE_CLIENTS = ['kindling', 'igniter-store-redis', 'kindling-memory']
const CASES = [
  { id: 'setget-1', title: 'set+get, 1 in flight', unit: 'ops/s', clients: ALL_CLIENTS },
  { id: 'setget-64', title: 'set+get, 64 in flight', unit: 'ops/s', clients: ALL_CLIENTS },
  { id: 'setget-1024', title: 'set+get, 1024 in flight', unit: 'ops/s', clients: ALL_CLIENTS },
  { id: 'setget10k-64', title: 'set+get 10 KB, 64 in flight', unit: 'ops/s', clients: ALL_CLIENTS },
  { id: 'incr-64', title: 'increment, 64 in flight', unit: 'ops/s', clients: REDIS_CLIENTS },
  { id: 'pubsub-256', title: 'Pub/Sub, 256 publishes in flight', unit: 'msg/s', clients: REDIS_CLIENTS },
  { id: 'mget100-64', title: 'mget of 100 keys, 64 in flight', unit: 'calls/s', clients: STORE_CLIENTS },
  { id: 'mset100-64', title: 'mset of 100 entries with TTL, 64 in flight', unit: 'calls/s', clients: STORE_CLIENTS },
  { id: 'xadd-64', title: 'xadd, 64 in flight', unit: 'ops/s', clients: STORE_CLIENTS },
  { id: 'xrange-64', title: 'xrange of 10 entries, 64 in flight', unit: 'calls/s', clients: STORE_CLIENTS },
  { id: 'setget-64-blocked', title: 'set+get, 64 in flight, 16 blocking reads waiting', unit: 'ops/s', clients: STORE_CLIENTS },
]
// BENCH_TOPOLOGY=cluster: a cluster of three masters with a replica each, on this machine,
// Kindling against ioredis's Redis.Cluster, in the cases a cluster changes.
const CLUSTER = process.env.BENCH_TOPOLOGY === 'cluster'
const CLUSTER_CASES = ['setget-64', 'setget-1024', 'incr-64', 'pubsub-256']
const list = (name) => (process.env[name] ? process.env[name].split(',') : null)
const ONLY = list('BENCH_CASES')
const ONLY_CLIENTS = list('BENCH_CLIENTS')
const SELECTED = CASES.filter((c) => (!ONLY || ONLY.includes(c.id)) && (!CLUSTER || CLUSTER_CASES.includes(c.id)))
  .map((c) => ({ ...c, clients: c.clients.filter((client) => (!ONLY_CLIENTS || ONLY_CLIENTS.includes(client)) && (!CLUSTER || ['kindling', 'ioredis'].includes(client))) }))
  .filter((c) => c.clients.length > 0)
const LABELS = { 'kindling-memory': 'kindling-memory (in-process)' }
const label = (client) => LABELS[client] ?? client
// Glide does not send one client's concurrent commands in call order, so concurrent publishes
// reach Redis out of order; for it that is reported, not counted as a failure.
const UNORDERED = new Set(['valkey-glide'])

// Child processes still running, killed if this process exits early.
const live = new Set()
process.on('exit', () => live.forEach((child) => child.kill('SIGKILL')))
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130))

// --- one measurement in a child process ------------------------------------------------

// Resolves to the child's result, or to { error } when it fails, crashes or overruns.
function runChild(config) {
  return new Promise((resolve) => {
    // Pinned clients start through taskset, which keeps the IPC channel node's fork set up.
    const pinned = CLIENT_CPU ? { execPath: 'taskset', execArgv: ['-c', CLIENT_CPU, process.execPath] } : {}
    const child = fork(path.join(__dirname, 'client.js'), [JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], ...pinned })
    live.add(child)
    let output = ''
    const collect = (chunk) => (output = (output + chunk).slice(-4000))
    child.stdout.on('data', collect)
    child.stderr.on('data', collect)
    let result = null
    child.on('message', (message) => (result = message))
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, CHILD_TIMEOUT_MS)
    child.once('exit', (code, signal) => {
      clearTimeout(timer)
      live.delete(child)
      const log = output.trim()
      let error = null
      if (timedOut) error = `no ${result ? 'exit after its result' : 'result'} within ${CHILD_TIMEOUT_MS / 1000} s; killed`
      else if (result && result.error) error = result.error
      else if (!result || code !== 0) error = `exited with ${signal ?? `code ${code}`}${result ? '' : ' and no result'}`
      resolve(error ? { error, log } : { ...result, log })
    })
  })
}

// --- statistics and tables -------------------------------------------------------------

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const sum = (xs) => xs.reduce((a, b) => a + b, 0)

function summarize(runs) {
  const ok = runs.filter((r) => !r.error)
  const failed = runs.length - ok.length
  if (ok.length === 0) return { failed }
  const of = (field) => ok.map((r) => r[field])
  const rates = of('opsPerSec')
  const mid = median(rates)
  return {
    failed,
    median: mid,
    spread: (Math.max(...rates) - Math.min(...rates)) / mid,
    cpuUsPerOp: median(of('cpuUsPerOp')),
    mainCpuUsPerOp: median(of('mainCpuUsPerOp')),
    elu: median(of('elu')),
    p99Ms: ok[0].p99Ms === undefined ? undefined : median(of('p99Ms')),
    p50Us: ok[0].p50Us === undefined ? undefined : median(of('p50Us')),
    p99Us: ok[0].p99Us === undefined ? undefined : median(of('p99Us')),
    maxBacklog: Math.max(...of('maxBacklog')),
    maxLoopDelayMs: Math.max(...of('maxLoopDelayMs')),
    published: sum(of('published')),
    lost: sum(of('lost')),
    reordered: sum(of('reordered')),
  }
}

const int = (n) => Math.round(n).toLocaleString('en-US')
const fixed = (n, digits = 1) => (n === undefined ? '–' : n.toFixed(digits))
const percent = (n) => `${(n * 100).toFixed(1)} %`
const row = (cells) => `| ${cells.join(' | ')} |`

const ratio = (a, b) => (a && b ? `${(a / b).toFixed(2)}×` : '')

// Kindling's median over each competitor's, per case.
function ratios(summaries) {
  const columns = COMPETITORS.filter((name) => SELECTED.some((c) => c.clients.includes(name)))
  const lines = [row(['case', ...columns.map((name) => `kindling ÷ ${name}`)]), row(['---', ...columns.map(() => '---:')])]
  for (const c of SELECTED) {
    const kindling = summaries.get(`${c.id}/kindling`)?.median
    if (kindling) lines.push(row([c.title, ...columns.map((name) => ratio(kindling, summaries.get(`${c.id}/${name}`)?.median) || '–')]))
  }
  return lines.length > 2 && columns.length ? lines.join('\n') : ''
}

function tables(summaries) {
  const main = [
    row(['case', 'client', 'median', 'spread', 'CPU µs/op (process)', 'CPU µs/op (main thread)', 'event-loop util.', 'kindling ÷ ioredis']),
    row(['---', '---', '---:', '---:', '---:', '---:', '---:', '---:']),
  ]
  const roundTrips = [
    row(['client', 'p50 µs (median of runs)', 'p99 µs (median of runs)']),
    row(['---', '---:', '---:']),
  ]
  const pubsub = [
    row(['client', 'msg/s (median)', 'p99 latency ms (median)', 'max backlog (msgs)', 'max event-loop delay ms', 'published', 'lost', 'out of order']),
    row(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:']),
  ]
  for (const c of SELECTED) {
    const ioredis = summaries.get(`${c.id}/ioredis`)?.median
    for (const client of c.clients) {
      const s = summaries.get(`${c.id}/${client}`)
      const failed = s.failed ? ` (${s.failed}/${RUNS} runs failed)` : ''
      if (s.median === undefined) {
        main.push(row([c.title, label(client), `**failed**${failed}`, '–', '–', '–', '–', '–']))
        continue
      }
      main.push(row([c.title, label(client), `${int(s.median)} ${c.unit}${failed}`, percent(s.spread),
        fixed(s.cpuUsPerOp), fixed(s.mainCpuUsPerOp), fixed(s.elu, 2), client === 'kindling' ? ratio(s.median, ioredis) : '']))
      if (s.p50Us !== undefined) roundTrips.push(row([label(client), fixed(s.p50Us, 0), fixed(s.p99Us, 0)]))
      if (c.id === 'pubsub-256') {
        pubsub.push(row([label(client), int(s.median), fixed(s.p99Ms), int(s.maxBacklog), fixed(s.maxLoopDelayMs), int(s.published), int(s.lost), int(s.reordered)]))
      }
    }
  }
  const detail = 'Pub/Sub detail (max backlog and max delay: worst over the runs; published, lost and out of order: totals over all runs, warmup included):'
  const others = ratios(summaries)
  const placement = PLACEMENT ? ` (placement: ${PLACEMENT}, redis-server on CPU ${SERVER_CPU}, clients on CPU ${CLIENT_CPU})` : ''
  const trips = roundTrips.length > 2 ? `\nRound trips of set+get with 1 in flight, each call to its settled promise${placement}:\n\n${roundTrips.join('\n')}\n` : ''
  return `${main.join('\n')}\n${others ? `\nKindling's median over each competitor's (above 1: Kindling is faster):\n\n${others}\n` : ''}${trips}${pubsub.length > 2 ? `\n${detail}\n\n${pubsub.join('\n')}\n` : ''}`
}

// Failed runs, lost or reordered messages, and anything a child wrote to stdout/stderr.
function problems(results, summaries) {
  const lines = []
  for (const [key, runs] of results) {
    runs.forEach((r, i) => {
      if (r.error) lines.push(`- ${key} run ${i + 1} FAILED: ${r.error.split('\n').slice(0, 4).join('\n  ')}`)
      if (r.log) lines.push(`- ${key} run ${i + 1} output:\n\n  \`\`\`\n  ${r.log.split('\n').slice(-15).join('\n  ')}\n  \`\`\``)
    })
    const s = summaries.get(key)
    const expected = UNORDERED.has(key.split('/')[1]) && !s.lost ? ' (expected: see the notes)' : ''
    if (s.lost || s.reordered) lines.push(`- ${key}: ${s.lost} messages lost, ${s.reordered} out of order${expected}`)
  }
  return lines
}

// --- the report --------------------------------------------------------------------------

const tryRun = (file, args) => {
  try {
    return execFileSync(file, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return 'unknown'
  }
}

// A package's version as bench/client.js resolves it: bench/node_modules first, then the root's.
function version(name) {
  for (const dir of [__dirname, ROOT]) {
    const file = path.join(dir, 'node_modules', name, 'package.json')
    if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8')).version
  }
  return 'not installed'
}

// bench/package.json's packages, installed into bench/node_modules when any is missing. A
// failed install is reported; the clients that need it then fail their runs.
function installCompetitors() {
  const names = Object.keys(require('./package.json').dependencies)
  if (names.every((name) => fs.existsSync(path.join(__dirname, 'node_modules', name, 'package.json')))) return
  process.stderr.write('Installing the competitor clients: npm install --prefix bench\n')
  try {
    execFileSync('npm', ['install', '--prefix', 'bench', '--no-audit', '--no-fund'], { cwd: ROOT, stdio: ['ignore', 2, 2] })
  } catch (err) {
    process.stderr.write(`npm install --prefix bench failed (${err.message.split('\n')[0]}); continuing without them\n`)
  }
}

function machine() {
  const cpuModel = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.*)$/m) || [])[1] ?? 'unknown'
  return [
    `- CPUs (nproc): ${tryRun('nproc', [])}, model: ${cpuModel}`,
    `- Node.js ${process.version}, redis-server ${(tryRun('redis-server', ['--version']).match(/v=(\S+)/) || [])[1] ?? 'unknown'}`,
    `- ioredis ${version('ioredis')}, redis (node-redis) ${version('redis')}, @valkey/valkey-glide ${version('@valkey/valkey-glide')}, @igniter-js/adapter-redis ${version('@igniter-js/adapter-redis')}, @igniter-js/store ${version('@igniter-js/store')}`,
    `- kindling at commit ${tryRun('git', ['rev-parse', '--short', 'HEAD'])}, run ${new Date().toISOString().slice(0, 10)}`,
  ].join('\n')
}

function command() {
  const env = ['BENCH_SECONDS', 'BENCH_RUNS', 'BENCH_CASES', 'BENCH_CLIENTS', 'BENCH_PLACEMENT'].filter((name) => process.env[name] !== undefined).map((name) => `${name}=${process.env[name]} `)
  return `${env.join('')}node bench/run.js ${process.argv.slice(2).join(' ')}`.trim()
}

function benchmarksMarkdown(table, issues) {
  return `# Benchmarks

Kindling's Redis adapter against five other ways to use Redis from Node.js, all against one
private \`redis-server\` on loopback that the harness starts, each measurement in a fresh Node.js
process:

- **ioredis** 5 and **node-redis** (\`redis\` on npm), default options (so no ioredis
  auto-pipelining), each doing its own \`JSON.stringify\`/\`JSON.parse\`;
- **valkey-glide** (\`@valkey/valkey-glide\`, whose JS side sends commands over a local socket to
  a Rust core in the same process), the same way; its \`inflightRequestsLimit\` is raised from
  1000 to 2048, which otherwise refuses the 1024-in-flight case;
- **igniter-adapter-redis**: \`@igniter-js/adapter-redis\`, Igniter.js's own store adapter over an
  ioredis instance (\`new Redis(url, { keyPrefix })\`), used through the same adapter methods as
  Kindling's;
- **igniter-store-redis**: \`IgniterStoreRedisAdapter\` of \`@igniter-js/store\` (the store's own
  adapter over one ioredis instance), the competitor on the cases of that larger contract
  (batches, streams), used through the same adapter methods.

The in-process memory adapter is shown for scale: it does no I/O. The competitors other than
ioredis come from \`bench/package.json\`, installed into \`bench/node_modules\` on the first run.

## Machine

${machine()}

## Command

\`\`\`
${command()}
\`\`\`

${RUNS} runs per client and case, in alternating client order; each run is ${WARMUP} s of warmup, then
${SECONDS} s measured.

## Results

${table}
## Notes

- "N in flight": N async workers, each looping \`await op()\`. A set+get pair counts as 2 ops;
  the value is a 100-byte JSON object (10 KB cases: 9,959 bytes, the same fields and 120 order
  lines), set with a 60 s TTL (\`SET … PX 60000\`; \`@igniter-js/adapter-redis\` sends \`EX 60\`).
- Median of the runs; spread = (max − min) / median of the runs' ops/s.
- CPU µs/op (process) is \`process.cpuUsage()\` (user + system, every thread of the client
  process: this includes Kindling's Rust I/O thread, libuv and V8 helper threads) over the
  measured window, divided by ops. CPU µs/op (main thread) is the JS thread alone, from
  \`/proc/self/task/<pid>/stat\` (10 ms ticks). Event-loop utilization is
  \`performance.eventLoopUtilization()\` over the same window. Redis's own CPU is not counted.
- The @igniter-js/store cases: \`mget\` of 100 keys and \`mset\` of 100 entries (100-byte values,
  each entry with a 60 s TTL) count one op per call; \`xadd\` appends the 100-byte value with
  \`{ maxLen: 10000, approximate: true }\`; \`xrange\` reads the 10 oldest entries of a 100-entry
  stream. "16 blocking reads waiting": 16 consumers loop \`xreadgroup(..., { blockMs: 500 })\` on
  a stream nobody appends to while set+get runs as in the set+get case; the official adapter
  sends those reads on its one connection, so its set+get waits behind them.
- Pub/Sub: one publisher and one subscriber (a second adapter, a \`duplicate()\` connection, or a
  second Glide client) in the same process; every message carries a sequence number and its
  send time. msg/s counts messages received during the measured window, and CPU µs/op is per
  message received; latency is publish call to callback. Backlog is messages published
  (acknowledged by Redis) but not yet delivered to the callback, sampled after each publish;
  event-loop delay is \`monitorEventLoopDelay()\` over the measured window. The 256 in-flight
  publishes do not bound the backlog: Redis acknowledges a publish before the subscriber has
  read the message.
- With 1 in flight every op is a round trip between threads that wait on each other (and for
  Kindling, its I/O thread too), so the figure depends on where the scheduler puts them: on a
  small VM it can change by 2× or more from run to run. Look at the spread before the ratio.
- The machine is small: redis-server, the Node.js main thread and Kindling's I/O thread share
  ${tryRun('nproc', [])} CPUs, so figures are load-dependent; compare the ratio more than absolute numbers.
- The memory adapter answers inside the call, so its loops never wait on I/O; it measures
  the JS and native call overhead only.
- Pub/Sub p99 latency is far higher for Kindling in this case: the publisher runs in the same
  process and is not slowed by delivery; Kindling acknowledges publishes faster than the one
  JS thread delivers the messages, so a backlog builds up, where ioredis does both on one
  thread and paces itself. Nothing is lost or reordered.
- valkey-glide's "out of order": Glide does not send one client's concurrent commands in call
  order. Checked apart from the harness: Glide publishing to an ioredis subscriber arrived ~15 %
  out of order, ioredis publishing to a Glide subscriber in order. The harness reports it for
  Glide but does not count it as a failure.
${issues.length ? `\n## Problems seen in this run\n\n${issues.join('\n')}\n` : ''}`
}

// --- main --------------------------------------------------------------------------------

async function main() {
  if (!(SECONDS > 0) || !Number.isInteger(RUNS) || RUNS < 1) throw new Error('BENCH_SECONDS must be > 0 and BENCH_RUNS an integer ≥ 1')
  if (SELECTED.length === 0) throw new Error(`BENCH_CASES and BENCH_CLIENTS match none of ${CASES.map((c) => c.id).join(', ')} / ${ALL_CLIENTS.join(', ')}`)
  installCompetitors()
  if (PLACEMENT && !CLIENT_CPU) throw new Error('BENCH_PLACEMENT is same or cross')
  if (CLUSTER && (PLACEMENT || WRITE)) throw new Error('BENCH_TOPOLOGY=cluster takes neither BENCH_PLACEMENT nor --write')
  const redis = CLUSTER ? await startCluster() : await startRedis()
  if (PLACEMENT) execFileSync('taskset', ['-a', '-p', '-c', SERVER_CPU, String(redis.process.pid)], { stdio: 'ignore' })
  const results = new Map()
  try {
    for (const c of SELECTED) {
      for (let run = 0; run < RUNS; run++) {
        const order = run % 2 === 0 ? c.clients : [...c.clients].reverse()
        for (const client of order) {
          const key = `${c.id}/${client}`
          process.stderr.write(`${key} run ${run + 1}/${RUNS}: `)
          const result = await runChild({ client, case: c.id, url: redis.url, seeds: redis.seeds, seconds: SECONDS, warmup: WARMUP })
          process.stderr.write(result.error ? `FAILED: ${result.error.split('\n')[0]}\n` : `${int(result.opsPerSec)} ${c.unit}\n`)
          if (!results.has(key)) results.set(key, [])
          results.get(key).push(result)
        }
      }
    }
  } finally {
    await redis.stop()
  }
  const summaries = new Map([...results].map(([key, runs]) => [key, summarize(runs)]))
  const table = tables(summaries)
  const issues = problems(results, summaries)
  process.stdout.write(`\n${table}${issues.length ? `\nProblems:\n${issues.join('\n')}\n` : ''}`)
  if (WRITE) {
    // The hand-written record of levers, from its heading on, survives a rewrite.
    const file = path.join(ROOT, 'BENCHMARKS.md')
    const previous = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : ''
    const levers = previous.indexOf(LEVERS_HEADING)
    fs.writeFileSync(file, benchmarksMarkdown(table, issues) + (levers >= 0 ? `\n${previous.slice(levers)}` : ''))
  }
  const failed = [...summaries].some(([key, s]) => s.failed || s.lost || (s.reordered && !UNORDERED.has(key.split('/')[1])))
  process.exitCode = failed ? 1 : 0
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
