'use strict'

// A Redis Cluster: masters and their replicas, each a real redis-server process on a free
// loopback port, stopped by pid. Made by `redis-cli --cluster create`, like a real one. Every
// file the nodes write (nodes.conf, the RDB a replica loads) goes in a directory of the
// cluster's own, one subdirectory per node, never in the working directory.

const { execFile, execFileSync } = require('node:child_process')
const { once } = require('node:events')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { performance } = require('node:perf_hooks')
const { promisify } = require('node:util')
const { RedisServer } = require('./redis-server.js')

const run = promisify(execFile)
const SLOTS = 16384
// A node's cluster bus listens on its port + 10000 (Redis's default).
const BUS_OFFSET = 10000
// A query of the helper's own (not a test's) gives up after this long: a SIGSTOPped node
// accepts connections but never answers.
const QUERY_TIMEOUT_MS = 2000
// The node timeout while the cluster forms (see startCluster).
const FORMING_NODE_TIMEOUT_MS = 500
const directories = new Set()

// ---------------------------------------------------------------------------------------
// Key slots: CRC16-XMODEM (polynomial 0x1021, initial value 0) of the key's bytes, or of its
// hash tag (between the first `{` and the first `}` after it, when not empty), mod 16384.

const CRC16_TABLE = (() => {
  const table = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let crc = i << 8
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
    table[i] = crc
  }
  return table
})()

function crc16(bytes, start, end) {
  let crc = 0
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ bytes[i]) & 0xff]
  return crc
}

/** The slot of `key` (a string, sent as UTF-8, or a Buffer / Uint8Array of its bytes). */
function keySlot(key) {
  const bytes = Buffer.isBuffer(key) ? key
    : key instanceof Uint8Array ? Buffer.from(key.buffer, key.byteOffset, key.byteLength)
    : Buffer.from(String(key), 'utf8')
  let start = 0
  let end = bytes.length
  const open = bytes.indexOf(0x7b) // {
  if (open >= 0) {
    const close = bytes.indexOf(0x7d, open + 1) // }
    if (close > open + 1) {
      start = open + 1
      end = close
    }
  }
  return crc16(bytes, start, end) % SLOTS
}

// ---------------------------------------------------------------------------------------
// A one-shot RESP2 query, for the helper's polling: much cheaper than a redis-cli process,
// and bounded in time. Bulk strings come back as UTF-8 strings, error replies as rejections.

function parseReply(buffer, offset) {
  const lineEnd = buffer.indexOf('\r\n', offset)
  if (lineEnd < 0) return null
  const type = String.fromCharCode(buffer[offset])
  const line = buffer.toString('utf8', offset + 1, lineEnd)
  const next = lineEnd + 2
  switch (type) {
    case '+':
      return { value: line, next }
    case '-':
      return { value: new Error(line), next }
    case ':':
      return { value: Number(line), next }
    case '$': {
      const length = Number(line)
      if (length < 0) return { value: null, next }
      if (buffer.length < next + length + 2) return null
      return { value: buffer.toString('utf8', next, next + length), next: next + length + 2 }
    }
    case '*': {
      const count = Number(line)
      if (count < 0) return { value: null, next }
      const items = []
      let at = next
      for (let i = 0; i < count; i++) {
        const item = parseReply(buffer, at)
        if (!item) return null
        items.push(item.value)
        at = item.next
      }
      return { value: items, next: at }
    }
    default:
      throw new Error(`unexpected RESP type ${JSON.stringify(type)}`)
  }
}

function query(port, args, { timeoutMs = QUERY_TIMEOUT_MS } = {}) {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0)
    let settled = false
    const socket = net.connect({ host: '127.0.0.1', port })
    const finish = (error, value) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      error ? reject(error) : resolve(value)
    }
    const timer = setTimeout(() => finish(new Error(`127.0.0.1:${port} did not answer ${args[0]} within ${timeoutMs} ms`)), timeoutMs)
    socket.on('error', (error) => finish(error))
    socket.on('close', () => finish(new Error(`127.0.0.1:${port} closed the connection before answering ${args[0]}`)))
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk])
      let reply
      try {
        reply = parseReply(buffer, 0)
      } catch (error) {
        return finish(error)
      }
      if (reply) reply.value instanceof Error ? finish(reply.value) : finish(null, reply.value)
    })
    socket.write(`*${args.length}\r\n` + args.map((arg) => `$${Buffer.byteLength(String(arg))}\r\n${arg}\r\n`).join(''))
  })
}

