'use strict'

// Property tests (fast-check) of the extended API on the memory store, against small models:
// setNX, increment by a delta, mget/mset and scan against a map of key to stored text; scan's
// completeness under keys set and deleted between pages; glob patterns against regular
// expressions; streams and consumer groups against a list of entries and each group's place.

const { describe, it } = require('node:test')
const assert = require('node:assert/strict')
const fc = require('fast-check')
const { compareIds } = require('./helpers/expect.js')
const { createMemoryStoreAdapter } = require('../index.js')

let names = 0
const uniqueName = () => `extended-properties-${process.pid}-${++names}`
const MAX = Number.MAX_SAFE_INTEGER

const INTEGER_TEXT = /^-?(0|[1-9][0-9]*)$/
const parsed = (text) => {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

// Every page of a scan; `between` runs after each page but the last.
async function scanAll(store, pattern, count, between = async () => {}) {
  const keys = []
  let cursor = '0'
  for (let page = 0; ; page++) {
    assert.ok(page < 20000, 'the scan ends')
    const result = await store.scan(pattern, { cursor, count })
    assert.ok(Array.isArray(result.keys))
    assert.equal(typeof result.cursor, 'string')
    keys.push(...result.keys)
    cursor = result.cursor
    if (cursor === '0') return keys
    await between(page)
  }
}
const sorted = (list) => [...new Set(list)].sort()

// The key-value store as a map of key to stored text; TTLs in the tests are too long to pass.
function kvModel() {
  const texts = new Map()
  const model = {
    texts,
    set: (key, value) => texts.set(key, JSON.stringify(value)),
    delete: (key) => texts.delete(key),
    get: (key) => (texts.has(key) ? parsed(texts.get(key)) : null),
    has: (key) => texts.has(key),
    setNX(key, value) {
      if (texts.has(key)) return false
      model.set(key, value)
      return true
    },
    // The next value, or null when Redis's INCRBY would refuse or the result is not safe.
    increment(key, delta = 1) {
      const text = texts.get(key) ?? '0'
      if (!INTEGER_TEXT.test(text)) return null
      const next = Number(text) + delta
      if (!Number.isSafeInteger(next)) return null
      texts.set(key, String(next))
      return next
    },
  }
  return model
}

const value = fc.oneof(
  fc.integer({ min: -50, max: 50 }),
  fc.constantFrom(MAX, -MAX, MAX - 3, -(MAX - 3), 2 ** 53, 2 ** 60, 1e21, 0.5, -0),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.string({ maxLength: 6 }),
  fc.constantFrom(true, false, null, '12', ' 3', '-0', '007', '1e3'),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 3 }), fc.integer(), { maxKeys: 2 }),
)
const keys = ['a', 'b', 'c', 'é', '', 'a*', 'b?']
const key = fc.constantFrom(...keys)
const ttl = fc.option(fc.double({ min: 100, max: 10000, noNaN: true }), { nil: undefined })
const delta = fc.oneof(
  fc.constant(undefined),
  fc.integer({ min: -1000, max: 1000 }),
  fc.constantFrom(MAX, -MAX, 2 ** 52, 3, -3),
)
const kvCommand = fc.oneof(
  fc.record({ op: fc.constant('set'), key, value, ttl }),
  fc.record({ op: fc.constant('setNX'), key, value, ttl }),
  fc.record({ op: fc.constantFrom('get', 'has', 'delete'), key }),
  fc.record({ op: fc.constant('increment'), key, delta }),
  fc.record({ op: fc.constant('mget'), keys: fc.array(key, { maxLength: 8 }) }),
  fc.record({ op: fc.constant('mset'), entries: fc.array(fc.record({ key, value, ttl }, { requiredKeys: ['key', 'value'] }), { maxLength: 5 }) }),
  fc.record({ op: fc.constant('scan'), count: fc.integer({ min: 1, max: 10 }) }),
)

