//! The JS <-> Rust boundary. Commands are submitted synchronously; their completions, and
//! Pub/Sub messages, collect in one outbox per adapter. A weak threadsafe function wakes JS
//! only when the outbox goes from empty to non-empty, and JS drains the whole batch in one
//! synchronous call.

use std::collections::{HashMap, VecDeque};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use napi::bindgen_prelude::{Array, Function, Null, Object, ToNapiValue};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{sys, Env, JsValue, Status, Unknown};
use tokio::sync::{watch, Notify};

use crate::backend::{NatAnswer, NatFunction};
use crate::error::{ErrorCode, StoreError};
use crate::options::NodeAddress;

/// Wakes the adapter's JS dispatcher. Weak: it never keeps the event loop alive by itself.
pub type WakeFn = ThreadsafeFunction<(), Unknown<'static>, (), Status, false, true>;

/// ioredis's natMap function, called on the JS thread for each connection to a cluster node.
/// Weak, as the wake: it keeps no process alive.
/// A call queued to JS cannot be taken back when its connection attempt gives up, so one
/// address is asked once at a time, its answer reused for `NAT_ANSWER_REUSE`: a slow function
/// then never has calls queued back to back, starving the JS thread.
struct JsNatMap {
    function: Arc<NatTsfn>,
    /// Per announced address, the answer asked for (`None` until it comes) and when it came.
    asked: Mutex<HashMap<String, NatAnswerWatch>>,
}

type NatTsfn = ThreadsafeFunction<String, Option<NodeAddress>, String, Status, false, true>;
type NatResult = Result<Option<(String, u16)>, String>;
type NatAnswerWatch = watch::Receiver<Option<(Instant, NatResult)>>;

const NAT_ANSWER_REUSE: Duration = Duration::from_secs(1);

impl NatFunction for JsNatMap {
    fn reach(&self, announced: String) -> NatAnswer<'_> {
        let mut answer = {
            let mut asked = lock(&self.asked);
            let current = asked
                .get(&announced)
                .filter(|answer| match &*answer.borrow() {
                    None => true,
                    Some((at, _)) => at.elapsed() < NAT_ANSWER_REUSE,
                });
            match current {
                Some(answer) => answer.clone(),
                None => {
                    let (tell, answer) = watch::channel(None);
                    let function = self.function.clone();
                    let key = announced.clone();
                    // Not dropped with the attempt: the answer serves whoever asks next.
                    tokio::spawn(async move {
                        let result = match function.call_async_catch(key).await {
                            Ok(to) => Ok(to.map(|to| (to.host, to.port as u16))),
                            Err(err) => Err(err.reason),
                        };
                        let _ = tell.send(Some((Instant::now(), result)));
                    });
                    asked.insert(announced, answer.clone());
                    answer
                }
            }
        };
        Box::pin(async move {
            match answer.wait_for(Option::is_some).await {
                Ok(answered) => match &*answered {
                    Some((_, result)) => result.clone(),
                    None => Err("natMap gave no answer".to_owned()),
                },
                Err(_) => Err("natMap gave no answer".to_owned()),
            }
        })
    }
}

pub fn nat_function(
    function: Function<String, Option<NodeAddress>>,
) -> napi::Result<Box<dyn NatFunction>> {
    let function = function
        .build_threadsafe_function()
        .weak::<true>()
        .callee_handled::<false>()
        .build()?;
    Ok(Box::new(JsNatMap {
        function: Arc::new(function),
        asked: Mutex::new(HashMap::new()),
    }))
}

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
    /// An array of replies (none of them errors).
    List(Vec<Reply>),
    /// JS sees an object (see `error_object`).
    Error(StoreError),
}

