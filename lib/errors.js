'use strict'

// Every error the package makes carries one of these codes (SPEC section 4).
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

// The native side reports failures as [code, message, 'Error' | 'RangeError'].
function fromNative([code, message, errorType], secrets) {
  return storeError(errorType === 'RangeError' ? RangeError : Error, code, redact(message, secrets))
}

module.exports = { codes, storeError, invalidArgument, outOfRange, closedError, redact, fromNative }
