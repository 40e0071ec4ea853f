'use strict'

// The native addon: built in this checkout, or the platform package npm installed beside
// Kindling. When neither fits, say what was looked for, not a guess about npm.

const PACKAGES = [
  'kindling-linux-x64-gnu', 'kindling-linux-x64-musl', 'kindling-linux-arm64-gnu', 'kindling-linux-arm64-musl',
  'kindling-darwin-x64', 'kindling-darwin-arm64', 'kindling-win32-x64-msvc',
]

// The C library, as platform package names and messages give it (Linux only).
function libc() {
  if (process.platform !== 'linux') return null
  const { glibcVersionRuntime } = process.report.getReport().header
  return glibcVersionRuntime ? { name: 'gnu', detail: `glibc ${glibcVersionRuntime}` } : { name: 'musl', detail: 'musl' }
}

function load() {
  try {
    return require('../binding.js')
  } catch (cause) {
    const c = libc()
    const suffix = c ? `-${c.name}` : process.platform === 'win32' ? '-msvc' : ''
    const wanted = `kindling-${process.platform}-${process.arch}${suffix}`
    const err = new Error(
      `kindling has no native build for ${process.platform} ${process.arch}${c ? ` with ${c.detail}` : ''}: ` +
      `it looked for the package ${wanted}, which is not installed. Builds exist for: ${PACKAGES.join(', ')}. ` +
      'If yours is among them, reinstall without --no-optional / --omit=optional; otherwise build from source with Rust (npm run build in a checkout).',
      { cause },
    )
    err.code = 'ERR_KINDLING_NO_NATIVE_BUILD'
    throw err
  }
}

module.exports = load()
