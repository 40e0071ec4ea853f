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

// The native side reports failures as [code, message, 'Error' | 'RangeError', details?], where
// details may say the call can be retried, which subscription was given up, and the system
// error under a connection failure.
function fromNative([code, message, errorType, details], secrets) {
  const err = storeError(errorType === 'RangeError' ? RangeError : Error, code, redact(message, secrets))
  if (details === undefined) return err
  if (details.retryable) err.retryable = true
  if (details.channel !== undefined) err.channel = details.channel
  if (details.cause !== undefined) {
    const { code: errno, syscall, address, port, message: text } = details.cause
    const cause = new Error(redact(text, secrets))
    Object.assign(cause, { code: errno, syscall })
    if (address !== undefined) cause.address = address
    if (port !== undefined) cause.port = port
    Object.defineProperty(err, 'cause', { value: cause, enumerable: false, writable: true, configurable: true })
  }
  return err
}

module.exports = { codes, storeError, invalidArgument, outOfRange, closedError, redact, fromNative }