/// What JS sees for a failure: `{ code, message, type, retryable?, channel?, cause? }`, where
/// `type` is the JS error class and `cause` `{ code, syscall, address?, port?, message }`. An
/// object, so that no reply is mistaken for it: every other reply is a primitive or an array.
unsafe fn error_object(env: sys::napi_env, err: StoreError) -> napi::Result<sys::napi_value> {
    let env = Env::from_raw(env);
    let mut object = Object::new(&env)?;
    object.set("code", err.code.as_str())?;
    object.set(
        "type",
        if err.out_of_range {
            "RangeError"
        } else {
            "Error"
        },
    )?;
    if err.retryable {
        object.set("retryable", true)?;
    }
    if let Some(channel) = &err.channel {
        object.set("channel", channel.as_str())?;
    }
    if let Some(cause) = &err.cause {
        let mut details = Object::new(&env)?;
        details.set("code", cause.errno)?;
        details.set("syscall", cause.syscall)?;
        details.set("message", cause.message.as_str())?;
        if let Some(address) = &cause.address {
            details.set("address", address.as_str())?;
        }
        if let Some(port) = cause.port {
            details.set("port", u32::from(port))?;
        }
        object.set("cause", details)?;
    }
    object.set("message", err.message)?;
    Ok(object.raw())
}

/// A JS string of `text`, or, when V8 cannot hold one that long (about 512 MB of UTF-16; a
/// value of control characters escaped in a JSON reply grows sixfold), the failure of that
/// call alone rather than of the whole drain.
unsafe fn text_value(env: sys::napi_env, text: &str) -> napi::Result<sys::napi_value> {
    match <&str>::to_napi_value(env, text) {
        Ok(value) => Ok(value),
        Err(_) => {
            let mut pending = false;
            sys::napi_is_exception_pending(env, &mut pending);
            if pending {
                let mut exception = ptr::null_mut();
                sys::napi_get_and_clear_last_exception(env, &mut exception);
            }
            error_object(
                env,
                StoreError::new(
                    ErrorCode::Serialize,
                    format!(
                        "the reply ({} MB as text) is too long for a JS string",
                        text.len() / (1024 * 1024)
                    ),
                ),
            )
        }
    }
}

impl ToNapiValue for Reply {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        match val {
            Reply::Pending => <()>::to_napi_value(env, ()),
            Reply::Null => Null::to_napi_value(env, Null),
            Reply::Text(text) => text_value(env, &text),
            Reply::Shared(text) => text_value(env, &text),
            Reply::Number(n) => f64::to_napi_value(env, n),
            Reply::Bool(b) => bool::to_napi_value(env, b),
            Reply::List(items) => {
                let mut array = ptr::null_mut();
                napi::check_status!(sys::napi_create_array_with_length(
                    env,
                    items.len(),
                    &mut array
                ))?;
                for (i, item) in items.into_iter().enumerate() {
                    let item = Reply::to_napi_value(env, item)?;
                    napi::check_status!(sys::napi_set_element(env, array, i as u32, item))?;
                }
                Ok(array)
            }
            Reply::Error(err) => error_object(env, err),
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
    /// An error that belongs to no call, for `onError`: `[null, error]`.
    Failure(StoreError),
}

// A panic while holding either lock leaves a plain value behind: still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Event {
    /// The bytes a message holds while it waits for JS; completions are not counted.
    fn message_bytes(&self) -> usize {
        match self {
            Event::Message { channel, payload } => channel.len() + payload.len(),
            _ => 0,
        }
    }
}

/// Events waiting for JS. Calls' outcomes (and errors for `onError`) are kept apart from
/// messages, so a backlog of messages never holds up a call's reply.
#[derive(Default)]
struct Queues {
    calls: VecDeque<Event>,
    messages: VecDeque<Event>,
}

pub struct Outbox {
    events: Mutex<Queues>,
    wake_pending: AtomicBool,
    /// Taken on close: the threadsafe function holds the JS dispatcher, and with it the adapter.
    wake: Mutex<Option<WakeFn>>,
    /// Bytes of Pub/Sub messages waiting for JS, the most allowed, and whether that was
    /// reached (until JS has taken half of them).
    backlog: AtomicUsize,
    backlog_limit: usize,
    backlog_over: AtomicBool,
    /// Rung when JS has taken the backlog down to half the limit after it was reached.
    backlog_taken: Notify,
}

