'use strict'

// Throwaway certificates made with openssl for TLS tests: a CA, a server certificate for
// 127.0.0.1 and localhost and a client certificate signed by it, plus a second, unrelated CA.

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

function makeCertificates() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kindling-tls-'))
  const file = (name) => path.join(dir, name)
  const openssl = (...args) => execFileSync('openssl', args, { stdio: 'pipe' })
  for (const ca of ['ca', 'other-ca']) {
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=kindling test ${ca}`,
      '-keyout', file(`${ca}.key`), '-out', file(`${ca}.crt`))
  }
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', file('server.key'), '-out', file('server.csr'))
  fs.writeFileSync(file('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  openssl('x509', '-req', '-in', file('server.csr'), '-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-days', '2', '-extfile', file('server.ext'), '-out', file('server.crt'))
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=kindling test client', '-keyout', file('client.key'), '-out', file('client.csr'))
  fs.writeFileSync(file('client.ext'), 'extendedKeyUsage=clientAuth\n')
  openssl('x509', '-req', '-in', file('client.csr'), '-CA', file('ca.crt'), '-CAkey', file('ca.key'), '-CAcreateserial',
    '-days', '2', '-extfile', file('client.ext'), '-out', file('client.crt'))
  const read = (name) => fs.readFileSync(file(name), 'utf8')
  return {
    dir,
    files: { ca: file('ca.crt'), cert: file('server.crt'), key: file('server.key') },
    ca: read('ca.crt'),
    otherCa: read('other-ca.crt'),
    client: { cert: read('client.crt'), key: read('client.key') },
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  }
}

module.exports = { makeCertificates }