// ---------------------------------------------------------------------------------------
// Ports: a node needs its port and its port + 10000 (cluster bus). All of them are chosen
// together, each held by a listener until every one is chosen, so no two nodes share one;
// from outside the kernel's ephemeral range where possible, so an outgoing connection or
// another helper's port-0 listener cannot take one between its release and the node's bind.

function ephemeralRange() {
  try {
    const [low, high] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
    if (low > 0 && high >= low) return [low, high]
  } catch {}
  return process.platform === 'linux' ? [32768, 60999] : [49152, 65535]
}

function candidatePorts() {
  const [low, high] = ephemeralRange()
  const outside = (port) => port < low || port > high
  const all = []
  for (let port = 1024; port + BUS_OFFSET <= 65535; port++) if (port !== 6379) all.push(port)
  const preferred = all.filter((port) => port >= 10000 && outside(port) && outside(port + BUS_OFFSET))
  return preferred.length >= 1000 ? preferred : all
}

async function hold(port) {
  const server = net.createServer()
  try {
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
    return server
  } catch {
    server.close()
    return null
  }
}

async function pickPorts(count) {
  const candidates = candidatePorts()
  const held = []
  const ports = []
  try {
    for (let attempts = 0; ports.length < count; attempts++) {
      if (attempts > 1000) throw new Error(`no ${count} free port pairs (port, port + ${BUS_OFFSET}) found`)
      const port = candidates[Math.floor(Math.random() * candidates.length)]
      if (ports.includes(port) || ports.includes(port - BUS_OFFSET) || ports.includes(port + BUS_OFFSET)) continue
      const data = await hold(port)
      if (!data) continue
      const bus = await hold(port + BUS_OFFSET)
      if (!bus) {
        data.close()
        continue
      }
      held.push(data, bus)
      ports.push(port)
    }
    return ports
  } finally {
    await Promise.all(held.map((server) => new Promise((resolve) => server.close(resolve))))
  }
}

// ---------------------------------------------------------------------------------------
// Liveness: a node is live while its process runs and is not stopped (SIGSTOP).

function processState(pid) {
  if (fs.existsSync('/proc/self/stat')) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0]
    } catch {
      return 'X'
    }
  }
  try {
    return execFileSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).trim()[0] ?? 'X'
  } catch {
    return 'X'
  }
}

function running(server) {
  const child = server.process
  return Boolean(child) && child.exitCode === null && child.signalCode === null
}

function isLive(server) {
  return running(server) && !/^[TtZX]/.test(processState(server.process.pid))
}

// ---------------------------------------------------------------------------------------
// CLUSTER NODES / CLUSTER SLOTS

/** CLUSTER NODES as `{ id, port, flags, masterId, slots: [[from, to], ...] }`. */
function parseClusterNodes(text) {
  return text.trim().split('\n').filter(Boolean).map((line) => {
    const [id, address, flags, masterId, , , , , ...slots] = line.split(' ')
    return {
      id,
      port: Number(address.split('@')[0].split(':').pop()),
      flags: new Set(flags.split(',')),
      masterId: masterId === '-' ? null : masterId,
      // Importing / migrating markers ([slot-<-id], [slot->-id]) are not ownership.
      slots: slots.filter((range) => !range.startsWith('[')).map((range) => {
        const [from, to = from] = range.split('-').map(Number)
        return [from, to]
      }),
    }
  })
}

/** What every node must agree on in CLUSTER NODES: roles, masters, failures, slots. */
function normalizeNodes(text) {
  return parseClusterNodes(text)
    .map(({ id, port, flags, masterId, slots }) =>
      [port, id, flags.has('master') ? 'master' : flags.has('slave') ? 'slave' : '?', masterId ?? '-', flags.has('fail') ? 'fail' : '', slots.join(',')].join(' '))
    .sort()
}

/** CLUSTER SLOTS as sorted `{ from, to, master: 'ip:port:id', replicas: ['ip:port:id', ...] }`. */
function normalizeSlots(reply) {
  const endpoint = ([ip, port, id]) => `${ip}:${port}:${id}`
  return reply
    .map(([from, to, master, ...replicas]) => ({ from, to, master: endpoint(master), replicas: replicas.map(endpoint).sort() }))
    .sort((a, b) => a.from - b.from)
}

