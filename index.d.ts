// Public types of Kindling, hand-written; binding.d.ts (generated) is private.

export type StoreErrorCode =
  | 'ERR_STORE_INVALID_ARGUMENT'
  | 'ERR_STORE_SERIALIZE'
  | 'ERR_STORE_NOT_INTEGER'
  | 'ERR_STORE_CONNECTION'
  | 'ERR_STORE_TIMEOUT'
  | 'ERR_STORE_AUTH'
  | 'ERR_STORE_CLOSED'
  | 'ERR_STORE_REDIS'

/** Every error Kindling makes is an Error (TypeError, RangeError) with one of these codes. */
export interface StoreError extends Error {
  code: StoreErrorCode
  /**
   * The server kept saying the command did not run and the condition will pass (LOADING, BUSY,
   * MASTERDOWN, TRYAGAIN, maxclients) until the call's deadline: trying again later may succeed.
   */
  retryable?: true
  /** On an error reported to `onError` when a subscription was given up: its channel. */
  channel?: string
  /** Under a failed connection: the system error, as Node reports socket errors. */
  cause?: Error & { code: string; syscall: string; address?: string; port?: number }
}

export declare const errorCodes: {
  readonly INVALID_ARGUMENT: 'ERR_STORE_INVALID_ARGUMENT'
  readonly SERIALIZE: 'ERR_STORE_SERIALIZE'
  readonly NOT_INTEGER: 'ERR_STORE_NOT_INTEGER'
  readonly CONNECTION: 'ERR_STORE_CONNECTION'
  readonly TIMEOUT: 'ERR_STORE_TIMEOUT'
  readonly AUTH: 'ERR_STORE_AUTH'
  readonly CLOSED: 'ERR_STORE_CLOSED'
  readonly REDIS: 'ERR_STORE_REDIS'
}

export type MessageCallback<T = any> = (message: T, channel: string) => void | Promise<void>

export interface KeyValueOptions {
  /** Seconds, fractions allowed (millisecond precision). 0 or none: no expiry. */
  ttl?: number
}

/** An entry of `mset`. */
export interface BatchEntry {
  key: string
  value: any
  /** Seconds, fractions allowed; none or 0: no expiry. */
  ttl?: number
}

export interface ScanOptions {
  /** '0' (the default) starts a scan; then pass the cursor the last page returned. */
  cursor?: string
  /** About how many keys a page looks at; default 10. */
  count?: number
}

export interface ScanResult {
  /** Matching keys, without the adapter's `keyPrefix`. */
  keys: string[]
  /** '0' when the scan is done. */
  cursor: string
}

export interface StreamAppendOptions {
  /** Trim the stream to this many entries, the oldest going first. */
  maxLen?: number
  /** Trim with `~`: Redis may keep a few more entries, at less cost. */
  approximate?: boolean
}

export interface StreamReadOptions {
  /** At most this many entries. */
  count?: number
  /** Milliseconds to wait for an entry when none is there; none or 0: do not wait. */
  blockMs?: number
}

export interface StreamRangeOptions {
  /** The low end of the range (default '-', the first entry), in both directions. */
  startId?: string
  /** The high end of the range (default '+', the last entry), in both directions. */
  endId?: string
  /** At most this many entries. */
  count?: number
  /** Accepted and ignored: `xrange` reads oldest first, `xrevrange` newest first. */
  reverse?: boolean
}

export interface StreamMessage<T = any> {
  /** `ms-seq`. */
  id: string
  /** The entry's `data` field JSON-parsed, or its fields when `data` is missing or not JSON. */
  message: T
}

/**
 * The Igniter.js `IgniterStoreAdapter` contract (`@igniter-js/core`'s, and the larger one of
 * `@igniter-js/store`), plus `close()`.
 */
