'use strict'

// The contract tests run once per backend: the embedded memory store and a real Redis; the
// Igniter contracts run through Sentinel too.

const { startRedis } = require('./redis-server.js')
const { startSentinelSetup } = require('./sentinel.js')
const { startCluster } = require('./cluster.js')
const { createMemoryStoreAdapter, createRedisStoreAdapter } = require('../../index.js')

let prefixes = 0

const backends = [
  {
    name: 'memory',
    async setup() {},
    async teardown() {},
    create: (options = {}) => createMemoryStoreAdapter(options),
  },
  {
    name: 'redis',
    server: null,
    async setup() {
      this.server = await startRedis()
    },
    async teardown() {
      await this.server.stop()
    },
    create(options = {}) {
      // A fresh prefix per adapter keeps tests from seeing each other's keys.
      return createRedisStoreAdapter({ url: this.server.url, keyPrefix: `t${++prefixes}:`, ...options })
    },
  },
]

// A master, a replica and three sentinels; the adapters find the master through them. Nothing
// fails over here: `server` is the master throughout.
const sentinelBackend = {
  name: 'sentinel',
  servers: null,
  get server() {
    return this.servers.master
  },
  async setup() {
    this.servers = await startSentinelSetup()
  },
  async teardown() {
    await this.servers.stop()
  },
  create(options = {}) {
    const { sentinelUrls, masterName } = this.servers
    return createRedisStoreAdapter({ sentinel: { sentinels: sentinelUrls, masterName }, keyPrefix: `s${++prefixes}:`, ...options })
  },
}

// Three masters with a replica each; the adapters find each key's master from the slot map.
// `server` is the master serving the slot of an empty key, for tests that look at one.
const clusterBackend = {
  name: 'cluster',
  nodes: null,
  async setup() {
    this.nodes = await startCluster()
  },
  async teardown() {
    await this.nodes.stop()
  },
  create(options = {}) {
    return createRedisStoreAdapter({ cluster: { nodes: this.nodes.seeds }, keyPrefix: `c${++prefixes}:`, ...options })
  },
}

module.exports = { backends, sentinelBackend, clusterBackend }