// ---------------------------------------------------------------------------------------

async function startNodes(dir, count, nodeTimeoutMs) {
  for (let attempt = 1; ; attempt++) {
    const ports = await pickPorts(count)
    const nodes = ports.map((port) => {
      const nodeDir = path.join(dir, String(port))
      fs.mkdirSync(nodeDir)
      return new RedisServer(port, [
        '--cluster-enabled', 'yes',
        '--cluster-config-file', path.join(nodeDir, 'nodes.conf'),
        '--cluster-node-timeout', String(nodeTimeoutMs),
        '--dir', nodeDir,
        // No diskless-sync delay (5 s by default): a replica holds its master's data at once.
        '--repl-diskless-sync-delay', '0',
      ])
    })
    const results = await Promise.allSettled(nodes.map((node) => node.start()))
    const failed = results.find((result) => result.status === 'rejected')
    if (!failed) return nodes
    await Promise.all(nodes.map((node) => node.stop().catch(() => {})))
    for (const port of ports) fs.rmSync(path.join(dir, String(port)), { recursive: true, force: true })
    // Taken between its release and the bind: choose again.
    if (attempt < 3 && /Address already in use/.test(failed.reason?.message)) continue
    throw failed.reason
  }
}

async function startCluster({ masters = 3, replicasPerMaster = 1, nodeTimeoutMs = 2000 } = {}) {
  if (masters < 3) throw new Error('redis-cli --cluster create needs at least 3 masters')
  const began = performance.now()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-cluster-'))
  directories.add(dir)
  let nodes = []
  try {
    nodes = await startNodes(dir, masters * (1 + replicasPerMaster), nodeTimeoutMs)
    const cluster = makeCluster(nodes, dir)
    // A shorter node timeout while the cluster forms, for faster gossip: each node pings
    // every other at least every half node timeout, and with 2 s the nodes often do not all
    // know each other when redis-cli first checks, after 1 s (it then sleeps another second),
    // nor learn for up to a second more which nodes are replicas. The timeout asked for is set
    // back once the cluster is healthy; it is also the one on the command line, for a node a
    // test restarts. (Masters cannot say cluster_state:ok before 2 s after their start
    // anyway: Redis's CLUSTER_WRITABLE_DELAY.)
    const formingTimeoutMs = Math.min(nodeTimeoutMs, FORMING_NODE_TIMEOUT_MS)
    if (formingTimeoutMs !== nodeTimeoutMs) await setNodeTimeout(nodes, formingTimeoutMs)
    const started = performance.now()
    try {
      await run('redis-cli', ['--cluster', 'create', ...nodes.map((node) => `127.0.0.1:${node.port}`),
        '--cluster-replicas', String(replicasPerMaster), '--cluster-yes'], { timeout: 60000 })
    } catch (error) {
      throw new Error(`redis-cli --cluster create failed: ${error.message}\n${error.stdout ?? ''}${error.stderr ?? ''}`)
    }
    const created = performance.now()
    // CLUSTER SLOTS lists a replica only once its replication offset is not 0, and on a new
    // cluster it stays 0 until the first write (or the master's PING to its replicas, every
    // 10 s). A FLUSHALL of the (empty) masters, once every replica is attached, moves it.
    const expected = await settleReplicas(nodes, masters * replicasPerMaster)
    await Promise.all(expected.masters.map((port) => query(port, ['FLUSHALL'])))
    const flushed = performance.now()
    await cluster.waitHealthy({ timeoutMs: 30000 })
    const [masterCount, replicaCount] = [(await cluster.masters()).length, (await cluster.replicas()).length]
    if (masterCount !== masters || replicaCount !== masters * replicasPerMaster) {
      throw new Error(`cluster made with ${masterCount} masters and ${replicaCount} replicas, not ${masters} and ${masters * replicasPerMaster}`)
    }
    if (formingTimeoutMs !== nodeTimeoutMs) await setNodeTimeout(nodes, nodeTimeoutMs)
    const done = performance.now()
    cluster.startupMs = {
      total: Math.round(done - began),
      nodes: Math.round(started - began),
      create: Math.round(created - started),
      replicas: Math.round(flushed - created),
      healthy: Math.round(done - flushed),
    }
    return cluster
  } catch (error) {
    await Promise.all(nodes.map((node) => stopNode(node)))
    fs.rmSync(dir, { recursive: true, force: true })
    directories.delete(dir)
    throw error
  }
}