export interface IgniterStoreAdapter<TClient = unknown> {
  /** The ioredis instance the adapter was made from, or a description of its backend. */
  readonly client: TClient
  /** The value stored under `key`, JSON-parsed; `null` when missing or expired. */
  get<T = any>(key: string): Promise<T | null>
  /** Stores `JSON.stringify(value)`; `ttl` in seconds (fractions allowed), none or 0 for no expiry. */
  set(key: string, value: any, options?: KeyValueOptions): Promise<void>
  /** Removes the key, whether or not it exists. */
  delete(key: string): Promise<void>
  /** Whether the key exists and has not expired. */
  has(key: string): Promise<boolean>
  /**
   * Adds `delta` (a safe integer, default 1, negative allowed) atomically and resolves to the
   * new value; a missing key counts from 0.
   */
  increment(key: string, delta?: number): Promise<number>
  /** Sets the key's time to live in seconds; a missing key is left alone. */
  expire(key: string, ttl: number): Promise<void>
  /** Sends `JSON.stringify(message)` to every subscriber of `channel`. */
  publish(channel: string, message: any): Promise<void>
  /** Calls `callback(message, channel)` for each message; resolves once the server confirmed. */
  subscribe<T = any>(channel: string, callback: MessageCallback<T>): Promise<void>
  /** Removes `callback`, or every callback of `channel`. */
  unsubscribe(channel: string, callback?: MessageCallback): Promise<void>
  /** Stores only if the key is absent, with its TTL, in one step; resolves `true` if it stored. */
  setNX(key: string, value: any, options?: KeyValueOptions): Promise<boolean>
  /** The values in key order, `null` for missing ones. */
  mget<T = any>(keys: string[]): Promise<(T | null)[]>
  /** Stores every entry, each with its own TTL or none; nothing is written if a value cannot be serialized. */
  mset(entries: BatchEntry[]): Promise<void>
  /** One page of the keys matching `pattern` (Redis glob rules); every key present for the whole scan is returned at least once. */
  scan(pattern: string, options?: ScanOptions): Promise<ScanResult>
  /** Appends `{ data: JSON.stringify(message) }` and resolves to the entry's id. */
  xadd(stream: string, message: any, options?: StreamAppendOptions): Promise<string>
  /** Creates the consumer group (and the stream if missing); `startId` '0' (default), '$' or an id. Idempotent. */
  xgroupCreate(stream: string, group: string, startId?: string): Promise<void>
  /**
   * Entries never delivered to the group, now delivered to `consumer`. With `blockMs`, waits
   * for one on a connection of its own, never delaying other calls; `close()` ends the wait
   * (ERR_STORE_CLOSED).
   */
  xreadgroup<T = any>(stream: string, group: string, consumer: string, options?: StreamReadOptions): Promise<StreamMessage<T>[]>
  /** Entries from `startId` to `endId`, oldest first. */
  xrange<T = any>(stream: string, options?: StreamRangeOptions): Promise<StreamMessage<T>[]>
  /** Entries from `endId` down to `startId`, newest first. */
  xrevrange<T = any>(stream: string, options?: StreamRangeOptions): Promise<StreamMessage<T>[]>
  /** Acknowledges the entries for the group. */
  xack(stream: string, group: string, ids: string[]): Promise<void>
}

export interface StoreAdapter<TClient = unknown> extends IgniterStoreAdapter<TClient> {
  /** Lets calls in flight settle, then releases connections and subscriptions. Idempotent. */
  close(): Promise<void>
}

export interface TlsOptions {
  /** PEM certificate authority to trust instead of the bundled web roots. */
  ca?: string | Buffer | Array<string | Buffer>
  /** PEM client certificate and key, for servers with `tls-auth-clients yes`. */
  cert?: string | Buffer
  key?: string | Buffer
  /** The name the server's certificate must carry, when it is not `host`. */
  servername?: string
  /** Certificates are verified unless this is `false`. */
  rejectUnauthorized?: boolean
}

export interface SentinelOptions {
  /** `redis://host:port` or `host:port` (port 26379 when left out); more are learned from them. */
  sentinels: Array<string | { host: string; port?: number }>
  /** The name the sentinels monitor the master by (`sentinel monitor <name> ...`). */
  masterName: string
  /** The sentinels' own credentials, when they have `requirepass` or ACL users. */
  username?: string
  password?: string
}

