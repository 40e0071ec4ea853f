'use strict'

// `npm run release:build [-- <platform> ...]`: builds each platform package's addon into
// npm/<platform>/ from this Linux x64 machine, then checks what the Linux builds ask of glibc.
//
// - Linux glibc targets with napi-rs's prebuilt cross toolchain (`--use-napi-cross`, glibc 2.17),
//   so the binaries run on distributions back to glibc 2.17; the everyday `npm install` build
//   uses the system's glibc instead.
// - Linux musl and macOS targets with cargo-zigbuild (`--cross-compile`), which needs `zig` on
//   PATH (`pip install ziglang` provides it as `python3 -m ziglang`; a `zig` wrapper script on
//   PATH that runs it is enough).
// - Windows x64 (msvc) needs Microsoft's SDK, which cannot be fetched here: it is built on a
//   Windows runner by .github/workflows/release.yml.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const TARGETS = [
  { platform: 'linux-x64-gnu', triple: 'x86_64-unknown-linux-gnu', how: ['--use-napi-cross'], glibc: true },
  { platform: 'linux-arm64-gnu', triple: 'aarch64-unknown-linux-gnu', how: ['--use-napi-cross'], glibc: true },
  { platform: 'linux-x64-musl', triple: 'x86_64-unknown-linux-musl', how: ['--cross-compile'] },
  { platform: 'linux-arm64-musl', triple: 'aarch64-unknown-linux-musl', how: ['--cross-compile'] },
  { platform: 'darwin-x64', triple: 'x86_64-apple-darwin', how: ['--cross-compile'] },
  { platform: 'darwin-arm64', triple: 'aarch64-apple-darwin', how: ['--cross-compile'] },
]
// The newest glibc a release binary may ask for: what RHEL 8 / Debian 10 era systems have.
const MAX_GLIBC = [2, 28]

const only = process.argv.slice(2)
const run = (command, args) => execFileSync(command, args, { cwd: root, stdio: 'inherit' })

// The newest GLIBC_x.y symbol version the binary needs.
function newestGlibc(file) {
  const symbols = execFileSync('objdump', ['-T', file], { encoding: 'utf8' })
  const versions = [...symbols.matchAll(/GLIBC_(\d+)\.(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])])
  return versions.sort((a, b) => a[0] - b[0] || a[1] - b[1]).at(-1)
}

const failures = []
for (const target of TARGETS.filter((t) => only.length === 0 || only.includes(t.platform))) {
  const outDir = path.join('npm', target.platform)
  try {
    run('rustup', ['target', 'add', target.triple])
    run('npx', ['napi', 'build', '--platform', '--release', '--no-js', '--target', target.triple, ...target.how, '--output-dir', outDir])
    const built = path.join(root, outDir, `kindling.${target.platform}.node`)
    if (!fs.existsSync(built)) throw new Error(`no ${built} after the build`)
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
