'use strict'

// What a client's callers see while a master is failed over: a steady load of
// set/get/increment (one chain of calls, each awaited) and a subscription, through a master
// switched by a failover command, SIGKILLed, or SIGSTOPped (hung without closing). For each:
// the calls that failed and with what, the window from the event to the first call issued
// after it that succeeded, gets that returned anything but the last acknowledged set, calls
// slower than `commandTimeout`, and whether the subscription delivers again.
//
//   node bench/failover.js            env FAILOVER_TOPOLOGY (sentinel, or cluster),
//                                     FAILOVER_CLIENTS (kindling,ioredis), FAILOVER_EVENTS (all)
//
// sentinel: a master, one replica, three sentinels (down-after 1000 ms, failover-timeout
// 5000 ms); the failover is SENTINEL FAILOVER.
// cluster: three masters with a replica each (cluster-node-timeout 2000 ms), a fresh one per
// client and event; the failover is CLUSTER FAILOVER on the victim's replica. The victim is
// the master the subscriber is connected to, so the event reaches the subscription too (when
// ioredis's subscriber sits on a replica, that replica's master: the table says which); the
// load's keys and the channel published are in the victim's slots.
// Every server is started here on free loopback ports and stopped by pid.

const { performance } = require('node:perf_hooks')
const { startSentinelSetup } = require('../__test__/helpers/sentinel.js')
const { startCluster, keySlot } = require('../__test__/helpers/cluster.js')
const { waitUntil } = require('../__test__/helpers/wait.js')

const COMMAND_TIMEOUT_MS = 5000
const CLUSTER_NODE_TIMEOUT_MS = 2000
const TOPOLOGY = process.env.FAILOVER_TOPOLOGY ?? 'sentinel'
const EVENTS = (process.env.FAILOVER_EVENTS ?? 'failover,kill,stop').split(',')
const CLIENTS = (process.env.FAILOVER_CLIENTS ?? 'kindling,ioredis').split(',')
// How long the load runs after the switch; long enough for a SIGSTOPped master to be voted down.
const AFTER_MS = 12000
const SIGNALS = { kill: 'SIGKILL', stop: 'SIGSTOP' }

// ---------------------------------------------------------------------------------------
// The clients, each behind the same five calls.

// ioredis as its users configure it, defaults otherwise, with the same commandTimeout as the
// other clients; a connection of its own for the subscription, as ioredis requires.
function ioredisClient(redis, subscriber) {
  // As an app would: its errors are the calls' own, counted from their rejections.
  for (const connection of [redis, subscriber]) connection.on('error', () => {})
  return {
    set: (key, value) => redis.set(key, JSON.stringify(value)),
    get: async (key) => JSON.parse(await redis.get(key)),
    increment: (key) => redis.incr(key),
    publish: (channel, message) => redis.publish(channel, JSON.stringify(message)),
    subscribe: async (channel, onMessage) => {
      subscriber.on('message', (from, text) => from === channel && onMessage(JSON.parse(text)))
      await subscriber.subscribe(channel)
    },
    close: () => {
      redis.disconnect()
      subscriber.disconnect()
    },
  }
}

// Kindling with the same commandTimeout.
function kindlingClient(options) {
  const { createRedisStoreAdapter } = require('..')
  const adapter = createRedisStoreAdapter({ ...options, commandTimeout: COMMAND_TIMEOUT_MS, onError: () => {} })
  return {
    set: (key, value) => adapter.set(key, value),
    get: (key) => adapter.get(key),
    increment: (key) => adapter.increment(key),
    publish: (channel, message) => adapter.publish(channel, message),
    subscribe: (channel, onMessage) => adapter.subscribe(channel, onMessage),
    close: () => adapter.close(),
  }
}

// ---------------------------------------------------------------------------------------
// Topologies: how to start one, reach it with each client, and fail its master over.
// `channels` are subscribed first; `target` then names the keys, the channel to publish on,
// the event and how to tell that the topology has switched.

const sentinelTopology = {
  switchedLabel: 'sentinels switched (ms)',
  start: () => startSentinelSetup(),
  stop: (setup) => setup.stop(),
  clients: {
    kindling: (setup) => kindlingClient({ sentinel: { sentinels: setup.sentinelUrls, masterName: setup.masterName } }),
    ioredis: (setup) => {
      const Redis = require('ioredis')
      const options = {
        sentinels: setup.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
        name: setup.masterName,
        commandTimeout: COMMAND_TIMEOUT_MS,
      }
      return ioredisClient(new Redis(options), new Redis(options))
    },
  },
  channels: async () => ['failover'],
  async target(setup) {
    const oldMaster = setup.master
    return {
      key: 'key',
      counter: 'counter',
      channel: 'failover',
      fire: (event) => event === 'failover'
        ? setup.sentinels[0].cli('SENTINEL', 'FAILOVER', setup.masterName)
        : process.kill(oldMaster.process.pid, SIGNALS[event]),
      switched: async () => (await setup.masterPort()) !== oldMaster.port,
    }
  },
}

