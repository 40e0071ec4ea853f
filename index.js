'use strict'

const { inspect } = require('node:util')
const { performance } = require('node:perf_hooks')
const native = require('./lib/native.js')
const { redisOptions, memoryOptions } = require('./lib/options.js')
const { codes, storeError, invalidArgument, outOfRange, closedError, redact, fromNative } = require('./lib/errors.js')

// Operation numbers, defined once in Rust (src/backend/mod.rs).
const {
  Get: GET, Set: SET, Delete: DELETE, Has: HAS, Increment: INCREMENT, Expire: EXPIRE,
  Publish: PUBLISH, Subscribe: SUBSCRIBE, Unsubscribe: UNSUBSCRIBE,
} = native.Operation

const MAX_ID = 0xffffffff
// [handle, id, op, ttlMs] of the next native.submit: numbers cross to Rust here, not as
// arguments, which napi charges for one by one. One array per thread, shared by every copy
// of this module.
const callBuffer = native.registerCallBuffer(new Float64Array(4))
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
const toNumber = (reply) => reply
const toNothing = noop

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
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`
}

// Per-call options are checked like factory options: a typo such as { tll: 60 } must not
// store a key without its expiry.
const SET_OPTIONS = new Set(['ttl'])

function setTtl(options) {
  if (options === undefined || options === null) return undefined
  if (typeof options !== 'object' || Array.isArray(options)) throw invalidArgument(`set options must be an object like { ttl: seconds }, got ${described(options)}`)
  for (const name of Object.keys(options)) {
    if (!SET_OPTIONS.has(name)) throw invalidArgument(`unknown set option "${name}"; known: ${[...SET_OPTIONS].join(', ')}`)
  }
  const ttl = options.ttl
  if (ttl === undefined || ttl === null) return undefined
  if (typeof ttl !== 'number') throw invalidArgument(`ttl must be a number of seconds, got ${described(ttl)}`)
  if (!Number.isFinite(ttl) || ttl < 0 || ttl > MAX_TTL) throw outOfRange(`ttl must be a number of seconds from 0 to ${MAX_TTL}, got ${described(ttl)}`)
  return ttl === 0 ? undefined : toMilliseconds(ttl)
}

function expireTtl(ttl) {
  if (typeof ttl !== 'number') throw invalidArgument(`ttl must be a number of seconds, got ${described(ttl)}`)
  if (!Number.isFinite(ttl) || ttl <= 0 || ttl > MAX_TTL) throw outOfRange(`ttl must be a number of seconds above 0, at most ${MAX_TTL}, got ${described(ttl)}`)
  return toMilliseconds(ttl)
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

  constructor(createNative, { keyPrefix, channelPrefix = keyPrefix, onError, client, description, secrets }) {
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
  }

  get client() {
    return this.#client
  }

  get(key) {
    return this.#keyed(GET, key, undefined, undefined, parseValue)
  }

  set(key, value, options) {
    let payload, ttlMs
    try {
      checkName(key, 'key')
      payload = serialize(value, 'value')
      ttlMs = setTtl(options)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(SET, key, payload, ttlMs, toNothing)
  }

  delete(key) {
    return this.#keyed(DELETE, key, undefined, undefined, toNothing)
  }

  has(key) {
    return this.#keyed(HAS, key, undefined, undefined, toBoolean)
  }

  increment(key) {
    return this.#keyed(INCREMENT, key, undefined, undefined, toNumber)
  }

  expire(key, ttl) {
    let ttlMs
    try {
      checkName(key, 'key')
      ttlMs = expireTtl(ttl)
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(EXPIRE, key, undefined, ttlMs, toNothing)
  }

  publish(channel, message) {
    let payload
    try {
      checkName(channel, 'channel')
      payload = serialize(message, 'message')
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(PUBLISH, channel, payload, undefined, toNothing)
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
    entry.ready = this.#call(SUBSCRIBE, channel, undefined, undefined, toNothing).catch((err) => {
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
    const done = this.#call(UNSUBSCRIBE, channel, undefined, undefined, toNothing)
    this.#refreshKeepAlive()
    return done
  }

  /** Lets calls in flight settle, then releases connections, subscriptions and callbacks. */
  close() {
    if (!this.#closing) {
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

  #keyed(op, key, payload, ttlMs, decode) {
    try {
      checkName(key, 'key')
    } catch (err) {
      return Promise.reject(err)
    }
    return this.#call(op, key, payload, ttlMs, decode)
  }

  #call(op, name, payload, ttlMs, decode) {
    if (this.#closing && op !== UNSUBSCRIBE) return Promise.reject(closedError())
    const id = this.#nextId
    this.#nextId = id === MAX_ID ? 1 : id + 1
    callBuffer[0] = this.#handle
    callBuffer[1] = id
    callBuffer[2] = op
    callBuffer[3] = ttlMs === undefined ? 0 : ttlMs
    const reply = native.submit(name, payload)
    if (reply !== undefined) {
      return Array.isArray(reply) ? Promise.reject(fromNative(reply, this.#secrets)) : Promise.resolve(decode(reply))
    }
    if (this.#pending.size === 0) this.#keepAlive.ref()
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, decode })
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
    if (Array.isArray(reply)) call.reject(fromNative(reply, this.#secrets))
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
    const handle = native.createRedis(settings.native, settings.keyPrefix, settings.channelPrefix, settings.maxPubSubBacklog, wake)
    if (Array.isArray(handle)) {
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
