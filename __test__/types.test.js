'use strict'

// index.d.ts against Igniter.js's own types: fixtures/types.ts must compile.

const { it } = require('node:test')
const assert = require('node:assert/strict')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

it('index.d.ts satisfies Igniter.js IgniterStoreAdapter and types the generics', () => {
  const tsc = require.resolve('typescript/bin/tsc')
  const fixture = path.join(__dirname, 'fixtures', 'types.ts')
  let output = ''
  try {
    execFileSync(process.execPath, [tsc, '--noEmit', '--strict', '--esModuleInterop', '--skipLibCheck',
      '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', fixture], { stdio: 'pipe' })
  } catch (err) {
    output = `${err.stdout}${err.stderr}`
  }
  assert.equal(output, '')
})
