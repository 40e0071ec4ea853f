'use strict'

const { invalidArgument } = require('./errors.js')

const DEFAULT_URL = 'redis://127.0.0.1:6379'
const DEFAULT_PORT = 6379
const DEFAULT_SENTINEL_PORT = 26379
const REDIS_OPTIONS = new Set([
  'url', 'host', 'port', 'username', 'password', 'db', 'tls', 'keyPrefix',
  'connectTimeout', 'commandTimeout', 'cluster', 'sentinel', 'onError', 'maxPubSubBacklog',
  'maxBlockingConnections',
])
const MEMORY_OPTIONS = new Set(['keyPrefix', 'name', 'onError', 'maxPubSubBacklog'])
// Bytes of Pub/Sub messages that may wait in native memory for JS to take them.
const DEFAULT_BACKLOG = 64 * 1024 * 1024
const DEFAULT_BLOCKING_CONNECTIONS = 16

const isPlainObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value)

// An ioredis instance, duck-typed so that ioredis need not be installed.
const isIoredisCluster = (value) =>
  isPlainObject(value) && value.isCluster === true && Array.isArray(value.startupNodes)
const isIoredis = (value) =>
  isPlainObject(value) && typeof value.duplicate === 'function' && isPlainObject(value.options) &&
  ('host' in value.options || 'port' in value.options || 'path' in value.options || Array.isArray(value.options.sentinels))

function checkKnown(options, known, what) {
  for (const name of Object.keys(options)) {
    if (!known.has(name)) throw invalidArgument(`unknown ${what} option "${name}"; known: ${[...known].join(', ')}`)
  }
}

function optionalString(options, name) {
  const value = options[name]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'string') throw invalidArgument(`option "${name}" must be a string`)
  return value
}

function integerIn(value, name, min, max) {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidArgument(`option "${name}" must be an integer from ${min} to ${max}`)
  }
  return value
}

function milliseconds(options, name, fallback) {
  const value = options[name]
  if (value === undefined || value === null) return fallback
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw invalidArgument(`option "${name}" must be a positive number of milliseconds`)
  }
  return Math.min(Math.ceil(value), 2 ** 31 - 1)
}

function backlogOption(options) {
  const value = options.maxPubSubBacklog
  if (value === undefined || value === null) return DEFAULT_BACKLOG
  return integerIn(value, 'maxPubSubBacklog', 1, Number.MAX_SAFE_INTEGER)
}

function onErrorOption(options) {
  const onError = options.onError
  if (onError === undefined || onError === null) return undefined
  if (typeof onError !== 'function') throw invalidArgument('option "onError" must be a function')
  return onError
}