export interface ClusterOptions {
  /** Any of the cluster's nodes; the others are found from the slot map. */
  nodes: Array<string | { host: string; port?: number }>
  /**
   * The addresses the nodes announce (`'host:port'`, as in `CLUSTER SLOTS` and `MOVED`) mapped
   * to where this process reaches them, for nodes behind NAT or in containers. As a function,
   * it is called on the JS thread when a connection to a node is made (once at a time per address,
   * the answer reused for a second); nothing returned means the address as announced.
   */
  natMap?:
    | Record<string, { host: string; port: number }>
    | ((announced: string) => { host: string; port: number } | null | undefined)
  /**
   * `'classic'` (default): SUBSCRIBE/PUBLISH, on one connection to any node. `'sharded'`:
   * SSUBSCRIBE/SPUBLISH on the master of each channel's slot, following the slot as it moves.
   */
  pubsub?: 'classic' | 'sharded'
}

export interface RedisStoreOptions {
  /** `redis://[user:password@]host[:port][/db]`, `rediss://…`, `unix:///path` or `redis+unix:///path`. */
  url?: string
  host?: string
  port?: number
  username?: string
  password?: string
  db?: number
  tls?: boolean | TlsOptions
  /** Prepended to every key and channel. */
  keyPrefix?: string
  /** Milliseconds to reach the server; default 10000. */
  connectTimeout?: number
  /** Milliseconds to wait for a reply; default 5000. */
  commandTimeout?: number
  /**
   * Redis Cluster: any of its nodes, as `redis://host:port` (`rediss://` turns TLS on for all),
   * `host:port` or `{ host, port }`. Not with `url`, `host`, `port` or a `db` other than 0.
   */
  cluster?: ClusterOptions
  /**
   * Find the master through Redis Sentinel and follow its failovers. Not with `url`, `host`,
   * `port` or `cluster`; the top-level `username`, `password`, `db` and `tls` are the data
   * nodes'.
   */
  sentinel?: SentinelOptions
  /** Errors that belong to no call: a callback that threw, a lost connection. Default: `process.emitWarning`. */
  onError?: (error: Error) => void
  /** Bytes of Pub/Sub messages that may wait in native memory for JS; default 64 MiB. */
  maxPubSubBacklog?: number
  /**
   * Connections blocking stream reads may hold at once, one each; default 16. Past it, reads
   * wait for one to come free, within `connectTimeout`. Idle ones close after 30 s.
   */
  maxBlockingConnections?: number
}

/** What `client` is when the adapter was not made from an ioredis instance. */
export interface RedisConnectionDescription {
  readonly backend: 'redis'
  /** The server, without credentials. */
  readonly target: string
}

export interface MemoryStoreDescription {
  readonly backend: 'memory'
  readonly name: string | null
}

/** Duck type of an ioredis instance: its settings are read, Kindling opens its own connections. */
export interface IoredisLike {
  options: { host?: string; port?: number; path?: string; [key: string]: any }
  duplicate(...args: any[]): any
}

/**
 * A store adapter on Redis. Takes nothing or `null`/`undefined` (then `REDIS_URL`, else
 * `redis://127.0.0.1:6379`), a URL, an options object, or an ioredis instance whose settings
 * it reads (it opens its own connections; `client` is then that instance).
 */
export declare function createRedisStoreAdapter(url?: string | null): StoreAdapter<RedisConnectionDescription>
export declare function createRedisStoreAdapter(options: RedisStoreOptions): StoreAdapter<RedisConnectionDescription>
export declare function createRedisStoreAdapter<TClient extends IoredisLike>(client: TClient): StoreAdapter<TClient>

export interface MemoryStoreOptions {
  /** Prepended to every key and channel. */
  keyPrefix?: string
  /** Adapters with the same name share one store in this process, across worker threads too. */
  name?: string
  onError?: (error: Error) => void
  /** Bytes of Pub/Sub messages that may wait for JS; past it they are dropped for this adapter. Default 64 MiB. */
  maxPubSubBacklog?: number
}

/** A store adapter in this process: no server; adapters with the same `name` share one store. */
export declare function createMemoryStoreAdapter(options?: MemoryStoreOptions): StoreAdapter<MemoryStoreDescription>
