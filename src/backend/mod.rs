//! The backends. Both take the same operations on strings; the Redis one completes them
//! later through the adapter's outbox, the memory one at once.

pub mod memory;
mod pubsub;
pub mod redis;
mod wire;

use std::time::Duration;

/// The largest integer a JS number holds exactly: counters stop below it.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// One store operation. Keys and channels arrive with the adapter's prefix already on.
#[derive(Debug, Clone, Copy)]
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
    /// The numbering the JS layer uses.
    /// `ttl_ms` of 0 means none.
    pub fn decode(code: u32, ttl_ms: f64) -> Option<Op> {
        let ttl = (ttl_ms > 0.0).then(|| Duration::from_millis(ttl_ms as u64));
        Some(match code {
            0 => Op::Get,
            1 => Op::Set { ttl },
            2 => Op::Delete,
            3 => Op::Has,
            4 => Op::Increment,
            5 => Op::Expire { ttl: ttl? },
            6 => Op::Publish,
            7 => Op::Subscribe,
            8 => Op::Unsubscribe,
            _ => return None,
        })
    }
}