impl Outbox {
    pub fn new(wake: WakeFn, backlog_limit: usize) -> Self {
        Outbox {
            events: Mutex::new(Queues::default()),
            wake_pending: AtomicBool::new(false),
            wake: Mutex::new(Some(wake)),
            backlog: AtomicUsize::new(0),
            backlog_limit,
            backlog_over: AtomicBool::new(false),
            backlog_taken: Notify::new(),
        }
    }

    /// Whether the messages waiting for JS have reached the limit. The first call that finds
    /// it reached reports it to `onError`, saying `consequence`.
    pub fn backlog_full(&self, consequence: &str) -> bool {
        let waiting = self.backlog.load(Ordering::Acquire);
        if waiting < self.backlog_limit {
            return false;
        }
        if !self.backlog_over.swap(true, Ordering::AcqRel) {
            // A drain between the load and the swap saw no flag and rang nothing: look again.
            if self.backlog.load(Ordering::Acquire) <= self.backlog_limit / 2 {
                self.backlog_over.store(false, Ordering::Release);
                return false;
            }
            self.push_all([Event::Failure(StoreError::new(
                crate::error::ErrorCode::Connection,
                format!(
                    "{} MB of Pub/Sub messages wait for JS (maxPubSubBacklog is {} MB): {consequence}",
                    waiting / (1024 * 1024),
                    self.backlog_limit / (1024 * 1024),
                ),
            ))]);
        }
        true
    }

    /// Completes once JS has taken the backlog down to half the limit.
    pub async fn backlog_taken(&self) {
        self.backlog_taken.notified().await
    }

    pub fn complete(&self, id: u32, reply: Reply) {
        self.push_all(std::iter::once(Event::Completion { id, reply }));
    }

    pub fn push_all(&self, events: impl IntoIterator<Item = Event>) {
        {
            let mut queues = lock(&self.events);
            let mut bytes = 0;
            let mut pushed = false;
            for event in events {
                pushed = true;
                match event {
                    Event::Message { .. } => {
                        bytes += event.message_bytes();
                        queues.messages.push_back(event);
                    }
                    _ => queues.calls.push_back(event),
                }
            }
            if !pushed {
                return;
            }
            if bytes > 0 {
                self.backlog.fetch_add(bytes, Ordering::AcqRel);
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

    /// Up to `limit` events, flattened as `[idOrChannel, replyOrPayload, ...]`: calls'
    /// outcomes first, then, if `messages`, messages in arrival order (told apart by a string
    /// in the first slot). A full batch means more may be waiting: JS drains again on a later
    /// turn of the event loop. No wake rings until both queues are empty.
    pub fn drain<'env>(
        &self,
        env: &'env Env,
        limit: u32,
        messages: bool,
    ) -> napi::Result<Array<'env>> {
        let events: Vec<Event> = {
            let mut queues = lock(&self.events);
            let calls = queues.calls.len().min(limit as usize);
            let mut events: Vec<Event> = queues.calls.drain(..calls).collect();
            if messages {
                let count = queues.messages.len().min(limit as usize - calls);
                events.extend(queues.messages.drain(..count));
            }
            if queues.calls.is_empty() && queues.messages.is_empty() {
                // Cleared under the lock, so an event queued after this take rings again.
                self.wake_pending.store(false, Ordering::Release);
            }
            events
        };
        let taken: usize = events.iter().map(Event::message_bytes).sum();
        if taken > 0 {
            let left = self.backlog.fetch_sub(taken, Ordering::AcqRel) - taken;
            if left <= self.backlog_limit / 2 && self.backlog_over.swap(false, Ordering::AcqRel) {
                self.backlog_taken.notify_one();
            }
        }
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
