//! The JS <-> Rust boundary. Commands are submitted synchronously; their completions, and
//! Pub/Sub messages, collect in one outbox per adapter. A weak threadsafe function wakes JS
//! only when the outbox goes from empty to non-empty, and JS drains the whole batch in one
//! synchronous call.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use napi::bindgen_prelude::{Array, Null, ToNapiValue};
use napi::sys;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, Unknown};

use crate::error::StoreError;

/// Wakes the adapter's JS dispatcher. Weak: it never keeps the event loop alive by itself.
pub type WakeFn = ThreadsafeFunction<(), Unknown<'static>, (), Status, false, true>;

/// A command's outcome, or a message; what JS receives for it.
#[derive(Debug)]
pub enum Reply {
    /// Not known yet: the reply will come through a drain.
    Pending,
    Null,
    Text(String),
    /// A value the memory store holds: JS gets a copy, the store keeps its own.
    Shared(Arc<str>),
    Number(f64),
    Bool(bool),
    /// JS sees `[code, message, errorType]`: the only array a reply can be.
    Error(StoreError),
}

impl ToNapiValue for Reply {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        match val {
            Reply::Pending => <()>::to_napi_value(env, ()),
            Reply::Null => Null::to_napi_value(env, Null),
            Reply::Text(text) => String::to_napi_value(env, text),
            Reply::Shared(text) => <&str>::to_napi_value(env, &text),
            Reply::Number(n) => f64::to_napi_value(env, n),
            Reply::Bool(b) => bool::to_napi_value(env, b),
            Reply::Error(err) => {
                let error_type = if err.out_of_range {
                    "RangeError"
                } else {
                    "Error"
                };
                Vec::<&str>::to_napi_value(env, vec![err.code.as_str(), &err.message, error_type])
            }
        }
    }
}

impl From<Result<Reply, StoreError>> for Reply {
    fn from(result: Result<Reply, StoreError>) -> Self {
        result.unwrap_or_else(Reply::Error)
    }
}

/// What crosses to JS in a drain: `[id, reply]` for a command, `[channel, payload]` for a message.
#[derive(Debug)]
pub enum Event {
    Completion {
        id: u32,
        reply: Reply,
    },
    Message {
        channel: String,
        payload: String,
    },
    /// An error that belongs to no call, for `onError`: `[null, [code, message]]`.
    Failure(StoreError),
}

// A panic while holding either lock leaves a plain value behind: still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Outbox {
    events: Mutex<VecDeque<Event>>,
    wake_pending: AtomicBool,
    /// Taken on close: the threadsafe function holds the JS dispatcher, and with it the adapter.
    wake: Mutex<Option<WakeFn>>,
}

impl Outbox {
    pub fn new(wake: WakeFn) -> Self {
        Outbox {
            events: Mutex::new(VecDeque::new()),
            wake_pending: AtomicBool::new(false),
            wake: Mutex::new(Some(wake)),
        }
    }

    pub fn complete(&self, id: u32, reply: Reply) {
        self.push_all(std::iter::once(Event::Completion { id, reply }));
    }

    pub fn push_all(&self, events: impl IntoIterator<Item = Event>) {
        {
            let mut queue = lock(&self.events);
            let before = queue.len();
            queue.extend(events);
            if queue.len() == before {
                return;
            }
        }
        // Ring only when JS is not already due to drain: a wake is the costly part.
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            if let Some(wake) = lock(&self.wake).as_ref() {
                // A closing environment refuses the call; its adapter is going away with it.
                let _ = wake.call((), ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    /// After this, events still collect but JS is no longer woken for them.
    pub fn release_wake(&self) {
        lock(&self.wake).take();
    }

    /// Up to `limit` events, oldest first, flattened as `[idOrChannel, replyOrPayload, ...]`;
    /// message entries are told apart by a string in the first slot. A full batch means more
    /// may be waiting: JS drains again on a later turn of the event loop, so a backlog of
    /// messages never blocks timers and I/O for long. No wake rings until the queue is empty.
    pub fn drain<'env>(&self, env: &'env Env, limit: u32) -> napi::Result<Array<'env>> {
        let events: Vec<Event> = {
            let mut queue = lock(&self.events);
            let count = queue.len().min(limit as usize);
            if count == queue.len() {
                // Cleared under the lock, so an event queued after this take rings again.
                self.wake_pending.store(false, Ordering::Release);
            }
            queue.drain(..count).collect()
        };
        let mut out = env.create_array((events.len() * 2) as u32)?;
        for (i, event) in events.into_iter().enumerate() {
            let at = (i * 2) as u32;
            match event {
                Event::Completion { id, reply } => {
                    out.set(at, id)?;
                    out.set(at + 1, reply)?;
                }
                Event::Message { channel, payload } => {
                    out.set(at, channel)?;
                    out.set(at + 1, payload)?;
                }
                Event::Failure(err) => {
                    out.set(at, Null)?;
                    out.set(at + 1, Reply::Error(err))?;
                }
            }
        }
        Ok(out)
    }
}