function setNodeTimeout(nodes, ms) {
  return Promise.all(nodes.map((node) => query(node.port, ['CONFIG', 'SET', 'cluster-node-timeout', String(ms)])))
}

// Waits until `count` replicas are attached (each master with replicas lists them as
// connected, so it keeps a replication backlog), and returns the masters' ports.
async function settleReplicas(nodes, count, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const infos = await Promise.all(nodes.map((node) => query(node.port, ['INFO', 'replication']).catch(() => '')))
    const masters = nodes.filter((node, i) => /^role:master\r?$/m.test(infos[i])).map((node) => node.port)
    const attached = infos.reduce((sum, info) => sum + Number(info.match(/^connected_slaves:(\d+)/m)?.[1] ?? 0), 0)
    if (attached === count && masters.length === nodes.length - count) return { masters }
    if (Date.now() > deadline) throw new Error(`${attached} of ${count} replicas attached within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

async function stopNode(node) {
  if (running(node)) {
    try {
      process.kill(node.process.pid, 'SIGCONT')
    } catch {}
  }
  await node.stop().catch(() => {})
}

function makeCluster(nodes, dir) {
  const byPort = new Map(nodes.map((node) => [node.port, node]))
  const live = () => nodes.filter(isLive)

  // The reply of the first live node that answers.
  async function ask(args) {
    let lastError = new Error('no live node')
    for (const node of live()) {
      try {
        return await query(node.port, args)
      } catch (error) {
        lastError = error
      }
    }
    throw lastError
  }

  // Nodes in `role` as the cluster sees it now; a node the cluster has marked as failed
  // (`fail`) is left out, as is one still in handshake or without an address.
  async function byRole(role) {
    return parseClusterNodes(await ask(['CLUSTER', 'NODES']))
      .filter(({ flags }) => flags.has(role) && !flags.has('fail') && !flags.has('handshake') && !flags.has('noaddr'))
      .map(({ port }) => byPort.get(port))
      .filter(Boolean)
      .sort((a, b) => a.port - b.port)
  }

  // Why the cluster is not healthy now, or null when it is.
  async function unhealthy() {
    const nodesNow = live()
    if (nodesNow.length === 0) return 'no live node'
    let reports
    try {
      reports = await Promise.all(nodesNow.map(async (node) => {
        const [info, topology, slots, replication] = await Promise.all([
          query(node.port, ['CLUSTER', 'INFO']),
          query(node.port, ['CLUSTER', 'NODES']),
          query(node.port, ['CLUSTER', 'SLOTS']),
          query(node.port, ['INFO', 'replication']),
        ])
        return { node, info, topology: normalizeNodes(topology), slots: normalizeSlots(slots), replication }
      }))
    } catch (error) {
      return error.message
    }
    for (const { node, info } of reports) {
      if (!/^cluster_state:ok\r?$/m.test(info)) return `${node.port}: ${info.match(/^cluster_state:.*$/m)?.[0].trim()}`
    }
    const [first] = reports
    for (const { node, topology, slots } of reports) {
      if (JSON.stringify(topology) !== JSON.stringify(first.topology)) return `${node.port} and ${first.node.port} disagree on CLUSTER NODES`
      if (JSON.stringify(slots) !== JSON.stringify(first.slots)) return `${node.port} and ${first.node.port} disagree on CLUSTER SLOTS`
    }
    const livePorts = new Set(nodesNow.map((node) => node.port))
    const listed = new Set()
    for (const { master, replicas } of first.slots) {
      const port = Number(master.split(':')[1])
      if (!livePorts.has(port)) return `slots served by ${port}, which is not live`
      for (const replica of replicas) listed.add(Number(replica.split(':')[1]))
    }
    for (const { node, replication } of reports) {
      if (!/^role:slave\r?$/m.test(replication)) continue
      if (!/^master_link_status:up\r?$/m.test(replication)) return `${node.port}: replica with its master link down`
      if (!listed.has(node.port)) return `${node.port}: replica not yet in CLUSTER SLOTS`
    }
    return null
  }

  const cluster = {
    nodes,
    seeds: nodes.map((node) => node.url),
    /** The directory holding every node's files. */
    dir,
    /** Filled in by startCluster: how long the start took, in ms, and its parts. */
    startupMs: null,
    keySlot,
    /** The node listening on `port`. */
    node(port) {
      return byPort.get(Number(port))
    },
    /** The masters now, by port (from CLUSTER NODES of a live node; failed ones left out). */
    masters() {
      return byRole('master')
    },
    /** The replicas now, by port (from CLUSTER NODES of a live node; failed ones left out). */
    replicas() {
      return byRole('slave')
    },
    /** Runs `redis-cli -c` (following redirections) on a live node; its output, trimmed. */
    async cli(...args) {
      const [node] = live()
      if (!node) throw new Error('no live node')
      return node.cli('-c', ...args)
    },
    /** The node's cluster id. */
    async nodeId(node) {
      return (await node.cli('CLUSTER', 'MYID')).trim()
    },
    /**
     * Moves `slot` from master `from` to master `to` as a resharding tool does: IMPORTING on
     * `to`, MIGRATING on `from`, MIGRATE of `keys`, then SETSLOT NODE on both and every master.
     */
    async moveSlot(slot, from, to, keys = []) {
      const [fromId, toId] = [await cluster.nodeId(from), await cluster.nodeId(to)]
      await to.cli('CLUSTER', 'SETSLOT', String(slot), 'IMPORTING', fromId)
      await from.cli('CLUSTER', 'SETSLOT', String(slot), 'MIGRATING', toId)
      if (keys.length > 0) await from.cli('MIGRATE', '127.0.0.1', String(to.port), '', '0', '5000', 'KEYS', ...keys)
      for (const node of [to, from, ...(await cluster.masters())]) await node.cli('CLUSTER', 'SETSLOT', String(slot), 'NODE', toId)
    },
    /** A master with a replica attached now, or undefined. */
    async masterWithReplica() {
      for (const master of await cluster.masters()) {
        if (/^connected_slaves:[1-9]/m.test(await master.cli('INFO', 'replication'))) return master
      }
      return undefined
    },
    /** Clients blocked on a command (a blocking read) on `node`. */
    async blockedOn(node) {
      return Number(/blocked_clients:(\d+)/.exec(await query(node.port, ['INFO', 'clients']))[1])
    },
    /** Clients blocked on a command (a blocking read), summed over the live nodes. */
    async blockedClients() {
      const infos = await Promise.all(live().map((node) => query(node.port, ['INFO', 'clients'])))
      return infos.reduce((sum, info) => sum + Number(/blocked_clients:(\d+)/.exec(info)[1]), 0)
    },
    /** The master serving `slot` now (from CLUSTER SLOTS of a live node), or undefined. */
    async slotOwner(slot) {
      const range = normalizeSlots(await ask(['CLUSTER', 'SLOTS'])).find(({ from, to }) => from <= slot && slot <= to)
      return range && byPort.get(Number(range.master.split(':')[1]))
    },
    /**
     * Resolves once every live node (running, not stopped) says cluster_state:ok, they all
     * return the same CLUSTER SLOTS (replicas in any order), every slot is served by a live
     * node, and every live replica's master link is up.
     */
    async waitHealthy({ timeoutMs = 30000, everyMs = 50 } = {}) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const why = await unhealthy()
        if (why === null) return
        if (Date.now() > deadline) throw new Error(`cluster not healthy within ${timeoutMs} ms: ${why}`)
        await new Promise((resolve) => setTimeout(resolve, everyMs))
      }
    },
    /** Stops every node (continuing any stopped one first) and removes the directory. */
    async stop() {
      await Promise.all(nodes.map((node) => stopNode(node)))
      fs.rmSync(dir, { recursive: true, force: true })
      directories.delete(dir)
    },
  }
  return cluster
}

// A cluster left running by a failed test: redis-server.js kills its processes at exit
// (its handler is registered first); its directory goes too.
process.once('exit', () => {
  for (const dir of directories) {
    try {
      fs.rmSync(dir, { recursive: true, force: true })
    } catch {}
  }
})

module.exports = { startCluster, keySlot }