// Glob patterns as tokens, so that the model's regular expression is built from the same tokens.
const SPECIAL = new Set(['*', '?', '[', ']', '\\'])
const globChar = fc.constantFrom('a', 'b', 'c', '*', '?', '[', ']', '\\', '-', '^')
// Not the empty key: Redis matches it against '*' only (SCAN skips matching for exactly '*').
const globKey = fc.string({ unit: globChar, minLength: 1, maxLength: 5 })
const classMember = fc.oneof(fc.constantFrom('a', 'b', 'c', '*', '?'), fc.constant('a-b'))
const globToken = fc.oneof(
  fc.record({ kind: fc.constant('literal'), char: globChar }),
  fc.record({ kind: fc.constantFrom('one', 'any') }),
  fc.record({ kind: fc.constant('class'), negated: fc.boolean(), members: fc.array(classMember, { minLength: 1, maxLength: 3 }) }),
)
const escapeRegExp = (text) => text.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&')
function glob(tokens) {
  let pattern = ''
  let source = ''
  for (const token of tokens) {
    switch (token.kind) {
      case 'literal':
        pattern += SPECIAL.has(token.char) ? `\\${token.char}` : token.char
        source += escapeRegExp(token.char)
        break
      case 'one':
        pattern += '?'
        source += '[\\s\\S]'
        break
      case 'any':
        pattern += '*'
        source += '[\\s\\S]*'
        break
      case 'class':
        pattern += `[${token.negated ? '^' : ''}${token.members.join('')}]`
        source += `[${token.negated ? '^' : ''}${token.members.map((m) => (m === 'a-b' ? 'a-b' : escapeRegExp(m))).join('')}]`
        break
    }
  }
  return { pattern, regexp: new RegExp(`^${source}$`) }
}


const group = fc.constantFrom('g1', 'g2', 'g3')
const consumer = fc.constantFrom('c1', 'c2', 'c3')
const count = fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined })
const adapter = fc.constantFrom(0, 1)
const streamCommand = fc.oneof(
  { arbitrary: fc.record({ op: fc.constant('xadd'), adapter, message: fc.jsonValue({ maxDepth: 1 }) }), weight: 4 },
  fc.record({ op: fc.constant('xgroupCreate'), adapter, group, startId: fc.constantFrom('0', '$') }),
  { arbitrary: fc.record({ op: fc.constant('xreadgroup'), adapter, group, consumer, count }), weight: 3 },
  fc.record({
    op: fc.constant('burst'),
    group,
    reads: fc.array(fc.record({ adapter, consumer, count: fc.integer({ min: 1, max: 3 }) }), { minLength: 2, maxLength: 5 }),
  }),
  fc.record({ op: fc.constant('xack'), adapter, group, take: fc.nat({ max: 3 }) }),
  fc.record({ op: fc.constantFrom('xrange', 'xrevrange'), adapter, count }),
)