// A fresh cluster per client and event keeps them alike: each client meets a healthy cluster
// with a replica behind every master, and no event's aftermath (a stopped master continued
// as a replica) reaches the next; `stop` continues a SIGSTOPped node before stopping it.
const clusterTopology = {
  switchedLabel: 'cluster switched (ms)',
  start: () => startCluster({ nodeTimeoutMs: CLUSTER_NODE_TIMEOUT_MS }),
  stop: (cluster) => cluster.stop(),
  clients: {
    kindling: (cluster) => kindlingClient({ cluster: { nodes: cluster.seeds } }),
    ioredis: (cluster) => {
      const Redis = require('ioredis')
      const options = { redisOptions: { commandTimeout: COMMAND_TIMEOUT_MS } }
      return ioredisClient(new Redis.Cluster(cluster.seeds, options), new Redis.Cluster(cluster.seeds, options))
    },
  },
  // One channel in each master's slots: whichever master ends up the victim, one of them is
  // published through it, as Kindling sends a PUBLISH to its channel's slot.
  channels: async (cluster) => Promise.all((await cluster.masters()).map((master) => nameOn(cluster, master, 'failover:'))),
  async target(cluster, channels) {
    const home = await subscriberNode(cluster, channels[0])
    const victim = (await cluster.masters()).includes(home) ? home : await masterOf(cluster, home)
    const replica = await replicaOf(cluster, victim)
    const key = await nameOn(cluster, victim, 'key:')
    return {
      key,
      counter: await nameOn(cluster, victim, 'counter:'),
      channel: await firstOn(cluster, victim, channels),
      subscriberOn: home === victim ? 'the victim' : 'the victim\'s replica',
      fire: (event) => event === 'failover' ? replica.cli('CLUSTER', 'FAILOVER') : process.kill(victim.process.pid, SIGNALS[event]),
      // As the live nodes say it, which is what a client reading the slot map can learn.
      switched: async () => ![undefined, victim].includes(await cluster.slotOwner(keySlot(key))),
    }
  },
}

const TOPOLOGIES = { sentinel: sentinelTopology, cluster: clusterTopology }

// The first of `names` whose slot `master` serves.
async function firstOn(cluster, master, names) {
  for (const name of names) if ((await cluster.slotOwner(keySlot(name))) === master) return name
  throw new Error(`none of ${names.join(', ')} is served by ${master.port}`)
}

// A name `${prefix}${n}` whose slot `master` serves.
async function nameOn(cluster, master, prefix) {
  for (let n = 0; ; n++) if ((await cluster.slotOwner(keySlot(`${prefix}${n}`))) === master) return `${prefix}${n}`
}

// In classic Pub/Sub a node counts only its own subscribers: the one counting ours is where
// the client's subscriber connection is.
async function subscriberNode(cluster, channel) {
  let home
  await waitUntil(async () => {
    const counts = await Promise.all(cluster.nodes.map((node) => node.numsub(channel)))
    home = cluster.nodes.find((node, i) => counts[i] !== '0')
    return home !== undefined
  }, { what: `a node counting the subscriber of ${channel}` })
  return home
}

async function masterOf(cluster, replica) {
  return cluster.node(/^master_port:(\d+)/m.exec(await replica.cli('INFO', 'replication'))[1])
}

async function replicaOf(cluster, master) {
  for (const replica of await cluster.replicas()) if ((await masterOf(cluster, replica)) === master) return replica
  throw new Error(`${master.port} has no replica`)
}

// ---------------------------------------------------------------------------------------
// The measure, the same for every topology.

// Runs `call`, recording when it was issued and settled and how it failed.
function recorder(calls) {
  return async (name, call) => {
    const record = { name, issued: performance.now(), settled: 0, error: null }
    calls.push(record)
    try {
      return await call()
    } catch (err) {
      record.error = err
      return undefined
    } finally {
      record.settled = performance.now()
    }
  }
}

