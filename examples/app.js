'use strict'

// An Igniter.js app on a Kindling store, written the way the Igniter.js Store docs show:
// a cached query, a rate limit with increment + expire, and a notification over Pub/Sub.
// Runs on the embedded memory store, or on Redis when REDIS_URL is set.

const { Igniter } = require('@igniter-js/core')
const { createMemoryStoreAdapter, createRedisStoreAdapter } = require('..')

const store = process.env.REDIS_URL
  ? createRedisStoreAdapter({ url: process.env.REDIS_URL, keyPrefix: 'kindling-example:' })
  : createMemoryStoreAdapter({ keyPrefix: 'kindling-example:' })

// Stands in for a database: counts how often it is really queried.
const db = {
  queries: 0,
  users: {
    async findMany() {
      db.queries++
      return [{ id: 1, name: 'Ada' }, { id: 2, name: 'Grace' }]
    },
  },
}

const igniter = Igniter.context(() => ({ db })).store(store).create()

const usersController = igniter.controller({
  name: 'Users',
  path: '/users',
  actions: {
    list: igniter.query({
      name: 'List Users',
      path: '/',
      handler: async ({ context, response }) => {
        const cached = await igniter.store.get('users:list')
        if (cached) return response.success({ users: cached, source: 'cache' })
        const users = await context.db.users.findMany()
        await igniter.store.set('users:list', users, { ttl: 300 })
        return response.success({ users, source: 'database' })
      },
    }),
    hello: igniter.query({
      name: 'Rate-limited hello',
      path: '/hello',
      handler: async ({ response }) => {
        const userId = 'ada'
        const count = await igniter.store.increment(`rate:${userId}`)
        if (count === 1) await igniter.store.expire(`rate:${userId}`, 60)
        if (count > 3) return response.badRequest('Rate limit exceeded', { limit: 3 })
        return response.success({ hello: userId, count })
      },
    }),
  },
})

const router = igniter.router({ controllers: { users: usersController } })

async function call(path) {
  const res = await router.handler(new Request(`http://localhost/api/v1${path}`))
  return { status: res.status, body: await res.json() }
}

async function main() {
  console.log(`store: ${process.env.REDIS_URL ? 'Redis' : 'embedded memory'}`)
  // Start clean, so a second run against the same Redis behaves like the first.
  await Promise.all([store.delete('users:list'), store.delete('rate:ada')])

  const first = await call('/users')
  const second = await call('/users')
  console.log(`GET /users -> ${first.status}, source: ${first.body.data.source}`)
  console.log(`GET /users -> ${second.status}, source: ${second.body.data.source} (database queried ${db.queries} time)`)

  let limited
  for (let i = 1; i <= 4; i++) {
    const hello = await call('/users/hello')
    limited = hello.status !== 200
    console.log(`GET /users/hello #${i} -> ${hello.status}${limited ? ' (rate limited)' : ''}`)
  }

  let notified
  const received = new Promise((resolve) => (notified = resolve))
  await igniter.store.subscribe('notifications', async (message) => {
    console.log('Notification received:', message)
    notified(message)
  })
  await igniter.store.publish('notifications', { userId: '123', message: 'You have a new message' })
  await received

  await store.close()
  if (first.body.data.source !== 'database' || second.body.data.source !== 'cache' || db.queries !== 1) {
    throw new Error('the cache did not serve the second call')
  }
  if (!limited) throw new Error('the fourth call was not rate limited')
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
