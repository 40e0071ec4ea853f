'use strict'

// Polls a condition that no event announces (server-side state such as PUBSUB NUMSUB).
async function waitUntil(condition, { timeoutMs = 10000, everyMs = 20, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await condition()) return
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

// A callback and a promise of the next `count` messages it receives.
function collect(count) {
  const messages = []
  let done
  const all = new Promise((resolve) => (done = resolve))
  const callback = (message, channel) => {
    messages.push({ message, channel })
    if (messages.length === count) done(messages)
  }
  return { callback, all, messages }
}

module.exports = { waitUntil, collect }
