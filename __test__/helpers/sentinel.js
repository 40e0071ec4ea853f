'use strict'

// A Sentinel setup: a master, its replicas and the sentinels that watch them, each a real
// process on a free loopback port, stopped by pid. Short detection and failover times, so a
// failover fits in a test.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { startRedis, freePort, RedisServer } = require('./redis-server.js')
const { waitUntil } = require('./wait.js')

const MASTER_NAME = 'mymaster'

async function startSentinelSetup({ replicas = 1, sentinels = 3, downAfterMs = 1000, failoverTimeoutMs = 5000, sentinelPassword = null } = {}) {
  // Replication writes RDB files and a sentinel rewrites its config file: all of it goes in a
  // directory of the setup's own, never in the working directory, where any later
  // redis-server started there would load it.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-sentinel-'))
  // No diskless-sync delay (5 s by default): a replica holds the data from the start, so a
  // failover soon after start-up promotes a replica that has it.
  const master = await startRedis('--dir', dir, '--repl-diskless-sync-delay', '0')
  const replicaServers = []
  for (let i = 0; i < replicas; i++) {
    const replicaDir = fs.mkdtempSync(path.join(dir, 'replica-'))
    replicaServers.push(await startRedis('--dir', replicaDir, '--repl-diskless-sync-delay', '0', '--replicaof', '127.0.0.1', String(master.port)))
  }
  const sentinelServers = []
  for (let i = 0; i < sentinels; i++) {
    const port = await freePort()
    const config = path.join(dir, `sentinel-${port}.conf`)
    fs.writeFileSync(config, [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${MASTER_NAME} 127.0.0.1 ${master.port} ${Math.floor(sentinels / 2) + 1}`,
      `sentinel down-after-milliseconds ${MASTER_NAME} ${downAfterMs}`,
      `sentinel failover-timeout ${MASTER_NAME} ${failoverTimeoutMs}`,
      `sentinel parallel-syncs ${MASTER_NAME} 1`,
      ...(sentinelPassword ? [`requirepass ${sentinelPassword}`] : []),
      '',
    ].join('\n'))
    const sentinel = new RedisServer(port, [], config)
    if (sentinelPassword) sentinel.args.push('--requirepass', sentinelPassword)
    sentinelServers.push(await sentinel.start())
  }
  const setup = {
    masterName: MASTER_NAME,
    master,
    replicas: replicaServers,
    sentinels: sentinelServers,
    sentinelUrls: sentinelServers.map((s) => s.url),
    /** The master's port as the first sentinel that answers reports it. */
    async masterPort() {
      for (const sentinel of sentinelServers) {
        const reply = await sentinel.cli('SENTINEL', 'get-master-addr-by-name', MASTER_NAME).catch(() => '')
        const port = Number(reply.split('\n')[1])
        if (port) return port
      }
      return null
    },
    /** The data node (master or replica) listening on `port`. */
    node(port) {
      return [master, ...replicaServers].find((server) => server.port === port)
    },
    async stop() {
      for (const server of [...sentinelServers, ...replicaServers, master]) {
        if (server.process && server.process.signalCode === null && server.process.exitCode === null) {
          try {
            process.kill(server.process.pid, 'SIGCONT')
          } catch {}
        }
        await server.stop()
      }
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
  // Ready when every replica has synced and every sentinel knows them all and the others.
  await waitUntil(async () => ((await master.cli('INFO', 'replication')).match(/state=online/g) ?? []).length === replicas, { what: 'replicas in sync' })
  for (const sentinel of sentinelServers) {
    await waitUntil(async () => {
      const known = async (...command) => (await sentinel.cli(...command).catch(() => '')).split('\n').filter((line) => line === 'name').length
      return (await known('SENTINEL', 'replicas', MASTER_NAME)) === replicas && (await known('SENTINEL', 'sentinels', MASTER_NAME)) === sentinels - 1
    }, { what: 'sentinels aware of each other', timeoutMs: 20000 })
  }
  return setup
}

module.exports = { startSentinelSetup }