describe('extended properties (memory)', () => {
  it('setNX, increment by a delta, mget, mset and scan agree with a model', async () => {
    await fc.assert(fc.asyncProperty(fc.array(kvCommand, { maxLength: 40 }), async (commands) => {
      const store = createMemoryStoreAdapter()
      const expected = kvModel()
      try {
        for (const c of commands) {
          switch (c.op) {
            case 'set':
              await store.set(c.key, c.value, { ttl: c.ttl })
              expected.set(c.key, c.value)
              break
            case 'setNX':
              assert.equal(await store.setNX(c.key, c.value, { ttl: c.ttl }), expected.setNX(c.key, c.value))
              break
            case 'delete':
              await store.delete(c.key)
              expected.delete(c.key)
              break
            case 'get':
              assert.deepEqual(await store.get(c.key), expected.get(c.key))
              break
            case 'has':
              assert.equal(await store.has(c.key), expected.has(c.key))
              break
            case 'increment': {
              const before = expected.get(c.key)
              const next = expected.increment(c.key, c.delta)
              if (next === null) {
                await assert.rejects(store.increment(c.key, c.delta), (err) => err.code === 'ERR_STORE_NOT_INTEGER')
                assert.deepEqual(await store.get(c.key), before, 'a refused increment changes nothing')
              } else {
                assert.equal(await store.increment(c.key, c.delta), next)
              }
              break
            }
            case 'mget':
              assert.deepEqual(await store.mget(c.keys), c.keys.map((k) => expected.get(k)))
              break
            case 'mset':
              assert.equal(await store.mset(c.entries), undefined)
              for (const entry of c.entries) expected.set(entry.key, entry.value)
              break
            case 'scan':
              assert.deepEqual(sorted(await scanAll(store, '*', c.count)), [...expected.texts.keys()].sort())
              break
          }
        }
        assert.deepEqual(await store.mget(keys), keys.map((k) => expected.get(k)))
      } finally {
        await store.close()
      }
    }), { numRuns: 1000 })
  })

  it('scan returns every key present for the whole scan, under a prefix, while keys are set and deleted between pages', async () => {
    const name = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '*', ':'), maxLength: 4 })
    const change = fc.record({ op: fc.constantFrom('set', 'delete'), where: fc.constantFrom('mine', 'other'), key: name })
    const scenario = fc.record({
      initial: fc.uniqueArray(name, { maxLength: 80 }),
      noise: fc.uniqueArray(name, { maxLength: 10 }),
      changes: fc.array(fc.array(change, { maxLength: 4 }), { maxLength: 30 }),
      doomed: fc.array(fc.nat(), { maxLength: 30 }),
      count: fc.integer({ min: 1, max: 6 }),
    })
    await fc.assert(fc.asyncProperty(scenario, async ({ initial, noise, changes, doomed, count }) => {
      const storeName = uniqueName()
      const mine = createMemoryStoreAdapter({ name: storeName, keyPrefix: 'p:' })
      const other = createMemoryStoreAdapter({ name: storeName, keyPrefix: 'q:' })
      const unprefixed = createMemoryStoreAdapter({ name: storeName })
      try {
        await mine.mset(initial.map((key) => ({ key, value: 1 })))
        await other.mset(noise.map((key) => ({ key, value: 2 })))
        await unprefixed.mset([{ key: 'p', value: 3 }, { key: 'p;x', value: 3 }, { key: 'P:x', value: 3 }])
        const present = new Set(initial)
        const everPresent = new Set(initial)
        const touched = new Set()
        const keys = await scanAll(mine, '*', count, async (page) => {
          for (const c of changes[page] ?? []) {
            const store = c.where === 'mine' ? mine : other
            if (c.op === 'set') await store.set(c.key, page)
            else await store.delete(c.key)
            if (c.where === 'mine') {
              if (c.op === 'set') {
                present.add(c.key)
                everPresent.add(c.key)
              } else {
                present.delete(c.key)
                touched.add(c.key)
              }
            }
          }
          // Deletes one of the first keys now and then, so that deletions happen on both sides of the cursor.
          if (page < doomed.length && initial.length > 0) {
            const key = initial[doomed[page] % initial.length]
            await mine.delete(key)
            present.delete(key)
            touched.add(key)
          }
        })
        const seen = new Set(keys)
        for (const key of initial) {
          if (!touched.has(key)) assert.ok(seen.has(key), `${JSON.stringify(key)} was present for the whole scan and was returned`)
        }
        for (const key of seen) assert.ok(everPresent.has(key), `${JSON.stringify(key)} was a key of this prefix`)
        // With nothing changing, a scan gives exactly the keys there are.
        assert.deepEqual(sorted(await scanAll(mine, '*', count)), [...present].sort())
      } finally {
        await Promise.all([mine.close(), other.close(), unprefixed.close()])
      }
    }), { numRuns: 800 })
  })

  it('scan follows glob patterns as a regular expression built from the same parts would', async () => {
    const store = createMemoryStoreAdapter()
    try {
      await fc.assert(fc.asyncProperty(fc.uniqueArray(globKey, { maxLength: 25 }), fc.array(globToken, { maxLength: 5 }), fc.integer({ min: 1, max: 20 }),
        async (present, tokens, count) => {
          const existing = await scanAll(store, '*', 100)
          for (const key of existing) await store.delete(key)
          await store.mset(present.map((key) => ({ key, value: 0 })))
          const { pattern, regexp } = glob(tokens)
          assert.deepEqual(sorted(await scanAll(store, pattern, count)), present.filter((key) => regexp.test(key)).sort(), `pattern ${JSON.stringify(pattern)}`)
        }), { numRuns: 2000 })
    } finally {
      await store.close()
    }
  })

  it('consumer groups deliver every entry once, in id order, to one consumer, across adapters', async () => {
    await fc.assert(fc.asyncProperty(fc.array(streamCommand, { maxLength: 40 }), async (commands) => {
      const name = uniqueName()
      const stores = [createMemoryStoreAdapter({ name }), createMemoryStoreAdapter({ name })]
      // The model: every entry added, and per group the index of the last one delivered and the
      // ids delivered and not yet acknowledged.
      const entries = []
      const groups = new Map()
      const delivered = new Map()
      const check = (groupName, batch) => {
        const g = groups.get(groupName)
        const expected = entries.slice(g.last + 1, g.last + 1 + batch.length)
        assert.deepEqual(batch, expected, `group ${groupName} gets the next entries in order`)
        g.last += batch.length
        for (const entry of batch) {
          assert.ok(!delivered.get(groupName).has(entry.id), `${entry.id} delivered twice in ${groupName}`)
          delivered.get(groupName).add(entry.id)
          g.pending.push(entry.id)
        }
      }
      try {
        for (const c of commands) {
          const store = stores[c.adapter ?? 0]
          switch (c.op) {
            case 'xadd': {
              const id = await store.xadd('s', c.message)
              if (entries.length > 0) assert.ok(compareIds(entries.at(-1).id, id) < 0, `${id} after ${entries.at(-1).id}`)
              entries.push({ id, message: JSON.parse(JSON.stringify(c.message)) })
              break
            }
            case 'xgroupCreate':
              assert.equal(await store.xgroupCreate('s', c.group, c.startId), undefined)
              if (!groups.has(c.group)) {
                groups.set(c.group, { last: c.startId === '$' ? entries.length - 1 : -1, pending: [] })
                delivered.set(c.group, new Set())
              }
              break
            case 'xreadgroup': {
              if (!groups.has(c.group)) {
                await assert.rejects(store.xreadgroup('s', c.group, c.consumer, { count: c.count }), (err) => {
                  assert.equal(err.code, 'ERR_STORE_REDIS')
                  assert.match(err.message, /^NOGROUP /)
                  return true
                })
                break
              }
              const g = groups.get(c.group)
              const available = entries.length - 1 - g.last
              const batch = await store.xreadgroup('s', c.group, c.consumer, { count: c.count })
              assert.equal(batch.length, c.count === undefined ? available : Math.min(c.count, available))
              check(c.group, batch)
              break
            }
            case 'burst': {
              if (!groups.has(c.group)) break
              const g = groups.get(c.group)
              const available = entries.length - 1 - g.last
              const batches = await Promise.all(c.reads.map((r) => stores[r.adapter].xreadgroup('s', c.group, r.consumer, { count: r.count })))
              for (const [i, batch] of batches.entries()) assert.ok(batch.length <= c.reads[i].count)
              // Each read takes the next entries there are: together, the next ones, each once.
              const all = batches.flat().sort((x, y) => compareIds(x.id, y.id))
              const wanted = Math.min(available, c.reads.reduce((sum, r) => sum + r.count, 0))
              assert.equal(all.length, wanted)
              for (const batch of batches) {
                for (let i = 1; i < batch.length; i++) assert.ok(compareIds(batch[i - 1].id, batch[i].id) < 0, 'each batch in id order')
              }
              check(c.group, all)
              break
            }
            case 'xack': {
              if (!groups.has(c.group)) {
                assert.equal(await store.xack('s', c.group, []), undefined)
                break
              }
              const g = groups.get(c.group)
              const ids = g.pending.splice(0, c.take)
              assert.equal(await store.xack('s', c.group, ids), undefined)
              break
            }
            case 'xrange':
              assert.deepEqual(await store.xrange('s', { count: c.count }), entries.slice(0, c.count ?? entries.length))
              break
            case 'xrevrange':
              assert.deepEqual(await store.xrevrange('s', { count: c.count }), [...entries].reverse().slice(0, c.count ?? entries.length))
              break
          }
        }
        // Whatever is left goes out now: each group saw every entry after its start exactly once.
        for (const [groupName, g] of groups) {
          const start = g.last + 1 - delivered.get(groupName).size
          check(groupName, await stores[0].xreadgroup('s', groupName, 'last'))
          assert.deepEqual(await stores[1].xreadgroup('s', groupName, 'later'), [])
          assert.deepEqual([...delivered.get(groupName)], entries.slice(start).map((e) => e.id), `group ${groupName} lost none`)
        }
      } finally {
        await Promise.all(stores.map((s) => s.close()))
      }
    }), { numRuns: 1000 })
  })
})
