'use strict'

// The Redis Cluster helper (helpers/cluster.js) itself: a real cluster of 3 masters and 3
// replicas; keySlot against the servers' CLUSTER KEYSLOT, the roles, and slotOwner against
// CLUSTER SLOTS and against where a write is accepted.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const Redis = require('ioredis')
const { startCluster, keySlot } = require('./helpers/cluster.js')

// A seeded generator, so a failing key can be made again from the seed in the message.
function random(seed) {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

// Braces are frequent, so that hash tags of every shape come up: empty, nested, unclosed,
// several in one key, and around multi-byte characters.
const PIECES = ['a', 'b', 'z', 'K', '0', '9', ':', '-', ' ', '{', '{', '}', '}', '{}', 'é', 'ß', '日本', '😀', '\u0000', '\n', 'user1', '{user1}']

function randomKeys(count, seed) {
  const next = random(seed)
  const keys = []
  for (let i = 0; i < count; i++) {
    let key = ''
    const pieces = Math.floor(next() * 8)
    for (let j = 0; j < pieces; j++) key += PIECES[Math.floor(next() * PIECES.length)]
    keys.push(key)
  }
  return keys
}

const FIXED_KEYS = [
  '', 'foo', '123456789', '{user1}:a', '{user1}:b', 'x{user1}', '{}x', 'a{}b{c}', '{{a}}', '{a}}', '}{a}', 'a{b', 'a}b{',
  '{', '}', '{}', '{{}}', '{ }', 'ключ', '{ключ}x', '日本語{日本}', '😀{😀}', 'caf\u00e9', 'cafe\u0301', '\u0000{\u0000}',
]
// Bytes that are not UTF-8: keySlot takes a Buffer as they are.
const BINARY_KEYS = [Buffer.from([0xff, 0xfe, 0x7b, 0x80, 0x7d]), Buffer.from([0x7b, 0x7d, 0xc3]), Buffer.from([0x00, 0x7b, 0xff, 0x7d, 0x41])]

describe('cluster helper', () => {
  let cluster
  let client
  const cwdFiles = ['nodes.conf', 'dump.rdb'].filter((file) => fs.existsSync(file))

  before(async () => {
    cluster = await startCluster({ masters: 3, replicasPerMaster: 1 })
    client = new Redis({ port: cluster.nodes[0].port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 })
    await client.connect()
  })

  after(async () => {
    client?.disconnect()
    const dir = cluster?.dir
    await cluster?.stop()
    if (dir) assert.equal(fs.existsSync(dir), false, 'the cluster directory is removed')
  })

  it('starts 6 nodes, healthy, each with its files in its own directory (none in the working directory)', (t) => {
    t.diagnostic(`start-up: ${JSON.stringify(cluster.startupMs)} ms`)
    assert.equal(cluster.nodes.length, 6)
    assert.deepEqual(cluster.seeds, cluster.nodes.map((node) => `redis://127.0.0.1:${node.port}`))
    assert.equal(new Set(cluster.nodes.map((node) => node.port)).size, 6)
    for (const node of cluster.nodes) {
      assert.notEqual(node.port, 6379)
      assert.equal(cluster.node(node.port), node)
      assert.ok(fs.existsSync(path.join(cluster.dir, String(node.port), 'nodes.conf')))
    }
    assert.equal(cluster.node(1), undefined)
    assert.deepEqual(['nodes.conf', 'dump.rdb'].filter((file) => fs.existsSync(file)), cwdFiles)
  })

  it('keySlot agrees with CLUSTER KEYSLOT', async () => {
    const seed = Date.now() >>> 0
    const keys = [...FIXED_KEYS, ...BINARY_KEYS, ...randomKeys(200, seed)]
    const replies = await client.pipeline(keys.map((key) => ['cluster', 'keyslot', key])).exec()
    for (const [i, [error, slot]] of replies.entries()) {
      assert.ifError(error)
      assert.equal(keySlot(keys[i]), slot, `key ${JSON.stringify(String(keys[i]))} (${Buffer.from(keys[i]).toString('hex')}), seed ${seed}`)
    }
    assert.equal(cluster.keySlot, keySlot)
    // A few known values, independent of the server.
    assert.equal(keySlot('123456789'), 0x31c3 % 16384)
    assert.equal(keySlot('{user1}:a'), keySlot('user1'))
    assert.equal(keySlot('{{a}}'), keySlot('{a'))
    assert.equal(keySlot(new Uint8Array(Buffer.from('{user1}x'))), keySlot('user1'))
  })

  it('masters() and replicas(): 3 of each, every replica attached to a master', async () => {
    const masters = await cluster.masters()
    const replicas = await cluster.replicas()
    assert.equal(masters.length, 3)
    assert.equal(replicas.length, 3)
    assert.deepEqual([...masters, ...replicas].map((node) => node.port).sort(), cluster.nodes.map((node) => node.port).sort())
    const masterPorts = new Set(masters.map((node) => node.port))
    const servedBy = new Map()
    for (const replica of replicas) {
      const info = await replica.cli('INFO', 'replication')
      assert.match(info, /^role:slave\r?$/m)
      assert.match(info, /^master_link_status:up\r?$/m)
      const port = Number(info.match(/^master_port:(\d+)/m)[1])
      assert.ok(masterPorts.has(port), `replica ${replica.port} follows ${port}, a master`)
      servedBy.set(port, (servedBy.get(port) ?? 0) + 1)
    }
    assert.deepEqual([...servedBy.values()], [1, 1, 1])
    for (const master of masters) assert.match(await master.cli('INFO', 'replication'), /^role:master\r?$/m)
  })

  it('slotOwner agrees with CLUSTER SLOTS on every node, and with where writes land', async () => {
    const masters = await cluster.masters()
    let covered = 0
    for (const node of cluster.nodes) {
      const other = new Redis({ port: node.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 })
      await other.connect()
      try {
        const ranges = await other.cluster('SLOTS')
        if (node === cluster.nodes[0]) {
          for (const [from, to, [, port]] of ranges) {
            covered += to - from + 1
            for (const slot of [from, to, Math.floor((from + to) / 2)]) {
              assert.equal((await cluster.slotOwner(slot))?.port, port, `slot ${slot}`)
            }
            // Every range lists its master's replica (a replica with a replication offset).
            assert.equal(ranges.find((range) => range[0] === from).length, 4)
          }
        }
        assert.deepEqual(ranges.map(([from, to, [, port]]) => [from, to, port]).sort((a, b) => a[0] - b[0]),
          (await client.cluster('SLOTS')).map(([from, to, [, port]]) => [from, to, port]).sort((a, b) => a[0] - b[0]))
      } finally {
        other.disconnect()
      }
    }
    assert.equal(covered, 16384)
    // A write is accepted by the owner of its key's slot and moved by the other masters.
    for (const key of ['alpha', '{user1}:a', 'ζ{tag}', 'a{}b{c}']) {
      const owner = await cluster.slotOwner(keySlot(key))
      assert.ok(masters.includes(owner))
      for (const master of masters) {
        const reply = await master.cli('SET', key, 'v')
        if (master === owner) assert.equal(reply, 'OK')
        else assert.equal(reply, `MOVED ${keySlot(key)} 127.0.0.1:${owner.port}`)
      }
    }
  })

  it('waitHealthy resolves at once on a healthy cluster', async () => {
    const began = Date.now()
    await cluster.waitHealthy({ timeoutMs: 5000 })
    assert.ok(Date.now() - began < 1000)
  })
})
