'use strict'

// The contract tests run once per backend: the embedded memory store and a real Redis.

const { startRedis } = require('./redis-server.js')
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

module.exports = { backends }