async function measure(topology, setup, clientName, event) {
  const client = topology.clients[clientName](setup)
  const calls = []
  const messages = []
  let lastAcknowledged = null
  // A set that failed may still have run: until the next acknowledged one, a get may see it.
  let mayHaveRun = null
  let wrong = 0
  const channels = await topology.channels(setup)
  for (const channel of channels) await client.subscribe(channel, () => messages.push(performance.now()))
  const target = await topology.target(setup, channels)
  const timed = recorder(calls)
  let running = true
  const load = (async () => {
    for (let n = 0; running; n++) {
      await timed('set', () => client.set(target.key, n))
      if (calls.at(-1).error === null) {
        lastAcknowledged = n
        mayHaveRun = null
      } else {
        mayHaveRun = n
      }
      const value = await timed('get', () => client.get(target.key))
      if (calls.at(-1).error === null && value !== lastAcknowledged && value !== mayHaveRun) wrong++
      await timed('increment', () => client.increment(target.counter))
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()
  const publisher = (async () => {
    while (running) {
      await client.publish(target.channel, { at: performance.now() }).catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })()
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const eventAt = performance.now()
  await target.fire(event)
  await waitUntil(target.switched, { what: 'the switch', timeoutMs: 30000 })
  const switchedAt = performance.now()
  await new Promise((resolve) => setTimeout(resolve, AFTER_MS))
  running = false
  const endedAt = performance.now()
  await Promise.all([load, publisher])
  await client.close()
  return { calls, messages, wrong, eventAt, switchedAt, endedAt, subscriberOn: target.subscriberOn }
}

// The longest time without one of `times` (sorted) from `from` to `to`: Infinity when none.
function longestGap(times, from, to) {
  const inside = times.filter((t) => t >= from && t <= to)
  if (inside.length === 0) return Infinity
  let longest = 0
  let last = from
  for (const t of inside) {
    longest = Math.max(longest, t - last)
    last = t
  }
  return longest
}

function summarize(clientName, event, { calls, messages, wrong, eventAt, switchedAt, endedAt, subscriberOn }) {
  const failed = calls.filter((c) => c.error)
  const firstSuccessAfter = calls.find((c) => c.issued >= eventAt && c.error === null)
  // The longest time callers went without a success: from the last success before it (or the
  // event) to the next; the end of the run does not count, only successes do.
  const successes = calls.filter((c) => c.error === null).map((c) => c.settled).sort((a, b) => a - b)
  const reasons = {}
  for (const c of failed) {
    const reason = `${c.error.code ?? c.error.name}: ${String(c.error.message).slice(0, 60)}`
    reasons[reason] = (reasons[reason] ?? 0) + 1
  }
  return {
    client: clientName,
    event,
    calls: calls.length,
    failed: failed.length,
    reasons,
    switchMs: Math.round(switchedAt - eventAt),
    windowMs: firstSuccessAfter ? Math.round(firstSuccessAfter.settled - eventAt) : null,
    longestGapMs: Math.round(longestGap(successes, eventAt, Infinity)),
    slowest: Math.round(Math.max(...calls.map((c) => c.settled - c.issued))),
    overTimeout: calls.filter((c) => c.settled - c.issued > COMMAND_TIMEOUT_MS + 100).length,
    wrong,
    messagesAfterSwitch: messages.filter((t) => t > switchedAt).length,
    // Up to the end of the run, so a subscription that never delivers again shows it.
    messageGapMs: Math.round(longestGap([...messages, endedAt], eventAt, endedAt)),
    subscriberOn,
  }
}

async function scenario(topology, clientName, event) {
  const setup = await topology.start()
  try {
    return summarize(clientName, event, await measure(topology, setup, clientName, event))
  } finally {
    await topology.stop(setup)
  }
}

function printTable(topology, rows) {
  const subscriberColumn = rows.some((r) => r.subscriberOn)
  console.log(`| client | event | calls | failed | ${topology.switchedLabel} | event to first success (ms) | longest time without a success (ms) | slowest call (ms) | over commandTimeout | wrong gets | messages after the switch | longest time without a message (ms) |${subscriberColumn ? ' subscriber on |' : ''} failures |`)
  console.log(`| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |${subscriberColumn ? ' --- |' : ''} --- |`)
  for (const r of rows) {
    const reasons = Object.entries(r.reasons).map(([reason, n]) => `${n}× ${reason}`).join('; ') || '–'
    console.log(`| ${r.client} | ${r.event} | ${r.calls} | ${r.failed} | ${r.switchMs} | ${r.windowMs ?? 'none'} | ${Number.isFinite(r.longestGapMs) ? r.longestGapMs : 'no success'} | ${r.slowest} | ${r.overTimeout} | ${r.wrong} | ${r.messagesAfterSwitch} | ${r.messageGapMs} |${subscriberColumn ? ` ${r.subscriberOn} |` : ''} ${reasons} |`)
  }
}

async function main() {
  const topology = TOPOLOGIES[TOPOLOGY]
  if (!topology) throw new Error(`FAILOVER_TOPOLOGY is sentinel or cluster, not ${TOPOLOGY}`)
  const rows = []
  for (const event of EVENTS) {
    for (const client of CLIENTS) {
      process.stderr.write(`${TOPOLOGY}: ${client} / ${event}...\n`)
      rows.push(await scenario(topology, client, event))
    }
  }
  printTable(topology, rows)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
