'use strict'

// Property tests (fast-check) on both backends: any key and any JSON value round-trip; random
// interleavings of set/delete/expire/increment/get/has agree with a simple model of the store.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fc = require('fast-check')
const { backends } = require('./helpers/backends.js')

// Keys as users write them: any Unicode (well-formed), empty, or very long.
const anyKey = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 8 }),
  fc.string({ unit: 'binary', minLength: 2000, maxLength: 20000 }),
)

const INTEGER_TEXT = /^-?(0|[1-9][0-9]*)$/
const parsed = (text) => {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

// The store as a map of key to stored text; TTLs in the test are too long to pass.
function model() {
  const texts = new Map()
  return {
    set: (key, value) => texts.set(key, JSON.stringify(value)),
    delete: (key) => texts.delete(key),
    get: (key) => (texts.has(key) ? parsed(texts.get(key)) : null),
    has: (key) => texts.has(key),
    // The next value, or null when the stored text is not an integer Redis would take.
    increment(key) {
      const text = texts.get(key) ?? '0'
      if (!INTEGER_TEXT.test(text) || !Number.isSafeInteger(Number(text) + 1)) return null
      texts.set(key, String(Number(text) + 1))
      return Number(text) + 1
    },
  }
}

const smallValue = fc.oneof(
  fc.integer({ min: -50, max: 50 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.string({ maxLength: 6 }),
  fc.constantFrom(true, false, null, '12', ' 3', '-0', '007'),
  fc.array(fc.integer(), { maxLength: 3 }),
)
const key = fc.constantFrom('a', 'b', 'c', 'é', '')
const command = fc.oneof(
  fc.record({ op: fc.constant('set'), key, value: smallValue }),
  fc.record({ op: fc.constantFrom('get', 'has', 'delete', 'increment'), key }),
  fc.record({ op: fc.constant('expire'), key, ttl: fc.double({ min: 100, max: 10000, noNaN: true }) }),
)

for (const backend of backends) {
  describe(`properties (${backend.name})`, () => {
    before(() => backend.setup())
    after(() => backend.teardown())

    it('any key and any JSON value round-trip identically', async () => {
      const store = backend.create()
      await fc.assert(fc.asyncProperty(anyKey, fc.jsonValue(), async (k, value) => {
        await store.set(k, value)
        assert.deepEqual(await store.get(k), JSON.parse(JSON.stringify(value)))
        assert.equal(await store.has(k), true)
        await store.delete(k)
        assert.equal(await store.get(k), null)
      }), { numRuns: 300 })
      await store.close()
    })

    it('random interleavings of set/delete/expire/increment/get/has agree with a model', async () => {
      await fc.assert(fc.asyncProperty(fc.array(command, { maxLength: 40 }), async (commands) => {
        const store = backend.create()
        for (const k of ['a', 'b', 'c', 'é', '']) await store.delete(k)
        const expected = model()
        try {
          for (const c of commands) {
            switch (c.op) {
              case 'set':
                await store.set(c.key, c.value)
                expected.set(c.key, c.value)
                break
              case 'delete':
                await store.delete(c.key)
                expected.delete(c.key)
                break
              case 'expire':
                await store.expire(c.key, c.ttl)
                break
              case 'get':
                assert.deepEqual(await store.get(c.key), expected.get(c.key))
                break
              case 'has':
                assert.equal(await store.has(c.key), expected.has(c.key))
                break
              case 'increment': {
                const next = expected.increment(c.key)
                if (next === null) await assert.rejects(store.increment(c.key), (err) => err.code === 'ERR_STORE_NOT_INTEGER')
                else assert.equal(await store.increment(c.key), next)
                break
              }
            }
          }
        } finally {
          await store.close()
        }
      }), { numRuns: 150 })
    })
  })
}
