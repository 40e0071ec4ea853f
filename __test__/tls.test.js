'use strict'

// rediss:// against a local redis-server with TLS and a certificate made in the test.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startRedis, freePort } = require('./helpers/redis-server.js')
const { makeCertificates } = require('./helpers/certificates.js')
const { createRedisStoreAdapter } = require('../index.js')

// A TLS-only redis-server with fresh certificates for the suite it is called in; `authClients`:
// whether it asks for a client certificate.
function tlsServer(authClients) {
  const context = {}
  before(async () => {
    context.certs = makeCertificates()
    context.port = await freePort()
    context.server = await startRedis('--port', '0', '--tls-port', String(context.port),
      '--tls-cert-file', context.certs.files.cert, '--tls-key-file', context.certs.files.key,
      '--tls-ca-cert-file', context.certs.files.ca, '--tls-auth-clients', authClients ? 'yes' : 'no')
  })
  after(async () => {
    await context.server.stop()
    context.certs.remove()
  })
  return context
}

// The adapter stores and reads back a value, and gets a message it published to itself.
async function servesCommandsAndPubSub(store, name) {
  await store.set(name, { ok: true })
  assert.deepEqual(await store.get(name), { ok: true })
  let received
  const message = new Promise((resolve) => (received = resolve))
  await store.subscribe(`${name}-channel`, received)
  await store.publish(`${name}-channel`, `over tls: ${name}`)
  assert.equal(await message, `over tls: ${name}`)
  await store.close()
}

describe('TLS', () => {
  const tls = tlsServer(false)

  it('works with the right CA, for commands and Pub/Sub', async () => {
    await servesCommandsAndPubSub(createRedisStoreAdapter({ url: `rediss://127.0.0.1:${tls.port}`, tls: { ca: tls.certs.ca } }), 'secure')
  })

  it('refuses a server certificate from another CA', async () => {
    const store = createRedisStoreAdapter({ url: `rediss://127.0.0.1:${tls.port}`, tls: { ca: tls.certs.otherCa }, connectTimeout: 2000 })
    await assert.rejects(store.get('secure'), (err) => err.code === 'ERR_STORE_CONNECTION')
    await store.close()
  })

  it('refuses a server certificate no trusted root signed', async () => {
    const store = createRedisStoreAdapter({ url: `rediss://127.0.0.1:${tls.port}`, connectTimeout: 2000 })
    await assert.rejects(store.get('secure'), (err) => err.code === 'ERR_STORE_CONNECTION')
    await store.close()
  })

  it('skips verification only when rejectUnauthorized is false', async () => {
    const store = createRedisStoreAdapter({ url: `rediss://127.0.0.1:${tls.port}`, tls: { rejectUnauthorized: false } })
    await store.set('unverified', 1)
    assert.equal(await store.get('unverified'), 1)
    await store.close()
  })

  it('checks the certificate against servername when one is given', async () => {
    // The certificate names 127.0.0.1 and localhost; the connection goes to 127.0.0.1 either way.
    const named = createRedisStoreAdapter({ url: `rediss://127.0.0.1:${tls.port}`, tls: { ca: tls.certs.ca, servername: 'localhost' } })
    await named.set('named', 1)
    assert.equal(await named.get('named'), 1)
    await named.close()
    const misnamed = createRedisStoreAdapter({
      url: `rediss://127.0.0.1:${tls.port}`, tls: { ca: tls.certs.ca, servername: 'redis.example.com' }, connectTimeout: 2000,
    })
    await assert.rejects(misnamed.get('named'), (err) => err.code === 'ERR_STORE_CONNECTION' && /certificate/i.test(err.message))
    await misnamed.close()
  })
})

describe('TLS with client certificates (tls-auth-clients yes)', () => {
  const tls = tlsServer(true)

  it('works with a client certificate the server trusts, for commands and Pub/Sub', async () => {
    const store = createRedisStoreAdapter({ url: `rediss://127.0.0.1:${tls.port}`, tls: { ca: tls.certs.ca, ...tls.certs.client } })
    await servesCommandsAndPubSub(store, 'mutual')
  })

  it('is refused without a client certificate', async () => {
    const store = createRedisStoreAdapter({ url: `rediss://127.0.0.1:${tls.port}`, tls: { ca: tls.certs.ca }, connectTimeout: 2000 })
    await assert.rejects(store.get('mutual'), (err) => err.code === 'ERR_STORE_CONNECTION')
    await store.close()
  })
})