// Never echoes the URL: it may hold a password.
function parseUrl(text) {
  if (typeof text !== 'string') throw invalidArgument('the Redis URL must be a string')
  let url
  try {
    url = new URL(text)
  } catch {
    throw invalidArgument('malformed Redis URL; expected redis://[user:password@]host[:port][/db], rediss://…, or unix:///path')
  }
  const decode = (part) => {
    if (!part) return undefined
    try {
      return decodeURIComponent(part)
    } catch {
      throw invalidArgument('malformed percent-encoding in the Redis URL')
    }
  }
  const target = { username: decode(url.username), password: decode(url.password) }
  const dbParam = url.searchParams.get('db')
  switch (url.protocol) {
    case 'redis:':
    case 'rediss:': {
      if (!url.hostname) throw invalidArgument('the Redis URL has no host')
      target.host = url.hostname.replace(/^\[(.*)\]$/, '$1')
      target.port = url.port ? Number(url.port) : DEFAULT_PORT
      const path = url.pathname.replace(/^\//, '')
      if (path !== '' && !/^\d+$/.test(path)) throw invalidArgument('the Redis URL path must be a database number')
      target.db = path === '' ? Number(dbParam ?? 0) : Number(path)
      if (url.protocol === 'rediss:') target.tls = {}
      break
    }
    case 'redis+unix:':
    case 'unix:':
      if (!url.pathname || url.pathname === '/') throw invalidArgument('the unix socket URL has no path')
      target.path = decode(url.pathname)
      target.db = Number(dbParam ?? 0)
      break
    default:
      throw invalidArgument(`unsupported URL scheme "${url.protocol}"; use redis:, rediss:, redis+unix: or unix:`)
  }
  if (!Number.isInteger(target.db) || target.db < 0 || target.db > 2 ** 31 - 1) {
    throw invalidArgument('the database number must be an integer from 0 to 2147483647')
  }
  return target
}

function tlsOption(tls) {
  if (tls === undefined || tls === null || tls === false) return undefined
  if (tls === true) return {}
  if (!isPlainObject(tls)) throw invalidArgument('option "tls" must be true or an object')
  checkKnown(tls, new Set(['ca', 'cert', 'key', 'servername', 'rejectUnauthorized']), 'tls')
  const pem = (name) => {
    const value = tls[name]
    if (value === undefined || value === null) return undefined
    if (typeof value === 'string') return value
    if (Buffer.isBuffer(value)) return value.toString('utf8')
    // Several certificate authorities, as Node's tls accepts them.
    if (name === 'ca' && Array.isArray(value) && value.every((v) => typeof v === 'string' || Buffer.isBuffer(v))) {
      return value.map(String).join('\n')
    }
    throw invalidArgument(`option "tls.${name}" must be a PEM string or Buffer`)
  }
  if ((tls.cert == null) !== (tls.key == null)) {
    throw invalidArgument('options "tls.cert" and "tls.key" go together: give both or neither')
  }
  if (tls.rejectUnauthorized !== undefined && typeof tls.rejectUnauthorized !== 'boolean') {
    throw invalidArgument('option "tls.rejectUnauthorized" must be a boolean')
  }
  if (tls.servername != null && (typeof tls.servername !== 'string' || tls.servername === '')) {
    throw invalidArgument('option "tls.servername" must be a non-empty string')
  }
  return { ca: pem('ca'), cert: pem('cert'), key: pem('key'), servername: tls.servername ?? undefined, rejectUnauthorized: tls.rejectUnauthorized }
}

// One sentinel's address: `redis://host:port`, `host:port`, or ioredis's `{ host?, port? }`.
// Never echoes the address: it may hold credentials.
function nodeAddress(entry, i, list, defaultPort) {
  const where = `entry ${i + 1} of "${list}"`
  if (isPlainObject(entry)) {
    // ioredis's form, as its sentinels list holds it (it may carry a family too).
    checkKnown(entry, new Set(['host', 'port', 'family']), `${list} entry`)
    if (entry.host !== undefined && (typeof entry.host !== 'string' || entry.host === '')) throw invalidArgument(`${where}: "host" must be a non-empty string`)
    return { host: entry.host ?? 'localhost', port: entry.port === undefined ? defaultPort : integerIn(entry.port, `port of ${where}`, 1, 65535) }
  }
  if (typeof entry !== 'string' || entry === '') throw invalidArgument(`${where} must be a "redis://host:port" or "host:port" string`)
  if (/^rediss:\/\//i.test(entry)) throw invalidArgument('TLS to sentinels (rediss://) is not supported in this release; the data nodes take the "tls" option')
  const malformed = () => invalidArgument(`${where} is malformed; expected "redis://host:port" or "host:port"`)
  let url
  try {
    url = new URL(entry.includes('://') ? entry : `redis://${entry}`)
  } catch {
    throw malformed()
  }
  if (url.protocol !== 'redis:' || !url.hostname) throw malformed()
  if (url.username || url.password) {
    throw invalidArgument(`${where}: credentials go in ${list === 'sentinel.sentinels' ? '"sentinel.username" and "sentinel.password"' : '"username" and "password"'}, not in the address`)
  }
  if ((url.pathname !== '' && url.pathname !== '/') || url.search || url.hash) throw invalidArgument(`${where}: an address is host and port only`)
  const port = url.port ? Number(url.port) : defaultPort
  if (port < 1) throw malformed()
  return { host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port }
}

// A cluster's seed nodes: `redis://host:port`, `rediss://host:port` (TLS for every node),
// `host:port`, or `{ host, port }`.
function clusterOption(cluster) {
  if (!isPlainObject(cluster)) throw invalidArgument('option "cluster" must be an object: { nodes, natMap?, pubsub? }')
  checkKnown(cluster, new Set(['nodes', 'natMap', 'pubsub']), 'cluster')
  if (!Array.isArray(cluster.nodes) || cluster.nodes.length === 0) {
    throw invalidArgument('option "cluster.nodes" must be a non-empty list of "redis://host:port" or "host:port"')
  }
  if (cluster.pubsub !== undefined && cluster.pubsub !== null && cluster.pubsub !== 'classic' && cluster.pubsub !== 'sharded') {
    throw invalidArgument('option "cluster.pubsub" must be "classic" or "sharded"')
  }
  const schemes = new Set(cluster.nodes.filter((node) => typeof node === 'string' && node.includes('://')).map((node) => node.slice(0, node.indexOf('://')).toLowerCase()))
  if (schemes.has('redis') && schemes.has('rediss')) throw invalidArgument('option "cluster.nodes" mixes redis:// and rediss://: TLS is on for every node or none')
  const tls = schemes.has('rediss')
  const nodes = cluster.nodes.map((node, i) => nodeAddress(typeof node === 'string' ? node.replace(/^rediss:/i, 'redis:') : node, i, 'cluster.nodes', DEFAULT_PORT))
  const natMap = typeof cluster.natMap === 'function' ? natMapFunction(cluster.natMap) : natMapOption(cluster.natMap)
  return { nodes, tls, natMap, sharded: cluster.pubsub === 'sharded' }
}

// `natMap` as a function, as ioredis takes it: called with the address a node announces,
// "host:port", for each connection to it; `{ host, port }` to connect there instead, or
// nothing for the address as announced. An answer of another shape fails that connection.
function natMapFunction(natMap) {
  return (announced) => {
    const to = natMap(announced)
    if (to === null || to === undefined) return null
    if (!isPlainObject(to) || typeof to.host !== 'string' || to.host === '' || !Number.isInteger(to.port) || to.port < 1 || to.port > 65535) {
      throw new TypeError(`natMap(${JSON.stringify(announced)}) returned ${typeof to === 'object' ? JSON.stringify(to) : String(to)}; expected { host, port } or null`)
    }
    return { host: to.host, port: to.port }
  }
}

// `natMap`, as ioredis takes it: `{ 'announced-host:port': { host, port } }`, the address
// each node announces (in CLUSTER SLOTS and MOVED) mapped to where this process reaches it.
function natMapOption(natMap) {
  if (natMap === undefined || natMap === null) return undefined
  if (!isPlainObject(natMap)) throw invalidArgument('option "cluster.natMap" must be an object: { "host:port": { host, port } }')
  return Object.entries(natMap).map(([from, to]) => {
    const where = `natMap entry ${JSON.stringify(from)}`
    const colon = from.lastIndexOf(':')
    const port = Number(from.slice(colon + 1))
    if (colon < 1 || !/^\d+$/.test(from.slice(colon + 1)) || port < 1 || port > 65535) {
      throw invalidArgument(`${where}: the key must be the address a node announces, "host:port"`)
    }
    if (!isPlainObject(to)) throw invalidArgument(`${where} must map to { host, port }`)
    checkKnown(to, new Set(['host', 'port']), where)
    if (typeof to.host !== 'string' || to.host === '') throw invalidArgument(`${where}: "host" must be a non-empty string`)
    // As CLUSTER SLOTS and MOVED write it: no brackets around an IPv6 address, no leading zeros.
    const announced = `${from.slice(0, colon).replace(/^\[(.*)\]$/, '$1')}:${port}`
    return { from: announced, host: to.host, port: integerIn(to.port, `port of ${where}`, 1, 65535) }
  })
}

function sentinelOption(sentinel) {
  if (!isPlainObject(sentinel)) throw invalidArgument('option "sentinel" must be an object: { sentinels, masterName, username?, password? }')
  checkKnown(sentinel, new Set(['sentinels', 'masterName', 'username', 'password']), 'sentinel')
  if (!Array.isArray(sentinel.sentinels) || sentinel.sentinels.length === 0) {
    throw invalidArgument('option "sentinel.sentinels" must be a non-empty list of "redis://host:port" or "host:port"')
  }
  if (typeof sentinel.masterName !== 'string' || sentinel.masterName === '') {
    throw invalidArgument('option "sentinel.masterName" must be the non-empty name the sentinels monitor the master by')
  }
  return {
    sentinels: sentinel.sentinels.map((entry, i) => nodeAddress(entry, i, 'sentinel.sentinels', DEFAULT_SENTINEL_PORT)),
    masterName: sentinel.masterName,
    username: optionalString(sentinel, 'username'),
    password: optionalString(sentinel, 'password'),
  }
}

// Settings read off an ioredis instance; Kindling opens its own connections with them.
function fromIoredis(client) {
  const o = client.options
  const sentinels = Array.isArray(o.sentinels) && o.sentinels.length > 0
  if (sentinels && (o.enableTLSForSentinelMode || o.sentinelTLS)) {
    throw invalidArgument('an ioredis client with TLS to its sentinels: TLS to sentinels is not supported in this release')
  }
  // Settings Kindling would otherwise ignore, and connect somewhere else than meant.
  if (sentinels && o.role === 'slave') throw invalidArgument('an ioredis client for a Sentinel replica (role: "slave"): Kindling always uses the master')
  if (sentinels && o.natMap) throw invalidArgument('an ioredis client with a natMap: address translation is not supported in this release')
  const settings = {
    host: o.path ? undefined : o.host,
    port: o.path ? undefined : o.port,
    username: o.username || undefined,
    password: o.password || undefined,
    db: o.db || 0,
    tls: o.tls ? (o.tls === true ? true : { ca: o.tls.ca, cert: o.tls.cert, key: o.tls.key, servername: o.tls.servername, rejectUnauthorized: o.tls.rejectUnauthorized }) : undefined,
    keyPrefix: o.keyPrefix || undefined,
    connectTimeout: o.connectTimeout || undefined,
    commandTimeout: o.commandTimeout || undefined,
    sentinel: sentinels
      ? { sentinels: o.sentinels, masterName: o.name, username: o.sentinelUsername || undefined, password: o.sentinelPassword || undefined }
      : undefined,
  }
  const target = o.path ? { path: o.path, db: settings.db } : { host: settings.host || '127.0.0.1', port: settings.port || DEFAULT_PORT, db: settings.db }
  return { options: settings, target, client }
}

// Settings read off an ioredis Cluster instance: its startup nodes (`{ host, port }`,
// "host:port" or a port), its keyPrefix and its redisOptions, which apply to every node.
function fromIoredisCluster(client) {
  const o = client.options ?? {}
  const r = o.redisOptions ?? {}
  const nodes = client.startupNodes.map((node) => (typeof node === 'number' ? { host: '127.0.0.1', port: node } : node))
  const settings = {
    cluster: { nodes, natMap: o.natMap || undefined },
    username: r.username || undefined,
    password: r.password || undefined,
    tls: r.tls ? (r.tls === true ? true : { ca: r.tls.ca, cert: r.tls.cert, key: r.tls.key, servername: r.tls.servername, rejectUnauthorized: r.tls.rejectUnauthorized }) : undefined,
    keyPrefix: o.keyPrefix || r.keyPrefix || undefined,
    connectTimeout: r.connectTimeout || undefined,
    commandTimeout: r.commandTimeout || undefined,
  }
  return { options: settings, target: { host: '127.0.0.1', port: DEFAULT_PORT, db: 0 }, client }
}

function redisOptions(input) {
  let options
  let target
  let client
  // Nothing said where the server is: errors say the default was used.
  let defaulted = false
  if (input === undefined || input === null) {
    options = {}
    defaulted = !process.env.REDIS_URL
    target = parseUrl(process.env.REDIS_URL || DEFAULT_URL)
  } else if (typeof input === 'string') {
    options = {}
    target = parseUrl(input)
  } else if (isIoredisCluster(input)) {
    ;({ options, target, client } = fromIoredisCluster(input))
  } else if (isIoredis(input)) {
    ;({ options, target, client } = fromIoredis(input))
  } else if (isPlainObject(input)) {
    options = input
    checkKnown(options, REDIS_OPTIONS, 'Redis')
    if (options.sentinel !== undefined && options.sentinel !== null) {
      // The sentinels say where the master is: nothing else may.
      const clash = ['url', 'host', 'port', 'path', 'cluster'].filter((name) => options[name] !== undefined && options[name] !== null)
      if (clash.length > 0) {
        throw invalidArgument(`option "sentinel" finds the master; it cannot be combined with ${clash.map((name) => `"${name}"`).join(', ')}`)
      }
    }
    if (options.cluster !== undefined && options.cluster !== null) {
      // The slot map says where each key is: nothing else may.
      const clash = ['url', 'host', 'port', 'path'].filter((name) => options[name] !== undefined && options[name] !== null)
      if (clash.length > 0) {
        throw invalidArgument(`option "cluster" finds each key's node; it cannot be combined with ${clash.map((name) => `"${name}"`).join(', ')}`)
      }
      if (options.db !== undefined && options.db !== null && options.db !== 0) {
        throw invalidArgument('Redis Cluster has database 0 only: "db" must be 0 with "cluster"')
      }
    }
    const url = options.sentinel != null || options.cluster != null ? undefined : optionalString(options, 'url') ?? process.env.REDIS_URL
    defaulted = url === undefined && options.host == null && options.port == null
    target = parseUrl(url ?? DEFAULT_URL)
  } else {
    throw invalidArgument('createRedisStoreAdapter takes a URL string, an options object or an ioredis instance')
  }

  const host = optionalString(options, 'host')
  if (host !== undefined) {
    if (host === '') throw invalidArgument('option "host" must not be empty')
    target.host = host
    delete target.path
  }
  if (options.port !== undefined && options.port !== null) target.port = integerIn(options.port, 'port', 1, 65535)
  if (options.db !== undefined && options.db !== null) target.db = integerIn(options.db, 'db', 0, 2 ** 31 - 1)
  const username = optionalString(options, 'username')
  if (username !== undefined) target.username = username
  const password = optionalString(options, 'password')
  if (password !== undefined) target.password = password
  const tls = options.tls === undefined || options.tls === null ? target.tls : tlsOption(options.tls)
  const keyPrefix = optionalString(options, 'keyPrefix') ?? ''
  // Never silently plaintext: TLS is over TCP, and a unix socket is local.
  if (tls && target.path) throw invalidArgument('"tls" applies to TCP connections, not to a unix socket path')

  const sentinel = options.sentinel === undefined || options.sentinel === null ? undefined : sentinelOption(options.sentinel)
  const cluster = options.cluster === undefined || options.cluster === null ? undefined : clusterOption(options.cluster)
  const native = {
    host: target.host ?? '127.0.0.1',
    port: target.port ?? DEFAULT_PORT,
    path: target.path,
    username: target.username,
    password: target.password,
    db: target.db ?? 0,
    tls,
    connectTimeoutMs: milliseconds(options, 'connectTimeout', 10000),
    commandTimeoutMs: milliseconds(options, 'commandTimeout', 5000),
    // Connections that blocking stream reads hold at once, each its own.
    maxBlockingConnections: options.maxBlockingConnections === undefined || options.maxBlockingConnections === null
      ? DEFAULT_BLOCKING_CONNECTIONS
      : integerIn(options.maxBlockingConnections, 'maxBlockingConnections', 1, 1024),
  }
  if (cluster?.tls && options.tls === false) throw invalidArgument('"rediss://" cluster nodes and "tls: false" contradict each other')
  if (cluster?.tls && !native.tls) native.tls = {}
  const scheme = native.path ? 'unix' : native.tls ? 'rediss' : 'redis'
  const where = cluster
    ? `cluster via ${cluster.nodes.map(({ host, port }) => `${host.includes(':') ? `[${host}]` : host}:${port}`).join(', ')}`
    : sentinel
    ? `master ${JSON.stringify(sentinel.masterName)} via sentinels ${sentinel.sentinels.map(({ host, port }) => `${host.includes(':') ? `[${host}]` : host}:${port}`).join(', ')} (db ${native.db})`
    : native.path ? `unix://${native.path}` : `${scheme}://${native.host.includes(':') ? `[${native.host}]` : native.host}:${native.port}/${native.db}`
  native.target = where
  native.targetIsDefault = defaulted && !sentinel && !cluster
  native.sentinel = sentinel
  native.cluster = cluster?.nodes
  native.natMap = typeof cluster?.natMap === 'function' ? undefined : cluster?.natMap
  native.shardedPubsub = cluster?.sharded ?? false
  return {
    native,
    // A function cannot travel inside the options: it is handed over beside them.
    natMapFunction: typeof cluster?.natMap === 'function' ? cluster.natMap : undefined,
    keyPrefix,
    // ioredis puts its keyPrefix on keys only; Kindling's own option prefixes channels too.
    channelPrefix: client ? '' : keyPrefix,
    maxPubSubBacklog: backlogOption(options),
    warnings: cluster && hashTag(keyPrefix)
      ? [`keyPrefix ${JSON.stringify(keyPrefix)} holds a hash tag: every key of this adapter hashes to one slot, so one master of the cluster serves them all`]
      : [],
    onError: client ? undefined : onErrorOption(options),
    client,
    description: where,
    secrets: secretsOf(native.password, sentinel?.password),
  }
}

// The part of a key Redis Cluster hashes when it is not the whole key: between the first `{`
// and the first `}` after it, when not empty.
function hashTag(key) {
  const open = key.indexOf('{')
  const close = open < 0 ? -1 : key.indexOf('}', open + 1)
  return close > open + 1 ? key.slice(open + 1, close) : null
}

// The passwords as given and as they would appear percent-encoded in a URL.
function secretsOf(...passwords) {
  const given = passwords.filter(Boolean)
  return [...new Set(given.flatMap((password) => [password, encodeURIComponent(password)]))].sort((a, b) => b.length - a.length)
}

function memoryOptions(input) {
  if (input === undefined || input === null) input = {}
  if (!isPlainObject(input)) throw invalidArgument('createMemoryStoreAdapter takes an options object')
  checkKnown(input, MEMORY_OPTIONS, 'memory store')
  const name = optionalString(input, 'name')
  if (name === '') throw invalidArgument('option "name" must not be empty')
  return { keyPrefix: optionalString(input, 'keyPrefix') ?? '', name, onError: onErrorOption(input), maxPubSubBacklog: backlogOption(input) }
}

module.exports = { redisOptions, memoryOptions }
