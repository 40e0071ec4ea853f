'use strict'

const { inspect } = require('node:util')
const { performance } = require('node:perf_hooks')
const native = require('./lib/native.js')
const { redisOptions, memoryOptions } = require('./lib/options.js')
const { codes, storeError, invalidArgument, outOfRange, closedError, redact, fromNative, isFailure } = require('./lib/errors.js')

// Operation numbers, defined once in Rust (src/backend/mod.rs).
const {
  Get: GET, Set: SET, Delete: DELETE, Has: HAS, Increment: INCREMENT, Expire: EXPIRE,
  Publish: PUBLISH, Subscribe: SUBSCRIBE, Unsubscribe: UNSUBSCRIBE, SetIfAbsent: SET_IF_ABSENT,
  GetMany: GET_MANY, SetMany: SET_MANY, Scan: SCAN, StreamAdd: STREAM_ADD,
  GroupCreate: GROUP_CREATE, GroupRead: GROUP_READ, Range: RANGE, RangeReverse: RANGE_REVERSE,
  Ack: ACK,
} = native.Operation

const MAX_ID = 0xffffffff
// [handle, id, op, first, second] of the next native.submit: numbers cross to Rust here, not
// as arguments, which napi charges for one by one. `first` and `second` mean what the
// operation makes of them (a TTL in ms, a delta, a count, ...; 0 for none). One array per
// thread, shared by every copy of this module.
const callBuffer = native.registerCallBuffer(new Float64Array(5))
// No adapter has this handle: a closed adapter's slot may be reused by a new one.
const RELEASED = 0xffffffff
// Events taken from native per drain, and the time one turn of the event loop may spend
// delivering messages: a longer backlog continues on a later turn, after timers and I/O.
const DRAIN_LIMIT = 16384
const DELIVERY_BUDGET_MS = 10
const noop = () => {}

// A stored value that is not JSON (written by another client) comes back as the raw string.
function parseValue(text) {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}
const toBoolean = (reply) => reply === true
const asIs = (reply) => reply
const toNumber = asIs
const toNothing = noop
// Replies of many values come as one JSON text (native makes each non-JSON value a string).
const fromJson = (text) => JSON.parse(text)
const toScanPage = ([cursor, keys]) => ({ keys, cursor })

function serialize(value, what) {
  let text
  try {
    text = JSON.stringify(value)
  } catch (err) {
    throw storeError(TypeError, codes.SERIALIZE, `${what} cannot be serialized to JSON: ${err.message}`)
  }
  if (text === undefined) {
    throw storeError(TypeError, codes.SERIALIZE, `${what} cannot be serialized to JSON (got ${typeof value})`)
  }
  return text
}

function checkName(name, what) {
  if (typeof name !== 'string') throw invalidArgument(`${what} must be a string, got ${name === null ? 'null' : typeof name}`)
  // A lone surrogate has no UTF-8 form: two such names would silently become one.
  if (!name.isWellFormed()) throw invalidArgument(`${what} must be well-formed Unicode (it has a lone surrogate)`)
}

function checkCallback(callback) {
  if (typeof callback !== 'function') throw invalidArgument('callback must be a function')
}

// Seconds (fractions allowed) to whole milliseconds, never rounding a positive TTL to 0.
const toMilliseconds = (seconds) => Math.max(1, Math.round(seconds * 1000))
// Past this many seconds the milliseconds are no longer exact (about 285,000 years).
const MAX_TTL = Number.MAX_SAFE_INTEGER / 1000

