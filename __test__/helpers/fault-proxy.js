'use strict'

// A TCP proxy on loopback in front of a real server, for faults the server cannot make itself.
// `freezeExisting()` stops forwarding on every open connection without closing it: the peer
// looks alive but never answers, as after a dropped NAT entry. New connections forward normally.

const net = require('node:net')
const { once } = require('node:events')

async function startProxy(targetPort) {
  const pairs = new Set()
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1')
    const pair = { client, upstream, frozen: false }
    pairs.add(pair)
    const forward = (from, to) => from.on('data', (chunk) => pair.frozen || to.write(chunk))
    forward(client, upstream)
    forward(upstream, client)
    const end = () => {
      pairs.delete(pair)
      client.destroy()
      upstream.destroy()
    }
    client.on('close', end).on('error', end)
    upstream.on('close', end).on('error', end)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: server.address().port,
    get connections() {
      return pairs.size
    },
    freezeExisting() {
      for (const pair of pairs) pair.frozen = true
    },
    async close() {
      for (const pair of pairs) {
        pair.client.destroy()
        pair.upstream.destroy()
      }
      server.close()
      await once(server, 'close')
    },
  }
}

module.exports = { startProxy }
