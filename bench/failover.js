'use strict'

// What a client's callers see while Sentinel fails a master over: a steady load of
// set/get/increment (one chain of calls, each awaited) and a subscription, through a master
// switched by SENTINEL FAILOVER, SIGKILLed, or SIGSTOPped (hung without closing). For each:
// the calls that failed and with what, the window from the event to the first call issued
// after it that succeeded, gets that returned anything but the last acknowledged set, calls
// slower than `commandTimeout`, and whether the subscription delivers again.
//
//   node bench/failover.js            env FAILOVER_CLIENTS (kindling,ioredis), FAILOVER_EVENTS (all)
//
// The setup (a master, one replica, three sentinels, down-after 1000 ms, failover-timeout
// 5000 ms) is started here on free loopback ports and stopped by pid.

const { performance } = require('node:perf_hooks')
const { startSentinelSetup } = require('../__test__/helpers/sentinel.js')
const { waitUntil } = require('../__test__/helpers/wait.js')

const COMMAND_TIMEOUT_MS = 5000
const EVENTS = (process.env.FAILOVER_EVENTS ?? 'failover,kill,stop').split(',')
const CLIENTS = (process.env.FAILOVER_CLIENTS ?? 'kindling,ioredis').split(',')
// How long the load runs after the event; long enough for a SIGSTOPped master to be voted down.
const AFTER_MS = 12000

// ioredis as its users configure it for Sentinel, defaults otherwise, with the same
// commandTimeout as the other clients.
function ioredis(setup) {
  const Redis = require('ioredis')
  const options = {
    sentinels: setup.sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })),
    name: setup.masterName,
    commandTimeout: COMMAND_TIMEOUT_MS,
  }
  const redis = new Redis(options)
  const subscriber = new Redis(options)
  // As an app would: its errors are the calls' own, counted from their rejections.
  for (const connection of [redis, subscriber]) connection.on('error', () => {})
  return {
    set: (key, value) => redis.set(key, JSON.stringify(value)),
    get: async (key) => JSON.parse(await redis.get(key)),
    increment: (key) => redis.incr(key),
    publish: (channel, message) => redis.publish(channel, JSON.stringify(message)),
    subscribe: async (channel, onMessage) => {
      subscriber.on('message', (_, text) => onMessage(JSON.parse(text)))
      await subscriber.subscribe(channel)
    },
    close: () => {
      redis.disconnect()
      subscriber.disconnect()
    },
  }
}

// Kindling through the same sentinels, with the same commandTimeout.
function kindling(setup) {
  const { createRedisStoreAdapter } = require('..')
  const adapter = createRedisStoreAdapter({
    sentinel: { sentinels: setup.sentinelUrls, masterName: setup.masterName },
    commandTimeout: COMMAND_TIMEOUT_MS,
    onError: () => {},
  })
  return {
    set: (key, value) => adapter.set(key, value),
    get: (key) => adapter.get(key),
    increment: (key) => adapter.increment(key),
    publish: (channel, message) => adapter.publish(channel, message),
    subscribe: (channel, onMessage) => adapter.subscribe(channel, onMessage),
    close: () => adapter.close(),
  }
}

const CLIENT_FACTORIES = { kindling, ioredis }

async function scenario(clientName, event) {
  const setup = await startSentinelSetup()
  const client = CLIENT_FACTORIES[clientName](setup)
  const calls = []
  let lastAcknowledged = null
  let wrong = 0
  let received = 0
  let receivedAfterSwitch = 0
  let eventAt = Infinity
  let switchedAt = Infinity
  await client.subscribe('failover', () => {
    received++
    if (performance.now() > switchedAt) receivedAfterSwitch++
  })
  const timed = async (name, call) => {
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
  let running = true
  const load = (async () => {
    for (let n = 0; running; n++) {
      const wrote = await timed('set', () => client.set('key', n))
      if (calls.at(-1).error === null) lastAcknowledged = n
      void wrote
      const value = await timed('get', () => client.get('key'))
      if (calls.at(-1).error === null && value !== lastAcknowledged) wrong++
      await timed('increment', () => client.increment('counter'))
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()
  const publisher = (async () => {
    while (running) {
      await client.publish('failover', { at: performance.now() }).catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })()
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const oldMaster = setup.master
  eventAt = performance.now()
  if (event === 'failover') await setup.sentinels[0].cli('SENTINEL', 'FAILOVER', setup.masterName)
  else process.kill(oldMaster.process.pid, event === 'kill' ? 'SIGKILL' : 'SIGSTOP')
  await waitUntil(async () => (await setup.masterPort()) !== oldMaster.port, { what: 'the switch', timeoutMs: 30000 })
  switchedAt = performance.now()
  await new Promise((resolve) => setTimeout(resolve, AFTER_MS))
  running = false
  await Promise.all([load, publisher])
  await client.close()
  await setup.stop()

  const after = calls.filter((c) => c.issued >= eventAt)
  const failed = calls.filter((c) => c.error)
  const firstSuccessAfter = after.find((c) => c.error === null)
  // The longest time callers went without a success: from the last success before it (or the
  // event) to the next.
  let longestGap = 0
  let lastSuccess = eventAt
  for (const c of [...calls].filter((c) => c.error === null && c.settled >= eventAt).sort((x, y) => x.settled - y.settled)) {
    longestGap = Math.max(longestGap, c.settled - lastSuccess)
    lastSuccess = c.settled
  }
  if (lastSuccess === eventAt) longestGap = Infinity
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
    longestGapMs: Math.round(longestGap),
    slowest: Math.round(Math.max(...calls.map((c) => c.settled - c.issued))),
    overTimeout: calls.filter((c) => c.settled - c.issued > COMMAND_TIMEOUT_MS + 100).length,
    wrong,
    messages: received,
    messagesAfterSwitch: receivedAfterSwitch,
  }
}

async function main() {
  const rows = []
  for (const event of EVENTS) {
    for (const client of CLIENTS) {
      process.stderr.write(`${client} / ${event}...\n`)
      rows.push(await scenario(client, event))
    }
  }
  console.log('| client | event | calls | failed | sentinels switched (ms) | event to first success (ms) | longest time without a success (ms) | slowest call (ms) | over commandTimeout | wrong gets | messages after the switch | failures |')
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |')
  for (const r of rows) {
    const reasons = Object.entries(r.reasons).map(([reason, n]) => `${n}× ${reason}`).join('; ') || '–'
    console.log(`| ${r.client} | ${r.event} | ${r.calls} | ${r.failed} | ${r.switchMs} | ${r.windowMs ?? 'none'} | ${Number.isFinite(r.longestGapMs) ? r.longestGapMs : 'no success'} | ${r.slowest} | ${r.overTimeout} | ${r.wrong} | ${r.messagesAfterSwitch} | ${reasons} |`)
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
