'use strict'

// Run before the suites: a missing server binary is one clear line, not a hundred cancelled tests.

const { execFileSync } = require('node:child_process')

const needed = [
  ['redis-server', ['--version'], 'the tests start their own Redis servers: install redis-server (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)'],
  ['redis-cli', ['--version'], 'the tests inspect servers with redis-cli, which comes with redis-server'],
  ['openssl', ['version'], 'the TLS tests make their certificates with openssl: install openssl'],
]

const missing = needed.filter(([command, args]) => {
  try {
    execFileSync(command, args, { stdio: 'ignore' })
    return false
  } catch {
    return true
  }
})
for (const [command, , why] of missing) console.error(`${command} not found: ${why}`)
process.exitCode = missing.length > 0 ? 1 : 0
