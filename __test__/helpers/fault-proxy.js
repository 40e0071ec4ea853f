'use strict'

// A TCP proxy on loopback in front of a real server, for faults the server cannot make itself:
// - freezeExisting(): open connections stop forwarding without closing (a dropped NAT entry);
// - stall() / resume(): every connection, open or new, is accepted but nothing is forwarded;
// - resetAll(): every open connection is reset (RST);
// - dropNext(n): the next n connections are reset as soon as the client has sent something,
//   that is, in the middle of its handshake;
// - latency(ms): every chunk, both ways, is held this long;
// - cutNextReply(): the next chunk from the server is cut in half, and the connection reset
//   after the first half.
// `sent(i)` is what the client wrote on the i-th connection accepted, as text.

const net = require('node:net')
const { once } = require('node:events')

async function startProxy(targetPort) {
  const pairs = new Set()
  const transcripts = []
  let stalled = false
  let toDrop = 0
  let delayMs = 0
  let cutNext = false
  let dropped = 0

  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1')
    const pair = { client, upstream, frozen: false, transcript: [] }
    transcripts.push(pair.transcript)
    pairs.add(pair)
    const drop = toDrop > 0
    if (drop) toDrop -= 1
    const reset = () => {
      client.resetAndDestroy()
      upstream.destroy()
    }
    const deliver = (to, chunk) => {
      if (to.destroyed) return
      if (delayMs > 0) setTimeout(() => to.destroyed || to.write(chunk), delayMs)
      else to.write(chunk)
    }
    client.on('data', (chunk) => {
      pair.transcript.push(chunk)
      if (drop) {
        dropped++
        return reset()
      }
      if (pair.frozen || stalled) return
      deliver(upstream, chunk)
    })
    upstream.on('data', (chunk) => {
      if (pair.frozen || stalled) return
      if (cutNext) {
        cutNext = false
        client.write(chunk.subarray(0, Math.max(1, chunk.length >> 1)), reset)
        return
      }
      deliver(client, chunk)
    })
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
    /** Connections reset mid-handshake by dropNext. */
    get dropped() {
      return dropped
    },
    get accepted() {
      return transcripts.length
    },
    sent(i) {
      return Buffer.concat(transcripts[i]).toString('latin1')
    },
    freezeExisting() {
      for (const pair of pairs) pair.frozen = true
    },
    stall() {
      stalled = true
    },
    resume() {
      stalled = false
    },
    resetAll() {
      for (const pair of pairs) {
        pair.client.resetAndDestroy()
        pair.upstream.destroy()
      }
    },
    dropNext(n) {
      toDrop = n
    },
    latency(ms) {
      delayMs = ms
    },
    cutNextReply() {
      cutNext = true
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
