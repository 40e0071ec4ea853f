'use strict'

// The README as a new reader uses it: its example runs as written, and its links resolve.

const { it } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFile } = require('node:child_process')
const { promisify } = require('node:util')
const { startRedis } = require('./helpers/redis-server.js')

const root = path.join(__dirname, '..')
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8')

it('the Use example runs as written, against a real server', async () => {
  const example = /```js\n([^]*?)```/.exec(readme)[1]
  assert.match(example, /from 'kindling'/)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-readme-'))
  const file = path.join(dir, 'app.mjs')
  // This checkout stands in for the installed package.
  fs.writeFileSync(file, example.replace("from 'kindling'", `from ${JSON.stringify(path.join(root, 'index.js'))}`))
  const server = await startRedis()
  try {
    const { stderr } = await promisify(execFile)(process.execPath, [file], { env: { ...process.env, REDIS_URL: server.url } })
    assert.equal(stderr, '')
    assert.equal(await server.cli('EXISTS', 'users:list'), '1')
  } finally {
    await server.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

it('the @igniter-js/store example runs as written, on the memory store and on Redis', async () => {
  const example = /```js\n(\/\/ store\.mjs[^]*?)```/.exec(readme)[1]
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-readme-'))
  const file = path.join(dir, 'store.mjs')
  const { pathToFileURL } = require('node:url')
  fs.writeFileSync(file, example
    .replace("from 'kindling'", `from ${JSON.stringify(path.join(root, 'index.js'))}`)
    .replace("from '@igniter-js/store'", `from ${JSON.stringify(pathToFileURL(require.resolve('@igniter-js/store')).href)}`))
  const server = await startRedis()
  try {
    for (const env of [{}, { REDIS_URL: server.url }]) {
      const childEnv = { ...process.env, ...env }
      if (!env.REDIS_URL) delete childEnv.REDIS_URL
      const { stdout, stderr } = await promisify(execFile)(process.execPath, [file], { env: childEnv })
      assert.equal(stderr, '')
      assert.match(stdout, /user: \{ name: 'Ada' \}/)
      assert.match(stdout, /stock: -1/)
      assert.match(stdout, /won: true/)
      assert.match(stdout, /orders: \[ \{ id: 1, total: 42 \} \]/)
    }
    assert.equal(await server.cli('XLEN', 'igniter:store:shop:streams:orders'), '1')
  } finally {
    await server.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
})

it('links ARCHITECTURE.md and BENCHMARKS.md, and every relative link resolves to a file here', () => {
  const links = [...readme.matchAll(/\]\(([^)#]+)(#[^)]*)?\)/g)].map((m) => m[1]).filter((href) => !/^[a-z]+:/.test(href))
  assert.ok(links.includes('ARCHITECTURE.md'))
  assert.ok(links.includes('BENCHMARKS.md'))
  for (const href of links) assert.ok(fs.existsSync(path.join(root, href)), `${href} does not exist`)
})
