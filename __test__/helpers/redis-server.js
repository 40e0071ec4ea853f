'use strict'

// Real redis-server processes for the tests: each on a free loopback port, stopped by pid.

const { spawn, execFile } = require('node:child_process')
const { once } = require('node:events')
const net = require('node:net')
const { promisify } = require('node:util')

const run = promisify(execFile)
const started = new Set()

async function freePort() {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  await once(server, 'close')
  return port
}

class RedisServer {
  /** `sentinelConfig`: the path of a sentinel's config file, which then runs as a sentinel. */
  constructor(port, args, sentinelConfig = null) {
    this.port = port
    this.args = args
    this.sentinelConfig = sentinelConfig
    this.process = null
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`
  }

  /** `waitForLoad: false` returns once the server listens, while it may still load its data. */
  async start({ waitForLoad = true } = {}) {
    const ready = this.sentinelConfig ? '+monitor master' : waitForLoad ? 'Ready to accept connections' : 'Server initialized'
    const args = this.sentinelConfig
      ? [this.sentinelConfig, '--sentinel', '--daemonize', 'no', ...this.args]
      : ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
          '--daemonize', 'no', '--loglevel', 'notice', ...this.args]
    const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    this.process = child
    started.add(child)
    child.once('exit', () => started.delete(child))
    let log = ''
    await new Promise((resolve, reject) => {
      const onData = (chunk) => {
        log += chunk
        if (log.includes(ready)) {
          child.stdout.off('data', onData)
          resolve()
        }
      }
      child.stdout.on('data', onData)
      child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}: ${log}`)))
    })
    child.stdout.resume()
    child.stderr.resume()
    return this
  }

  async stop(signal = 'SIGTERM') {
    const child = this.process
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    process.kill(child.pid, signal)
    await exited
  }

  /** Runs redis-cli against this server and returns its output, trimmed. */
  async cli(...args) {
    const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(this.port), ...this.cliAuth(), ...args])
    return stdout.trim()
  }

  /** Subscribers of `channel` on this server (PUBSUB NUMSUB), as redis-cli prints it. */
  async numsub(channel) {
    return (await this.cli('PUBSUB', 'NUMSUB', channel)).split('\n')[1]
  }

  cliAuth() {
    const i = this.args.indexOf('--requirepass')
    return i >= 0 ? ['--no-auth-warning', '-a', this.args[i + 1]] : []
  }
}

async function startRedis(...args) {
  const server = new RedisServer(await freePort(), args)
  return server.start()
}

// A server left running by a failed test must not outlive the test process.
process.once('exit', () => {
  for (const child of started) {
    try {
      process.kill(child.pid, 'SIGKILL')
    } catch {}
  }
})

module.exports = { startRedis, freePort, RedisServer }
