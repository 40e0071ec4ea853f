//! The backends. Both take the same operations on strings; the Redis one completes them
//! later through the adapter's outbox, the memory one at once.
//!
//! The Redis stack, each layer using only the ones below it:
//! `resp` (the codec) -> `connect` (a socket that has authenticated) -> `connection` (one
//! pipelined connection and its reader) -> `link` (one server, reconnected on demand) ->
//! `router` (commands), `subscriber` (Pub/Sub; `shards` places a cluster's shard channels
//! on a subscriber per master) and `blocking` (blocking reads, each on a connection of its
//! own). `command` is what each operation sends and
//! which replies it accepts.

mod blocking;
mod cluster;
mod command;
mod connect;
mod connection;
mod glob;
mod json;
mod link;
pub mod memory;
pub mod redis;
mod resp;
mod router;
mod sentinel;
mod shards;
mod stream;
mod subscriber;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use connect::{NatAnswer, NatFunction};

use tokio::time::Instant;

use napi_derive::napi;

use crate::bridge::{Event, Reply};
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
    SetIfAbsent = 9,
    GetMany = 10,
    SetMany = 11,
    Scan = 12,
    StreamAdd = 13,
    GroupCreate = 14,
    GroupRead = 15,
    Range = 16,
    RangeReverse = 17,
    Ack = 18,
}

/// One store operation. Keys and channels arrive with the adapter's prefix already on; the
/// strings an operation takes besides its key are in the request's `payload` and `args`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Get,
    Set {
        ttl: Option<Duration>,
    },
    /// Stores only if the key is absent; answers whether it stored.
    SetIfAbsent {
        ttl: Option<Duration>,
    },
    Delete,
    Has,
    Increment {
        by: i64,
    },
    Expire {
        ttl: Duration,
    },
    /// `args`: the keys.
    GetMany,
    /// `args`: key, value and TTL in milliseconds (empty for none), for each entry.
    SetMany,
    /// The key is the pattern, the payload the cursor; `strip` bytes (the adapter's prefix)
    /// come off every key found.
    Scan {
        count: u64,
        strip: usize,
    },
    /// The payload is the entry's `data` field.
    StreamAdd {
        max_len: Option<u64>,
        approximate: bool,
    },
    /// The payload is the group, `args[0]` the id it starts after.
    GroupCreate,
    /// The payload is the group, `args[0]` the consumer. Reads entries never delivered to the
    /// group, waiting up to `block` for one when there are none.
    GroupRead {
        count: Option<u64>,
        block: Option<Duration>,
    },
    /// `args`: the low and the high id.
    Range {
        count: Option<u64>,
        reverse: bool,
    },
    /// The payload is the group, `args` the ids.
    Ack,
    Publish,
    /// A publish to a shard channel (`SPUBLISH`): a cluster's sharded Pub/Sub.
    ShardPublish,
    Subscribe,
    Unsubscribe,
}

impl Op {
    /// `first` and `second` are the call buffer's numbers, whose meaning depends on the
    /// operation; 0 means none where a number is optional.
    pub fn decode(code: u32, first: f64, second: f64) -> Option<Op> {
        let ttl = (first > 0.0).then(|| Duration::from_millis(first as u64));
        let count = (first > 0.0).then_some(first as u64);
        const GET: u32 = Operation::Get as u32;
        const SET: u32 = Operation::Set as u32;
        const DELETE: u32 = Operation::Delete as u32;
        const HAS: u32 = Operation::Has as u32;
        const INCREMENT: u32 = Operation::Increment as u32;
        const EXPIRE: u32 = Operation::Expire as u32;
        const PUBLISH: u32 = Operation::Publish as u32;
        const SUBSCRIBE: u32 = Operation::Subscribe as u32;
        const UNSUBSCRIBE: u32 = Operation::Unsubscribe as u32;
        const SET_IF_ABSENT: u32 = Operation::SetIfAbsent as u32;
        const GET_MANY: u32 = Operation::GetMany as u32;
        const SET_MANY: u32 = Operation::SetMany as u32;
        const SCAN: u32 = Operation::Scan as u32;
        const STREAM_ADD: u32 = Operation::StreamAdd as u32;
        const GROUP_CREATE: u32 = Operation::GroupCreate as u32;
        const GROUP_READ: u32 = Operation::GroupRead as u32;
        const RANGE: u32 = Operation::Range as u32;
        const RANGE_REVERSE: u32 = Operation::RangeReverse as u32;
        const ACK: u32 = Operation::Ack as u32;
        Some(match code {
            GET => Op::Get,
            SET => Op::Set { ttl },
            DELETE => Op::Delete,
            HAS => Op::Has,
            INCREMENT => Op::Increment { by: first as i64 },
            EXPIRE => Op::Expire { ttl: ttl? },
            PUBLISH => Op::Publish,
            SUBSCRIBE => Op::Subscribe,
            UNSUBSCRIBE => Op::Unsubscribe,
            SET_IF_ABSENT => Op::SetIfAbsent { ttl },
            GET_MANY => Op::GetMany,
            SET_MANY => Op::SetMany,
            SCAN => Op::Scan {
                count: count?,
                strip: 0,
            },
            STREAM_ADD => Op::StreamAdd {
                max_len: (first >= 0.0).then_some(first as u64),
                approximate: second > 0.0,
            },
            GROUP_CREATE => Op::GroupCreate,
            GROUP_READ => Op::GroupRead {
                count,
                block: (second > 0.0).then(|| Duration::from_millis(second as u64)),
            },
            RANGE => Op::Range {
                count,
                reverse: false,
            },
            RANGE_REVERSE => Op::Range {
                count,
                reverse: true,
            },
            ACK => Op::Ack,
            _ => return None,
        })
    }