// What a bad value was, for messages: never the value itself when it could be large.
function described(value) {
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value)
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`
}

// Per-call options are checked like factory options: a typo such as { tll: 60 } must not
// store a key without its expiry. The first key of `object` that is not `known`, if any.
function unknownKey(object, known) {
  for (const name of Object.keys(object)) {
    if (!known.has(name)) return name
  }
  return undefined
}

const SET_OPTIONS = new Set(['ttl'])

function setTtl(options) {
  if (options === undefined || options === null) return undefined
  if (typeof options !== 'object' || Array.isArray(options)) throw invalidArgument(`set options must be an object like { ttl: seconds }, got ${described(options)}`)
  const unknown = unknownKey(options, SET_OPTIONS)
  if (unknown !== undefined) throw invalidArgument(`unknown set option "${unknown}"; known: ${[...SET_OPTIONS].join(', ')}`)
  return storeTtl(options.ttl, 'ttl')
}

// A TTL to store with (set, setNX, an mset entry): none, 0 or a number of seconds.
function storeTtl(ttl, what) {
  if (ttl === undefined || ttl === null) return undefined
  if (typeof ttl !== 'number') throw invalidArgument(`${what} must be a number of seconds, got ${described(ttl)}`)
  if (!Number.isFinite(ttl) || ttl < 0 || ttl > MAX_TTL) throw outOfRange(`${what} must be a number of seconds from 0 to ${MAX_TTL}, got ${described(ttl)}`)
  return ttl === 0 ? undefined : toMilliseconds(ttl)
}

function expireTtl(ttl) {
  if (typeof ttl !== 'number') throw invalidArgument(`ttl must be a number of seconds, got ${described(ttl)}`)
  if (!Number.isFinite(ttl) || ttl <= 0 || ttl > MAX_TTL) throw outOfRange(`ttl must be a number of seconds above 0, at most ${MAX_TTL}, got ${described(ttl)}`)
  return toMilliseconds(ttl)
}

// The other per-call option objects: exactly the keys @igniter-js/store's types declare.
const SCAN_OPTIONS = new Set(['cursor', 'count'])
const APPEND_OPTIONS = new Set(['maxLen', 'approximate'])
const READ_OPTIONS = new Set(['count', 'blockMs'])
const RANGE_OPTIONS = new Set(['startId', 'endId', 'count', 'reverse'])
const ENTRY_FIELDS = new Set(['key', 'value', 'ttl'])
const NO_OPTIONS = Object.freeze({})

function optionsOf(options, known, what) {
  if (options === undefined || options === null) return NO_OPTIONS
  if (typeof options !== 'object' || Array.isArray(options)) throw invalidArgument(`${what} must be an object, got ${described(options)}`)
  const unknown = unknownKey(options, known)
  if (unknown !== undefined) throw invalidArgument(`unknown ${what} key "${unknown}"; known: ${[...known].join(', ')}`)
  return options
}

// An integer option: absent gives `fallback`; `min` is the least allowed.
function integerOption(value, what, min, fallback) {
  if (value === undefined || value === null) return fallback
  if (typeof value !== 'number') throw invalidArgument(`${what} must be a number, got ${described(value)}`)
  if (!Number.isSafeInteger(value) || value < min) throw outOfRange(`${what} must be an integer from ${min} to ${Number.MAX_SAFE_INTEGER}, got ${described(value)}`)
  return value
}

function booleanOption(value, what) {
  if (value === undefined || value === null) return false
  if (typeof value !== 'boolean') throw invalidArgument(`${what} must be a boolean, got ${described(value)}`)
  return value
}

function checkArray(value, what) {
  if (!Array.isArray(value)) throw invalidArgument(`${what} must be an array, got ${described(value)}`)
}

const U64_MAX = '18446744073709551615'
const isU64 = (digits) => digits.length < 20 || (digits.length === 20 && digits <= U64_MAX)
// Redis stream ids: `ms-seq` or `ms` (64-bit numbers), and, where a range takes them, `-` and
// `+`; `$` (the last entry) where a group starts.
const STREAM_ID = /^(\d+)(?:-(\d+))?$/

function checkStreamId(id, what, { ends = false, last = false } = {}) {
  if (typeof id !== 'string') throw invalidArgument(`${what} must be a string, got ${described(id)}`)
  if ((ends && (id === '-' || id === '+')) || (last && id === '$')) return id
  const parts = STREAM_ID.exec(id)
  if (parts === null || !isU64(parts[1]) || (parts[2] !== undefined && !isU64(parts[2]))) {
    const forms = ["'ms-seq'", "'ms'"]
    if (ends) forms.push("'-'", "'+'")
    if (last) forms.push("'$'")
    throw invalidArgument(`${what} must be a stream id (${forms.join(', ')}), got ${described(id)}`)
  }
  return id
}

const defaultOnError = (err) => process.emitWarning(err)

/**
 * The Igniter.js `IgniterStoreAdapter`, over either backend. Promises wait in `#pending` by
 * request id; the native side completes them in batches through `#dispatch`.
 */
