'use strict'

// Every error the package makes carries one of these codes. They are defined in Rust
// (src/error.rs) and written out here for readers and types; a test checks both agree.
const codes = Object.freeze({
  INVALID_ARGUMENT: 'ERR_STORE_INVALID_ARGUMENT',
  SERIALIZE: 'ERR_STORE_SERIALIZE',
  NOT_INTEGER: 'ERR_STORE_NOT_INTEGER',
  CONNECTION: 'ERR_STORE_CONNECTION',
  TIMEOUT: 'ERR_STORE_TIMEOUT',
  AUTH: 'ERR_STORE_AUTH',
  CLOSED: 'ERR_STORE_CLOSED',
  REDIS: 'ERR_STORE_REDIS',
})

function storeError(ErrorType, code, message) {
  const err = new ErrorType(message)
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: true, configurable: true })
  return err
}

const invalidArgument = (message) => storeError(TypeError, codes.INVALID_ARGUMENT, message)
const outOfRange = (message) => storeError(RangeError, codes.INVALID_ARGUMENT, message)
const closedError = () => storeError(Error, codes.CLOSED, 'the store adapter is closed')

// Secrets are cut out of every message before the Error (and so its stack) exists.
function redact(text, secrets) {
  let out = String(text)
  for (const secret of secrets) {
    if (secret) out = out.split(secret).join('***')
  }
  return out
}

// The native side reports a failure as { code, message, type, retryable?, channel?, cause? }:
// `type` 'RangeError' for a number out of range, `retryable` when the call can be retried,
// `channel` for a subscription given up, and `cause` the system error under a connection
// failure. Bad input found there is a TypeError, as it is when JS finds it.
function fromNative({ code, message, type, retryable, channel, cause }, secrets) {
  const ErrorType = type === 'RangeError' ? RangeError : code === codes.INVALID_ARGUMENT ? TypeError : Error
  const err = storeError(ErrorType, code, redact(message, secrets))
  if (retryable) err.retryable = true
  if (channel !== undefined) err.channel = channel
  if (cause !== undefined) {
    const { code: errno, syscall, address, port, message: text } = cause
    const underlying = new Error(redact(text, secrets))
    Object.assign(underlying, { code: errno, syscall })
    if (address !== undefined) underlying.address = address
    if (port !== undefined) underlying.port = port
    Object.defineProperty(err, 'cause', { value: underlying, enumerable: false, writable: true, configurable: true })
  }
  return err
}

// A reply that is an object (not null, not an array) is a failure: every other reply is a
// primitive or an array.
const isFailure = (reply) => typeof reply === 'object' && reply !== null && !Array.isArray(reply)

module.exports = { codes, storeError, invalidArgument, outOfRange, closedError, redact, fromNative, isFailure }