    /// How long the server may hold the command before answering, on top of the usual wait.
    pub fn blocks_for(&self) -> Duration {
        match self {
            Op::GroupRead {
                block: Some(block), ..
            } => *block,
            _ => Duration::ZERO,
        }
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
    /// Further strings, for operations that take more (see `Op`).
    pub args: Vec<String>,
    /// Set when this request is one part of a call sent as several commands.
    pub joint: Option<Arc<Joint>>,
    /// Until when it may wait for a connection: `connectTimeout` after it was submitted, or,
    /// for a retry, the end of its retries.
    pub wait_until: Instant,
    /// When it was first written (or held behind a refused call), and how many times the
    /// server has said it did not run, the last time in these words.
    pub first_written: Option<Instant>,
    pub refusals: u32,
    pub refused: Option<StoreError>,
    /// Cluster redirections followed (MOVED, ASK), at most `MAX_REDIRECTS`.
    pub redirects: u8,
    /// ASK: sent once to this node, after `ASKING`. (Boxed, as `scan_hop`: cluster-only
    /// fields stay off every call's size.)
    pub ask: Option<Box<(String, u16)>>,
    /// Which part of its `joint` this is.
    pub part: usize,
    /// A scan of one master of a cluster: its id, and the next master's, for the cursor.
    pub scan_hop: Option<Box<(String, Option<String>)>>,
}

impl Request {
    /// The server said this request did not run and the condition will pass (LOADING, BUSY,
    /// ...): when to send it again, after a backoff and the last time at its deadline
    /// (`commandTimeout` after its first writing), or, past that deadline, the refusal to fail
    /// it with. Meanwhile it may wait for a connection until just after that deadline.
    pub fn hold(
        &mut self,
        err: StoreError,
        command_timeout: Duration,
    ) -> Result<Instant, StoreError> {
        let now = Instant::now();
        let deadline = self.first_written.unwrap_or(now) + command_timeout;
        if now >= deadline {
            return Err(err);
        }
        let at = (now + link::backoff(self.refusals)).min(deadline);
        self.refusals += 1;
        self.refused = Some(err);
        self.wait_until = deadline + Duration::from_millis(1);
        Ok(at)
    }

    /// The event that settles the call with `reply`; for a part of a call sent as several
    /// commands, only once every part is settled.
    pub fn settled(self, reply: Reply) -> Option<Event> {
        match self.joint {
            None => Some(Event::Completion { id: self.id, reply }),
            Some(joint) => joint.part_settled(reply, self.part),
        }
    }
}

/// A call sent as several commands (entries with and without a TTL in one `mset`): it
/// succeeds when every part did, and otherwise fails with the first failure.
pub struct Joint {
    id: u32,
    /// For a call of several keys split by slot (`mget` in a cluster): where each part's
    /// values go in the whole reply.
    positions: Vec<Vec<usize>>,
    state: Mutex<JointState>,
}

struct JointState {
    left: usize,
    failure: Option<StoreError>,
    /// Each value's JSON, in key order, as the parts bring them.
    values: Vec<String>,
}

impl Joint {
    pub fn new(id: u32, parts: usize) -> Arc<Joint> {
        Joint::gathering(id, vec![Vec::new(); parts])
    }

    /// A call whose part `i` answers with the values of the keys at `positions[i]`.
    pub fn gathering(id: u32, positions: Vec<Vec<usize>>) -> Arc<Joint> {
        let keys = positions.iter().map(Vec::len).sum();
        Arc::new(Joint {
            id,
            state: Mutex::new(JointState {
                left: positions.len(),
                failure: None,
                values: vec![String::new(); keys],
            }),
            positions,
        })
    }

    fn part_settled(&self, reply: Reply, part: usize) -> Option<Event> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.left -= 1;
        match reply {
            Reply::Error(err) => {
                state.failure.get_or_insert(err);
            }
            Reply::List(values) => {
                let positions = self.positions.get(part).map_or(&[][..], Vec::as_slice);
                for (value, &at) in values.into_iter().zip(positions) {
                    if let (Reply::Text(json), Some(slot)) = (value, state.values.get_mut(at)) {
                        *slot = json;
                    }
                }
            }
            _ => {}
        }
        if state.left > 0 {
            return None;
        }
        let reply = match state.failure.take() {
            Some(err) => Reply::Error(err),
            None if self.positions.iter().all(Vec::is_empty) => Reply::Null,
            // One JSON text of every value, in key order (see `json`).
            None => {
                let values = std::mem::take(&mut state.values);
                let mut out =
                    String::with_capacity(2 + values.iter().map(|v| v.len() + 1).sum::<usize>());
                out.push('[');
                out.push_str(&values.join(","));
                out.push(']');
                Reply::Text(out)
            }
        };
        Some(Event::Completion { id: self.id, reply })
    }
}