class StoreAdapter {
  #handle
  #keyPrefix
  #channelPrefix
  #onError
  #client
  #description
  #secrets
  #pending = new Map()
  #nextId = 1
  #channels = new Map()
  #closing = null
  #whenIdle = null
  // Events drained but not yet handled, when a drain ran out of its time budget.
  #unhandled = null
  #unhandledAt = 0
  #unhandledMore = false
  // Ref'd only while calls are pending or subscriptions exist, so idle processes exit.
  #keepAlive = setInterval(noop, 2 ** 31 - 1).unref()

  constructor(createNative, { keyPrefix, channelPrefix = keyPrefix, onError, client, description, secrets, warnings = [] }) {
    this.#keyPrefix = keyPrefix
    this.#channelPrefix = channelPrefix
    this.#onError = onError ?? defaultOnError
    this.#client = client
    this.#description = description
    this.#secrets = secrets
    try {
      this.#handle = createNative(this.#dispatch)
    } catch (err) {
      clearInterval(this.#keepAlive)
      throw err
    }
    // Settings that work but are likely not what was meant: said once, after the caller has
    // the adapter (and could not have been told by a throw).
    for (const warning of warnings) queueMicrotask(() => this.#report(warning))
  }

  get client() {
    return this.#client
  }

  get(key) {
    return this.#keyed(GET, key, parseValue)
  }

  set(key, value, options) {
    return this.#store(SET, key, value, options, toNothing)
  }

  delete(key) {
    return this.#keyed(DELETE, key, toNothing)
  }

  has(key) {
    return this.#keyed(HAS, key, toBoolean)
  }

  increment(key, delta = 1) {
    try {
      checkName(key, 'key')
      if (typeof delta !== 'number') throw invalidArgument(`delta must be a number, got ${described(delta)}`)
      if (!Number.isSafeInteger(delta)) throw outOfRange(`delta must be a safe integer, got ${described(delta)}`)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(INCREMENT, key, undefined, delta, 0, toNumber)
  }

  expire(key, ttl) {
    let ttlMs
    try {
      checkName(key, 'key')
      ttlMs = expireTtl(ttl)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(EXPIRE, key, undefined, ttlMs, 0, toNothing)
  }

  setNX(key, value, options) {
    return this.#store(SET_IF_ABSENT, key, value, options, toBoolean)
  }

  mget(keys) {
    try {
      checkArray(keys, 'keys')
      for (let i = 0; i < keys.length; i++) checkName(keys[i], `keys[${i}]`)
    } catch (err) {
      return Promise.reject(err)
    }
    if (keys.length === 0) return this.#closing ? Promise.reject(closedError()) : Promise.resolve([])
    return this.#callArgs(GET_MANY, '', undefined, keys, 0, 0, fromJson)
  }

  mset(entries) {
    let args
    try {
      checkArray(entries, 'entries')
      args = new Array(entries.length * 3)
      for (let i = 0; i < entries.length; i++) {
        const entry = entries[i]
        const what = `entries[${i}]`
        if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw invalidArgument(`${what} must be an object like { key, value, ttl? }, got ${described(entry)}`)
        const unknown = unknownKey(entry, ENTRY_FIELDS)
        if (unknown !== undefined) throw invalidArgument(`unknown ${what} key "${unknown}"; known: ${[...ENTRY_FIELDS].join(', ')}`)
        checkName(entry.key, `${what}.key`)
        args[i * 3] = entry.key
        args[i * 3 + 1] = serialize(entry.value, `${what}.value`)
        const ttlMs = storeTtl(entry.ttl, `${what}.ttl`)
        args[i * 3 + 2] = ttlMs === undefined ? '' : String(ttlMs)
      }
    } catch (err) {
      return Promise.reject(err)
    }
    if (entries.length === 0) return this.#closing ? Promise.reject(closedError()) : Promise.resolve()
    return this.#callArgs(SET_MANY, '', undefined, args, 0, 0, toNothing)
  }

  scan(pattern, options) {
    let cursor, count
    try {
      checkName(pattern, 'pattern')
      const given = optionsOf(options, SCAN_OPTIONS, 'scan options')
      cursor = given.cursor ?? '0'
      if (typeof cursor !== 'string') throw invalidArgument(`cursor must be a string, got ${described(cursor)}`)
      count = integerOption(given.count, 'count', 1, 10)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(SCAN, pattern, cursor, count, 0, toScanPage)
  }

  xadd(stream, message, options) {
    let payload, maxLen, approximate
    try {
      checkName(stream, 'stream')
      payload = serialize(message, 'message')
      const given = optionsOf(options, APPEND_OPTIONS, 'xadd options')
      maxLen = integerOption(given.maxLen, 'maxLen', 0, -1)
      approximate = booleanOption(given.approximate, 'approximate')
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(STREAM_ADD, stream, payload, maxLen, approximate ? 1 : 0, asIs)
  }

  xgroupCreate(stream, group, startId = '0') {
    try {
      checkName(stream, 'stream')
      checkName(group, 'group')
      checkStreamId(startId, 'startId', { last: true })
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#callArgs(GROUP_CREATE, stream, group, [startId], 0, 0, toNothing)
  }

  xreadgroup(stream, group, consumer, options) {
    let count, blockMs
    try {
      checkName(stream, 'stream')
      checkName(group, 'group')
      checkName(consumer, 'consumer')
      const given = optionsOf(options, READ_OPTIONS, 'xreadgroup options')
      count = integerOption(given.count, 'count', 1, 0)
      blockMs = integerOption(given.blockMs, 'blockMs', 0, 0)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#callArgs(GROUP_READ, stream, group, [consumer], count, blockMs, fromJson, blockMs > 0)
  }

  xrange(stream, options) {
    return this.#range(RANGE, stream, options, 'xrange options')
  }

  xrevrange(stream, options) {
    return this.#range(RANGE_REVERSE, stream, options, 'xrevrange options')
  }

  xack(stream, group, ids) {
    try {
      checkName(stream, 'stream')
      checkName(group, 'group')
      checkArray(ids, 'ids')
      for (let i = 0; i < ids.length; i++) checkStreamId(ids[i], `ids[${i}]`)
    } catch (err) {
      return Promise.reject(err)
    }
    if (ids.length === 0) return this.#closing ? Promise.reject(closedError()) : Promise.resolve()
    return this.#callArgs(ACK, stream, group, ids, 0, 0, toNothing)
  }

  publish(channel, message) {
    let payload
    try {
      checkName(channel, 'channel')
      payload = serialize(message, 'message')
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(PUBLISH, channel, payload, 0, 0, toNothing)
  }

  subscribe(channel, callback) {
    try {
      checkName(channel, 'channel')
      checkCallback(callback)
    } catch (err) {
      return Promise.reject(err)
    }
    if (this.#closing) return Promise.reject(closedError())
    const known = this.#channels.get(channel)
    if (known) {
      known.callbacks.add(callback)
      return known.ready
    }
    const entry = { callbacks: new Set([callback]), ready: null }
    this.#channels.set(channel, entry)
    this.#keepAlive.ref()
    entry.ready = this.#call(SUBSCRIBE, channel, undefined, 0, 0, toNothing).catch((err) => {
      if (this.#channels.get(channel) === entry) this.#channels.delete(channel)
      this.#refreshKeepAlive()
      throw err
    })
    return entry.ready
  }

  unsubscribe(channel, callback) {
    try {
      checkName(channel, 'channel')
      if (callback !== undefined) checkCallback(callback)
    } catch (err) {
      return Promise.reject(err)
    }
    const entry = this.#channels.get(channel)
    if (!entry) return Promise.resolve()
    if (callback !== undefined) {
      entry.callbacks.delete(callback)
      if (entry.callbacks.size > 0) return Promise.resolve()
    }
    this.#channels.delete(channel)
    const done = this.#call(UNSUBSCRIBE, channel, undefined, 0, 0, toNothing)
    this.#refreshKeepAlive()
    return done
  }

  /**
   * Lets calls in flight settle, then releases connections, subscriptions and callbacks.
   * Blocking reads are not waited for: they reject with ERR_STORE_CLOSED at once.
   */
  close() {
    if (!this.#closing) {
      // Blocking reads end now: the pool stops reading for them first, then a read whose
      // reply has already come settles with it (its entries are this consumer's now), and
      // only the others are rejected.
      native.endBlockingReads(this.#handle)
      this.#settleAll(native.drain(this.#handle, DRAIN_LIMIT, false))
      for (const [id, call] of this.#pending) {
        if (!call.blocking) continue
        this.#pending.delete(id)
        call.reject(closedError())
      }
      this.#closing = (async () => {
        // A loop: a settled call's continuation may start an unsubscribe before this resumes.
        while (this.#pending.size > 0) await new Promise((resolve) => (this.#whenIdle = resolve))
        this.#channels.clear()
        native.close(this.#handle)
        this.#handle = RELEASED
        clearInterval(this.#keepAlive)
      })()
    }
    return this.#closing
  }

  [inspect.custom](depth, options) {
    const state = this.#closing ? 'closed' : 'open'
    return `StoreAdapter { ${this.#description}, keyPrefix: ${inspect(this.#keyPrefix, options)}, ${state} }`
  }

  #keyed(op, key, decode) {
    try {
      checkName(key, 'key')
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(op, key, undefined, 0, 0, decode)
  }

  // set and setNX: a value stored under a key, with set's options.
  #store(op, key, value, options, decode) {
    let payload, ttlMs
    try {
      checkName(key, 'key')
      payload = serialize(value, 'value')
      ttlMs = setTtl(options)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(op, key, payload, ttlMs, 0, decode)
  }

  #range(op, stream, options, what) {
    let startId, endId, count
    try {
      checkName(stream, 'stream')
      const given = optionsOf(options, RANGE_OPTIONS, what)
      startId = checkStreamId(given.startId ?? '-', 'startId', { ends: true })
      endId = checkStreamId(given.endId ?? '+', 'endId', { ends: true })
      count = integerOption(given.count, 'count', 1, 0)
      // Accepted because the manager passes it; the method says the direction.
      booleanOption(given.reverse, 'reverse')
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#callArgs(op, stream, undefined, [startId, endId], count, 0, fromJson)
  }

  #call(op, name, payload, first, second, decode) {
    if (this.#closing && op !== UNSUBSCRIBE) return Promise.reject(closedError())
    const id = this.#prepare(op, first, second)
    return this.#submitted(id, native.submit(name, payload), decode, false)
  }

  // A call with more strings than a name and a payload; `blocking` when it may wait on the
  // server (a blocking read), so close() ends it rather than waiting for it.
  #callArgs(op, name, payload, args, first, second, decode, blocking = false) {
    if (this.#closing) return Promise.reject(closedError())
    const id = this.#prepare(op, first, second)
    return this.#submitted(id, native.submitArgs(name, payload, args), decode, blocking)
  }

  #prepare(op, first, second) {
    const id = this.#nextId
    this.#nextId = id === MAX_ID ? 1 : id + 1
    callBuffer[0] = this.#handle
    callBuffer[1] = id
    callBuffer[2] = op
    callBuffer[3] = first === undefined ? 0 : first
    callBuffer[4] = second
    return id
  }

  #submitted(id, reply, decode, blocking) {
    if (reply !== undefined) {
      return isFailure(reply) ? Promise.reject(fromNative(reply, this.#secrets)) : Promise.resolve(decode(reply))
    }
    if (this.#pending.size === 0) this.#keepAlive.ref()
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, decode, blocking })
    })
  }

  // Called by the native wake; settles the completions and delivers the messages queued.
  #dispatch = () => {
    let events = this.#unhandled
    let i = this.#unhandledAt
    let more = this.#unhandledMore
    if (events === null) {
      events = native.drain(this.#handle, DRAIN_LIMIT, true)
      i = 0
      // A full batch: more may wait, and native rings no wake until JS has drained them all.
      more = events.length === DRAIN_LIMIT * 2
    } else {
      // Messages wait from an earlier turn: calls' outcomes that came since go first.
      this.#settleAll(native.drain(this.#handle, DRAIN_LIMIT, false))
    }
    this.#unhandled = null
    const budgetEnd = performance.now() + DELIVERY_BUDGET_MS
    for (; i < events.length; i += 2) {
      const head = events[i]
      const body = events[i + 1]
      if (typeof head === 'number') this.#settle(head, body)
      else if (typeof head === 'string') {
        this.#deliver(head, body)
        if (i + 2 < events.length && performance.now() > budgetEnd) {
          this.#unhandled = events
          this.#unhandledAt = i + 2
          this.#unhandledMore = more
          setImmediate(this.#dispatch)
          return
        }
      } else this.#failed(fromNative(body, this.#secrets))
    }
    if (more) setImmediate(this.#dispatch)
    if (this.#pending.size === 0) {
      this.#refreshKeepAlive()
      if (this.#whenIdle) this.#whenIdle()
    }
  }

  #settleAll(events) {
    for (let i = 0; i < events.length; i += 2) {
      if (typeof events[i] === 'number') this.#settle(events[i], events[i + 1])
      else this.#failed(fromNative(events[i + 1], this.#secrets))
    }
  }

  // An error that belongs to no call; one that gives up a subscription makes this side
  // forget the channel first, so both sides agree on what is subscribed.
  #failed(err) {
    if (typeof err.channel === 'string') {
      const channel = err.channel.startsWith(this.#channelPrefix) ? err.channel.slice(this.#channelPrefix.length) : err.channel
      err.channel = channel
      this.#channels.delete(channel)
      this.#refreshKeepAlive()
    }
    this.#report(err)
  }

  #settle(id, reply) {
    const call = this.#pending.get(id)
    if (call === undefined) return
    this.#pending.delete(id)
    if (isFailure(reply)) call.reject(fromNative(reply, this.#secrets))
    else call.resolve(call.decode(reply))
  }

  #deliver(fullChannel, payload) {
    if (!fullChannel.startsWith(this.#channelPrefix)) return
    const channel = fullChannel.slice(this.#channelPrefix.length)
    const entry = this.#channels.get(channel)
    if (entry === undefined) return
    const message = parseValue(payload)
    for (const callback of entry.callbacks) {
      try {
        const result = callback(message, channel)
        if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
          result.then(undefined, (err) => this.#report(err))
        }
      } catch (err) {
        this.#report(err)
      }
    }
  }

  #report(err) {
    try {
      this.#onError(err)
    } catch (failure) {
      process.emitWarning(`kindling: onError threw: ${redact(failure && failure.message, this.#secrets)}`)
    }
  }

  #refreshKeepAlive() {
    if (this.#pending.size > 0 || this.#channels.size > 0) this.#keepAlive.ref()
    else this.#keepAlive.unref()
  }
}

function createRedisStoreAdapter(input) {
  const settings = redisOptions(input)
  return new StoreAdapter((wake) => {
    const handle = native.createRedis(settings.native, settings.keyPrefix, settings.channelPrefix, settings.maxPubSubBacklog, wake, settings.natMapFunction)
    if (isFailure(handle)) {
      const err = fromNative(handle, settings.secrets)
      throw err.code === codes.INVALID_ARGUMENT ? storeError(TypeError, err.code, err.message) : err
    }
    return handle
  }, {
    keyPrefix: settings.keyPrefix,
    channelPrefix: settings.channelPrefix,
    onError: settings.onError,
    client: settings.client ?? Object.freeze({ backend: 'redis', target: settings.description }),
    description: `redis ${settings.description}`,
    secrets: settings.secrets,
    warnings: settings.warnings.map((message) => storeError(Error, codes.INVALID_ARGUMENT, message)),
  })
}

function createMemoryStoreAdapter(input) {
  const settings = memoryOptions(input)
  const client = Object.freeze({ backend: 'memory', name: settings.name ?? null })
  return new StoreAdapter((wake) => native.createMemory(settings.name, settings.keyPrefix, settings.maxPubSubBacklog, wake), {
    keyPrefix: settings.keyPrefix,
    onError: settings.onError,
    client,
    description: settings.name ? `memory "${settings.name}"` : 'memory',
    secrets: [],
  })
}

module.exports = { createRedisStoreAdapter, createMemoryStoreAdapter, errorCodes: codes }
