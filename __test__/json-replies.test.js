'use strict'

// Replies of many values (mget, stream entries) cross from native as one JSON text, in which
// native decides for each stored value whether it is JSON (kept as it is) or not (made a
// string). That decision must agree with JSON.parse for every text another client may have
// stored: mget must give what get (JSON.parse, else the raw string) gives, value by value.

const { it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fc = require('fast-check')
const Redis = require('ioredis')
const { startRedis } = require('./helpers/redis-server.js')
const { createRedisStoreAdapter } = require('../index.js')

let server, raw, store
before(async () => {
  server = await startRedis()
  raw = new Redis(server.url)
  store = createRedisStoreAdapter({ url: server.url })
})
after(async () => {
  await store.close()
  raw.disconnect()
  await server.stop()
})

// Texts near JSON's edges: its tokens, whitespace JSON.parse allows and some it does not,
// escapes good and bad, control characters and non-ASCII.
const pieces = [
  '{', '}', '[', ']', ',', ':', '"', '\\', '\\"', '\\u00e9', '\\ud800', '\\u12', '\\x', '\\/', 'true', 'false',
  'null', 'nul', '0', '01', '-', '-0', '1.5', '1.', '.5', '1e5', '1E+2', '1e', 'a', ' ', '\t', '\n', '\r', '\u00a0',
  '\u0001', 'é', '😀', 'NaN', 'Infinity',
]
const nearJson = fc.array(fc.constantFrom(...pieces), { maxLength: 12 }).map((parts) => parts.join(''))
const stored = fc.oneof(nearJson, fc.json(), fc.string({ unit: 'binary' }))

function parsedAlone(text) {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

it('mget gives, for any stored text, what JSON.parse of it alone gives (else the string)', async () => {
  await fc.assert(fc.asyncProperty(fc.array(stored, { minLength: 1, maxLength: 8 }), async (texts) => {
    const keys = texts.map((_, i) => `json:${i}`)
    await raw.del(...keys)
    for (let i = 0; i < texts.length; i++) await raw.set(keys[i], texts[i])
    const values = await store.mget([...keys, 'json:missing'])
    assert.deepEqual(values, [...texts.map(parsedAlone), null])
  }), { numRuns: 400 })
})

it('a stream entry gives its data parsed when JSON, else its fields, for any stored text', async () => {
  await fc.assert(fc.asyncProperty(stored, fc.boolean(), async (text, extraField) => {
    await raw.del('json:stream')
    const fields = extraField ? ['data', text, 'other', 'x'] : ['data', text]
    const id = await raw.xadd('json:stream', '*', ...fields)
    const [entry] = await store.xrange('json:stream')
    const fieldsObject = Object.fromEntries(extraField ? [['data', text], ['other', 'x']] : [['data', text]])
    assert.deepEqual(entry, { id, message: text !== '' && isJson(text) ? JSON.parse(text) : fieldsObject })
  }), { numRuns: 300 })
})

function isJson(text) {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}
