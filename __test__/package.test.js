'use strict'

// As a user gets it: `npm run package` leaves this platform's package and the root package in
// dist/, and both install into an empty folder offline, with no Rust toolchain on PATH, and work
// through require and import.

const { it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFile } = require('node:child_process')
const { promisify } = require('node:util')
const { startRedis } = require('./helpers/redis-server.js')

const run = promisify(execFile)
const root = path.join(__dirname, '..')
const version = require('../package.json').version

it('installs from the packed tarballs offline, without Rust, and works through require and import', async () => {
  await run('npm', ['run', 'package', '--silent'], { cwd: root })
  const dist = path.join(root, 'dist')
  const platform = fs.readdirSync(root).find((name) => /^kindling\..+\.node$/.test(name)).slice('kindling.'.length, -'.node'.length)
  const tarballs = [`kindling-${version}.tgz`, `kindling-${platform}-${version}.tgz`]
  assert.deepEqual(fs.readdirSync(dist).sort(), tarballs.sort())

  // Exactly what a user needs in the root package: no sources, tests or native builds.
  const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root })
  const files = JSON.parse(stdout)[0].files.map((f) => f.path).sort()
  assert.deepEqual(files, ['CHANGELOG.md', 'LICENSE', 'README.md', 'binding.js', 'index.d.ts', 'index.js', 'index.mjs',
    'lib/errors.js', 'lib/native.js', 'lib/options.js', 'package.json'])

  const app = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-user-'))
  const server = await startRedis()
  try {
    fs.writeFileSync(path.join(app, 'package.json'), '{ "name": "app", "private": true }\n')
    // node and npm, and nothing from ~/.cargo.
    const env = { ...process.env, PATH: [path.dirname(process.execPath), '/usr/bin', '/bin'].join(path.delimiter), REDIS_URL: server.url }
    await assert.rejects(run('cargo', ['--version'], { env }), 'no Rust toolchain on this PATH')
    await run('npm', ['install', '--offline', '--no-audit', '--no-fund', ...tarballs.map((t) => path.join(dist, t))], { cwd: app, env })

    const roundTrips = (load) => `${load}
      const redis = createRedisStoreAdapter(process.env.REDIS_URL)
      const memory = createMemoryStoreAdapter()
      await redis.set('installed', { via: 'redis' })
      await memory.set('installed', { via: 'memory' })
      console.log(JSON.stringify([await redis.get('installed'), await memory.get('installed')]))
      await redis.close()
      await memory.close()`
    fs.writeFileSync(path.join(app, 'app.cjs'), `(async () => {${roundTrips("const { createRedisStoreAdapter, createMemoryStoreAdapter } = require('kindling')")}})()`)
    fs.writeFileSync(path.join(app, 'app.mjs'), roundTrips("import { createRedisStoreAdapter, createMemoryStoreAdapter } from 'kindling'"))
    for (const file of ['app.cjs', 'app.mjs']) {
      const { stdout: out } = await run(process.execPath, [file], { cwd: app, env })
      assert.deepEqual(JSON.parse(out), [{ via: 'redis' }, { via: 'memory' }], file)
    }
    // Only the public entry resolves.
    await assert.rejects(run(process.execPath, ['-e', "require('kindling/lib/options.js')"], { cwd: app, env }), /ERR_PACKAGE_PATH_NOT_EXPORTED/)
  } finally {
    await server.stop()
    fs.rmSync(app, { recursive: true, force: true })
    fs.rmSync(dist, { recursive: true, force: true })
  }
})
