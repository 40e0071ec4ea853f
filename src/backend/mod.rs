//! The backends. Both take the same operations on strings; the Redis one completes them
//! later through the adapter's outbox, the memory one at once.
//!
//! The Redis stack, each layer using only the ones below it:
//! `resp` (the codec) -> `connect` (a socket that has authenticated) -> `connection` (one
//! pipelined connection and its reader) -> `link` (one server, reconnected on demand) ->
//! `router` (commands) and `subscriber` (Pub/Sub). `command` is what each operation sends and
//! which replies it accepts.

mod command;
mod connect;
mod connection;
mod link;
pub mod memory;
pub mod redis;
mod resp;
mod router;
mod subscriber;

use std::time::Duration;

use tokio::time::Instant;

use napi_derive::napi;

use crate::error::StoreError;

/// The largest integer a JS number holds exactly: counters stop below it.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// The operation numbers JS puts in the call buffer; exported, so index.js reads them from
/// the binding rather than keeping its own copy.
#[napi]
pub enum Operation {
    Get = 0,
    Set = 1,
    Delete = 2,
    Has = 3,
    Increment = 4,
    Expire = 5,
    Publish = 6,
    Subscribe = 7,
    Unsubscribe = 8,
}

/// One store operation. Keys and channels arrive with the adapter's prefix already on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Get,
    Set { ttl: Option<Duration> },
    Delete,
    Has,
    Increment,
    Expire { ttl: Duration },
    Publish,
    Subscribe,
    Unsubscribe,
}

impl Op {
    /// `ttl_ms` of 0 means none.
    pub fn decode(code: u32, ttl_ms: f64) -> Option<Op> {
        let ttl = (ttl_ms > 0.0).then(|| Duration::from_millis(ttl_ms as u64));
        const GET: u32 = Operation::Get as u32;
        const SET: u32 = Operation::Set as u32;
        const DELETE: u32 = Operation::Delete as u32;
        const HAS: u32 = Operation::Has as u32;
        const INCREMENT: u32 = Operation::Increment as u32;
        const EXPIRE: u32 = Operation::Expire as u32;
        const PUBLISH: u32 = Operation::Publish as u32;
        const SUBSCRIBE: u32 = Operation::Subscribe as u32;
        const UNSUBSCRIBE: u32 = Operation::Unsubscribe as u32;
        Some(match code {
            GET => Op::Get,
            SET => Op::Set { ttl },
            DELETE => Op::Delete,
            HAS => Op::Has,
            INCREMENT => Op::Increment,
            EXPIRE => Op::Expire { ttl: ttl? },
            PUBLISH => Op::Publish,
            SUBSCRIBE => Op::Subscribe,
            UNSUBSCRIBE => Op::Unsubscribe,
            _ => return None,
        })
    }
}

/// A call on its way to Redis.
pub struct Request {
    pub id: u32,
    /// Submission order within the adapter: retried calls keep their place by it.
    pub seq: u64,
    pub op: Op,
    pub key: String,
    pub payload: String,
    /// Until when it may wait for a connection: `connectTimeout` after it was submitted, or,
    /// for a retry, the end of its retries.
    pub wait_until: Instant,
    /// When it was first written (or held behind a refused call), and how many times the
    /// server has said it did not run, the last time in these words.
    pub first_written: Option<Instant>,
    pub refusals: u32,
    pub refused: Option<StoreError>,
}
