'use strict'

// `npm run package`: this machine's platform package and the root package as tarballs in
// dist/, from the addon `npm install` built (no second build, no network). The root package
// lists every platform package as an optional dependency, as it will at release; npm installs
// the one whose os, cpu and libc fit.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.join(__dirname, '..')
const dist = path.join(root, 'dist')
const manifest = require('../package.json')

// The platform triple in napi-rs's naming, as the addon file is named.
const built = fs.readdirSync(root).filter((name) => /^kindling\..+\.node$/.test(name))
if (built.length !== 1) {
  console.error(`expected one built addon (kindling.<platform>.node) in ${root}, found ${built.length}: run npm install first`)
  process.exit(1)
}
const triple = built[0].slice('kindling.'.length, -'.node'.length)
const platformDir = path.join(__dirname, triple)
if (!fs.existsSync(path.join(platformDir, 'package.json'))) {
  console.error(`no platform package npm/${triple}/ for the built addon ${built[0]}`)
  process.exit(1)
}

const pack = (dir) => execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dist], { cwd: dir, encoding: 'utf8' }).trim()

fs.rmSync(dist, { recursive: true, force: true })
fs.mkdirSync(dist)
// Staged, so a release build already in npm/<platform>/ is left as it is.
const platformStaging = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-platform-'))
try {
  for (const name of ['package.json', 'README.md']) fs.copyFileSync(path.join(platformDir, name), path.join(platformStaging, name))
  fs.copyFileSync(path.join(root, built[0]), path.join(platformStaging, built[0]))
  pack(platformStaging)
} finally {
  fs.rmSync(platformStaging, { recursive: true, force: true })
}

// The root package from a staging copy whose package.json lists the platform packages.
const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-package-'))
try {
  for (const entry of manifest.files) {
    fs.cpSync(path.join(root, entry), path.join(staging, entry), { recursive: true })
  }
  const platforms = fs.readdirSync(__dirname).filter((name) => fs.existsSync(path.join(__dirname, name, 'package.json')))
  const released = {
    ...manifest,
    optionalDependencies: Object.fromEntries(platforms.map((name) => [`kindling-${name}`, manifest.version])),
  }
  delete released.devDependencies
  delete released.scripts
  fs.writeFileSync(path.join(staging, 'package.json'), `${JSON.stringify(released, null, 2)}\n`)
  pack(staging)
} finally {
  fs.rmSync(staging, { recursive: true, force: true })
}
console.log(fs.readdirSync(dist).join('\n'))
