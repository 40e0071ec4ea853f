'use strict'

// Lifetime: processes exit when idle, stay alive while subscribed, and survive exits,
// throwing callbacks and worker teardown. Each scenario runs in a child process or worker.

const { describe, it, before, after } = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const { Worker } = require('node:worker_threads')
const { startRedis } = require('./helpers/redis-server.js')
const { createMemoryStoreAdapter, createRedisStoreAdapter } = require('../index.js')

const fixture = path.join(__dirname, 'fixtures', 'lifetime.js')

// Runs a scenario (of `script`); `onLine` sees each stdout line. A child that does not exit in
// time is killed and reported as such, so a hang fails the test instead of stalling the suite.
async function runChild(args, onLine = () => {}, { timeoutMs = 15000, script = fixture } = {}) {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  const lines = []
  let stderr = ''
  child.stderr.on('data', (d) => (stderr += d))
  child.stdout.setEncoding('utf8').on('data', (chunk) => {
    for (const line of chunk.split('\n').filter(Boolean)) {
      lines.push(line)
      onLine(line, child)
    }
  })
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const [code, signal] = await once(child, 'exit')
  clearTimeout(timer)
  return { code, signal, lines, stderr }
}

describe('process lifetime', () => {
  let server
  before(async () => {
    server = await startRedis()
  })
  after(async () => {
    await server.stop()
  })

  for (const backend of ['memory', 'redis']) {
    const args = (scenario) => (backend === 'redis' ? [scenario, server.url] : [scenario])

    describe(backend, () => {
      it('an idle process exits without close()', async () => {
        const { code, signal, lines, stderr } = await runChild(args('idle'))
        assert.equal(signal, null, stderr)
        assert.equal(code, 0, stderr)
        assert.deepEqual(lines, ['done'])
      })

      it('a subscription keeps the process alive; close() releases it', async () => {
        const { code, signal, lines, stderr } = await runChild(args('subscriber'), (line) => {
          if (line === 'alive' && backend === 'redis') server.cli('PUBLISH', 'wake', '"from-parent"')
        })
        assert.equal(signal, null, stderr)
        assert.equal(code, 0, stderr)
        assert.deepEqual(lines, ['alive', backend === 'redis' ? 'received from-parent' : 'received from-self'])
      })

      it('unsubscribing the last callback releases the process', async () => {
        const { code, signal, lines } = await runChild(args('unsubscribed'))
        assert.equal(signal, null)
        assert.equal(code, 0)
        assert.deepEqual(lines, ['done'])
      })

      it('exiting with calls in flight does not crash', async () => {
        const { code, signal, stderr } = await runChild(args('exitPending'))
        assert.equal(signal, null, stderr)
        assert.equal(code, 0, stderr)
      })

      it('a throwing callback is a warning, not a crash', async () => {
        const { code, signal, lines, stderr } = await runChild(args('throwingCallback'))
        assert.equal(signal, null, stderr)
        assert.equal(code, 0, stderr)
        assert.deepEqual(lines, ['done'])
        assert.match(stderr, /callback failure/)
      })
    })
  }

  it('a process that loads the addon only in workers survives them ending, in a loop', async () => {
    const script = path.join(__dirname, 'fixtures', 'workers-only.js')
    const { code, signal, lines, stderr } = await runChild([server.url, '100'], undefined, { timeoutMs: 90000, script })
    assert.equal(signal, null, stderr)
    assert.equal(code, 0, stderr)
    assert.match(lines.join('\n'), /done/)
  })

  it('workers can load, use and be terminated mid-call, in a loop', async () => {
    const storeName = `workers-${process.pid}`
    const main = createMemoryStoreAdapter({ name: storeName })
    const rounds = 20
    for (let round = 0; round < rounds; round++) {
      const worker = new Worker(path.join(__dirname, 'fixtures', 'worker.js'), {
        workerData: { url: server.url, storeName, round },
      })
      const [first] = await once(worker, 'message')
      assert.deepEqual(first, { ready: true })
      // The worker's subscription to the named store receives what the main thread publishes.
      const echoed = once(worker, 'message')
      await main.publish('to-workers', `hello ${round}`)
      assert.deepEqual((await echoed)[0], { echo: `hello ${round}` })
      await worker.terminate()
    }
    // The named store outlived every worker that wrote to it.
    for (let round = 0; round < rounds; round++) assert.equal(await main.get(`round-${round}`), round)
    // Publishing to subscribers whose workers are gone is harmless.
    await main.publish('to-workers', 'nobody home')
    const redis = createRedisStoreAdapter(server.url)
    assert.equal(await redis.get(`worker-${rounds - 1}`), rounds - 1)
    await Promise.all([main.close(), redis.close()])
  })
})
