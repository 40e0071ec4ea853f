'use strict'

// `npm run release:build [-- <platform> ...]`: builds each platform package's addon into
// npm/<platform>/ from this Linux x64 machine with cargo-zigbuild (`cargo install
// cargo-zigbuild`; zig from `pip install ziglang`, run through a `zig` wrapper on PATH when
// none is installed), then checks what the Linux glibc builds ask of glibc.
//
// - Linux glibc targets are linked against glibc 2.17's symbols (the `.2.17` target suffix), so
//   they run on distributions back to it; the everyday `npm install` build uses the system's.
// - Linux musl targets are built as shared libraries (`-crt-static`), as Node loads them.
// - Windows x64 (msvc) needs Microsoft's SDK, which cannot be fetched here: it is built on a
//   Windows runner by .github/workflows/release.yml.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const TARGETS = [
  { platform: 'linux-x64-gnu', triple: 'x86_64-unknown-linux-gnu', glibc: '2.17', library: 'libkindling.so' },
  { platform: 'linux-arm64-gnu', triple: 'aarch64-unknown-linux-gnu', glibc: '2.17', library: 'libkindling.so' },
  { platform: 'linux-x64-musl', triple: 'x86_64-unknown-linux-musl', musl: true, library: 'libkindling.so' },
  { platform: 'linux-arm64-musl', triple: 'aarch64-unknown-linux-musl', musl: true, library: 'libkindling.so' },
  { platform: 'darwin-x64', triple: 'x86_64-apple-darwin', library: 'libkindling.dylib' },
  { platform: 'darwin-arm64', triple: 'aarch64-apple-darwin', library: 'libkindling.dylib' },
]
// The newest glibc a release binary may ask for: what RHEL 8 / Debian 10 era systems have.
const MAX_GLIBC = [2, 28]

const only = process.argv.slice(2)
const run = (command, args, env = process.env) => execFileSync(command, args, { cwd: root, stdio: 'inherit', env })

// The newest GLIBC_x.y symbol version the binary needs.
function newestGlibc(file) {
  const symbols = execFileSync('objdump', ['-T', file], { encoding: 'utf8' })
  const versions = [...symbols.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])])
  return versions.sort((a, b) => a[0] - b[0] || a[1] - b[1]).at(-1)
}

const failures = []
for (const target of TARGETS.filter((t) => only.length === 0 || only.includes(t.platform))) {
  const built = path.join(__dirname, target.platform, `kindling.${target.platform}.node`)
  try {
    run('rustup', ['target', 'add', target.triple])
    const env = target.musl ? { ...process.env, RUSTFLAGS: '-C target-feature=-crt-static' } : process.env
    const zigTarget = target.glibc ? `${target.triple}.${target.glibc}` : target.triple
    run('cargo', ['zigbuild', '--release', '--target', zigTarget], env)
    fs.copyFileSync(path.join(root, 'target', target.triple, 'release', target.library), built)
    if (target.glibc) {
      const newest = newestGlibc(built)
      const fits = !newest || newest[0] < MAX_GLIBC[0] || (newest[0] === MAX_GLIBC[0] && newest[1] <= MAX_GLIBC[1])
      console.log(`${target.platform}: needs glibc ${newest ? newest.join('.') : '(none)'}`)
      if (!fits) throw new Error(`needs glibc ${newest.join('.')}, past ${MAX_GLIBC.join('.')}`)
    }
    console.log(`${target.platform}: built ${path.relative(root, built)}`)
  } catch (err) {
    console.error(`${target.platform}: ${err.message}`)
    failures.push(target.platform)
  }
}
if (failures.length > 0) {
  console.error(`not built: ${failures.join(', ')}`)
  process.exitCode = 1
}
