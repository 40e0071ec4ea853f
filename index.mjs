// The ES module entry: the same API as index.js.
import kindling from './index.js'

export const { createRedisStoreAdapter, createMemoryStoreAdapter, errorCodes } = kindling
export default kindling
