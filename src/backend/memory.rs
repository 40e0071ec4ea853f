//! The in-process store: values with millisecond TTLs, atomic counters, streams with
//! consumer groups (blocking reads woken by appends) and Pub/Sub. Named
//! stores live for the whole process, so every adapter of that name (in any worker) shares
//! them, and a worker's exit loses nothing.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt::Write;
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::glob::Pattern;
use super::json;
use super::stream::{entries_reply, Stream, StreamId};
use super::{Op, MAX_SAFE_INTEGER};
use crate::bridge::{Event, Outbox, Reply};
use crate::error::{ErrorCode, StoreError};

/// What a key holds. Values are shared, not copied: a read hands JS the stored value.
enum Value {
    Text(Arc<str>),
    Stream(Box<Stream>),
}

struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    fn text(value: &str, expires_at: Option<Instant>) -> Entry {
        Entry {
            value: Value::Text(Arc::from(value)),
            expires_at,
        }
    }
}

fn wrong_type() -> StoreError {
    StoreError::new(
        ErrorCode::Redis,
        "WRONGTYPE Operation against a key holding the wrong kind of value",
    )
}

/// A blocking group read waiting for an entry.
struct Waiter {
    adapter: u64,
    outbox: Weak<Outbox>,
    call: u32,
    stream: String,
    group: String,
    consumer: String,
    count: Option<u64>,
    deadline: Instant,
}

#[derive(Default)]
struct Data {
    entries: HashMap<Arc<str>, Entry>,
    /// Every key, in order: a scan walks it, so a key present all along is seen whatever
    /// is added or removed meanwhile.
    keys: BTreeSet<Arc<str>>,
    /// Deadlines in order; an item whose entry has since changed its deadline is skipped.
    deadlines: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    waiters: Vec<Waiter>,
}

impl Data {
    /// Records when `key` expires. Refreshing a TTL leaves the old deadline behind until it
    /// passes, so the heap is rebuilt from the entries once stale deadlines dominate it.
    fn add_deadline(&mut self, at: Instant, key: Arc<str>) {
        self.deadlines.push(Reverse((at, key)));
        if self.deadlines.len() > 2 * self.entries.len() + 64 {
            self.deadlines = self
                .entries
                .iter()
                .filter_map(|(key, e)| e.expires_at.map(|at| Reverse((at, key.clone()))))
                .collect();
        }
    }

    /// Stores `entry` under `key`, replacing what was there (and its expiry).
    fn put(&mut self, key: &str, entry: Entry) {
        let expires_at = entry.expires_at;
        match self.entries.get_mut(key) {
            Some(slot) => {
                let was_stream = matches!(slot.value, Value::Stream(_));
                *slot = entry;
                if was_stream {
                    self.unblock(key);
                }
            }
            None => {
                let key: Arc<str> = Arc::from(key);
                self.keys.insert(key.clone());
                self.entries.insert(key, entry);
            }
        }
        if let Some(at) = expires_at {
            let key = self.shared_key(key);
            self.add_deadline(at, key);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.keys.remove(key);
            if matches!(old.value, Value::Stream(_)) {
                self.unblock(key);
            }
        }
    }

    /// Ends the reads waiting on a stream that is gone (deleted, expired or overwritten), as
    /// Redis does, in its words.
    fn unblock(&mut self, stream: &str) {
        if self.waiters.is_empty() {
            return;
        }
        let gone = StoreError::new(
            ErrorCode::Redis,
            "UNBLOCKED the stream key no longer exists",
        );
        self.waiters.retain(|waiter| {
            if waiter.stream != stream {
                return true;
            }
            if let Some(outbox) = waiter.outbox.upgrade() {
                outbox.complete(waiter.call, Reply::Error(gone.clone()));
            }
            false
        });
    }

    /// The key as the map holds it, or a new one.
    fn shared_key(&self, key: &str) -> Arc<str> {
        match self.entries.get_key_value(key) {
            Some((held, _)) => held.clone(),
            None => Arc::from(key),
        }
    }

    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.is_live(now)) {
            self.remove(key);
        }
        self.entries.get_mut(key)
    }

    /// The stream at `key`; `None` if there is none, an error if the key holds a value.
    fn stream(&mut self, key: &str, now: Instant) -> Result<Option<&mut Stream>, StoreError> {
        match self.live(key, now) {
            None => Ok(None),
            Some(Entry {
                value: Value::Stream(stream),
                ..
            }) => Ok(Some(stream)),
            Some(_) => Err(wrong_type()),
        }
    }

    /// The stream at `key`, made if there is none.
    fn stream_or_new(&mut self, key: &str, now: Instant) -> Result<&mut Stream, StoreError> {
        if self.stream(key, now)?.is_none() {
            self.put(
                key,
                Entry {
                    value: Value::Stream(Box::default()),
                    expires_at: None,
                },
            );
        }
        match self.stream(key, now)? {
            Some(stream) => Ok(stream),
            None => Err(wrong_type()),
        }
    }

    /// Removes what expired by `now`, and ends the blocking reads whose time is up; returns
    /// when the next of either is due.
    fn reclaim_expired(&mut self, now: Instant) -> Option<Instant> {
        let mut timed_out = Vec::new();
        self.waiters.retain(|waiter| {
            let waiting = waiter.deadline > now;
            if !waiting {
                timed_out.push((waiter.outbox.clone(), waiter.call));
            }
            waiting
        });
        for (outbox, call) in timed_out {
            if let Some(outbox) = outbox.upgrade() {
                outbox.complete(call, entries_reply(&[]));
            }
        }
        let next_read = self.waiters.iter().map(|w| w.deadline).min();
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                return Some(*at).into_iter().chain(next_read).min();
            }
            if let Some(Reverse((at, key))) = self.deadlines.pop() {
                if self
                    .entries
                    .get(&key)
                    .is_some_and(|e| e.expires_at == Some(at))
                {
                    self.remove(&key);
                }
            }
        }
        next_read
    }

    /// Gives the new entries of `stream` to the reads waiting on it, oldest read first.
    fn serve_waiters(&mut self, stream: &str, now: Instant) {
        let mut i = 0;
        while i < self.waiters.len() {
            if self.waiters[i].stream != stream {
                i += 1;
                continue;
            }
            // The read of an adapter whose thread is gone (a worker ended mid-read) must not
            // take entries nobody will receive.
            if self.waiters[i].outbox.strong_count() == 0 {
                self.waiters.remove(i);
                continue;
            }
            let waiter = &self.waiters[i];
            let (group, consumer, count) =
                (waiter.group.clone(), waiter.consumer.clone(), waiter.count);
            let read = match self.stream(stream, now) {
                Ok(Some(s)) if s.appended_since(&group) == Some(false) => {
                    i += 1;
                    continue;
                }
                Ok(Some(s)) => s.read_group(&group, &consumer, count),
                _ => None,
            };
            let reply = match read {
                Some(entries) => entries_reply(&entries),
                None => Reply::Error(no_group(stream, &group)),
            };
            let waiter = self.waiters.remove(i);
            if let Some(outbox) = waiter.outbox.upgrade() {
                outbox.complete(waiter.call, reply);
            }
        }
    }
}

/// Redis's words, so both backends fail alike.
fn no_group(stream: &str, group: &str) -> StoreError {
    StoreError::new(
        ErrorCode::Redis,
        format!("NOGROUP No such key '{stream}' or consumer group '{group}' in XREADGROUP with GROUP option"),
    )
}

/// The adapter a call comes from, and how to complete it later.
pub struct Caller<'a> {
    pub adapter: u64,
    pub outbox: &'a Arc<Outbox>,
    pub call: u32,
}

/// A scan's cursor: where the last page stopped, as the key it visited last (in hex, so the
/// cursor is plain ASCII), or `0` to start.
fn scan_start(cursor: &str) -> Result<Option<String>, StoreError> {
    if cursor == "0" {
        return Ok(None);
    }
    let invalid = || {
        StoreError::invalid_argument(format!(
            "invalid scan cursor {cursor:?}: pass '0' or the cursor a previous scan returned"
        ))
    };
    let hex = cursor.strip_prefix('m').ok_or_else(invalid)?;
    if hex.len() % 2 != 0 {
        return Err(invalid());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("x"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

fn scan_cursor(last: &str) -> String {
    let mut cursor = String::with_capacity(1 + 2 * last.len());
    cursor.push('m');
    for byte in last.bytes() {
        let _ = write!(cursor, "{byte:02x}");
    }
    cursor
}

fn milliseconds_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

const DROPPING: &str =
    "messages published to this adapter are dropped until JS has taken half of them";

struct Subscriber {
    adapter: u64,
    outbox: Weak<Outbox>,
}

#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<Data>,
    channels: Mutex<HashMap<String, Vec<Subscriber>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemoryStore {
    pub fn named(name: &str) -> Arc<MemoryStore> {
        static NAMED: OnceLock<Mutex<HashMap<String, Arc<MemoryStore>>>> = OnceLock::new();
        let mut named = lock(NAMED.get_or_init(Default::default));
        named
            .entry(name.to_string())
            .or_insert_with(MemoryStore::private)
            .clone()
    }

    pub fn private() -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::default());
        Sweeper::global().watch(&store);
        store
    }

    /// Runs one operation; a blocking read with nothing to read completes later, through
    /// the caller's outbox.
    pub fn run(&self, caller: Caller, op: Op, key: &str, payload: &str, args: &[String]) -> Reply {
        let now = Instant::now();
        let result = match op {
            Op::Publish | Op::ShardPublish => return self.publish(key, payload),
            Op::Subscribe => return self.subscribe(caller.adapter, caller.outbox, key),
            Op::Unsubscribe => return self.unsubscribe(caller.adapter, key),
            Op::Get => Ok(self.get(key, now)),
            Op::Set { ttl } => Ok(self.set(key, payload, ttl, now)),
            Op::SetIfAbsent { ttl } => Ok(self.set_if_absent(key, payload, ttl, now)),
            Op::Delete => {
                lock(&self.data).remove(key);
                Ok(Reply::Null)
            }
            Op::Has => Ok(Reply::Bool(lock(&self.data).live(key, now).is_some())),
            Op::Increment { by } => self.increment(key, by, now),
            Op::Expire { ttl } => Ok(self.expire(key, ttl, now)),
            Op::GetMany => Ok(self.get_many(args, now)),
            Op::SetMany => Ok(self.set_many(args, now)),
            Op::Scan { count, strip } => self.scan(key, payload, count, strip, now),
            Op::StreamAdd { max_len, .. } => self.stream_add(key, payload, max_len, now),
            Op::GroupCreate => self.group_create(key, payload, args, now),
            Op::GroupRead { count, block } => {
                self.group_read(caller, key, payload, args, count, block, now)
            }
            Op::Range { count, reverse } => self.range(key, args, count, reverse, now),
            Op::Ack => self.ack(key, payload, args, now),
        };
        result.into()
    }

    fn get(&self, key: &str, now: Instant) -> Reply {
        match lock(&self.data).live(key, now) {
            Some(Entry {
                value: Value::Text(value),
                ..
            }) => Reply::Shared(value.clone()),
            Some(_) => Reply::Error(wrong_type()),
            None => Reply::Null,
        }
    }

    /// `ttl` of `None` stores without expiry, clearing any earlier one.
    fn set(&self, key: &str, value: &str, ttl: Option<Duration>, now: Instant) -> Reply {
        // A TTL too long for the clock to represent is as good as none.
        let expires_at = ttl.and_then(|ttl| now.checked_add(ttl));
        lock(&self.data).put(key, Entry::text(value, expires_at));
        if let Some(at) = expires_at {
            Sweeper::global().wake_by(at);
        }
        Reply::Null
    }

    fn set_if_absent(&self, key: &str, value: &str, ttl: Option<Duration>, now: Instant) -> Reply {
        let expires_at = ttl.and_then(|ttl| now.checked_add(ttl));
        let mut data = lock(&self.data);
        if data.live(key, now).is_some() {
            return Reply::Bool(false);
        }
        data.put(key, Entry::text(value, expires_at));
        drop(data);
        if let Some(at) = expires_at {
            Sweeper::global().wake_by(at);
        }
        Reply::Bool(true)
    }

    /// Refuses, leaving the value as it was, when it is not an integer or the result would
    /// not fit a JS number exactly.
    fn increment(&self, key: &str, by: i64, now: Instant) -> Result<Reply, StoreError> {
        let mut data = lock(&self.data);
        let entry = data.live(key, now);
        let current = match &entry {
            None => 0,
            Some(Entry {
                value: Value::Text(value),
                ..
            }) => parse_integer(value).ok_or_else(StoreError::not_integer)?,
            Some(_) => return Err(wrong_type()),
        };
        let next = current
            .checked_add(by)
            .filter(|n| (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(n))
            .ok_or_else(StoreError::out_of_safe_range)?;
        let digits = itoa::Buffer::new().format(next).to_owned();
        match entry {
            Some(entry) => entry.value = Value::Text(Arc::from(digits)),
            None => data.put(key, Entry::text(&digits, None)),
        }
        Ok(Reply::Number(next as f64))
    }

    fn expire(&self, key: &str, ttl: Duration, now: Instant) -> Reply {
        let mut data = lock(&self.data);
        let at = now.checked_add(ttl);
        let Some(entry) = data.live(key, now) else {
            return Reply::Null;
        };
        entry.expires_at = at;
        let Some(at) = at else {
            return Reply::Null;
        };
        let key = data.shared_key(key);
        data.add_deadline(at, key);
        drop(data);
        Sweeper::global().wake_by(at);
        Reply::Null
    }

    /// The values as one JSON array (see `json`).
    fn get_many(&self, keys: &[String], now: Instant) -> Reply {
        let mut data = lock(&self.data);
        let mut out = String::with_capacity(2 + keys.len() * 128);
        out.push('[');
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let value = match data.live(key, now) {
                Some(Entry {
                    value: Value::Text(value),
                    ..
                }) => Some(&**value),
                // As MGET: a key of another type reads as missing.
                _ => None,
            };
            json::push_value(&mut out, value);
        }
        out.push(']');
        Reply::Text(out)
    }

    /// `entries`: key, value and TTL in milliseconds (empty for none) of each; all written
    /// under one lock, so no reader sees part of them.
    fn set_many(&self, entries: &[String], now: Instant) -> Reply {
        let mut data = lock(&self.data);
        let mut soonest: Option<Instant> = None;
        for entry in entries.chunks_exact(3) {
            let ttl = entry[2].parse::<u64>().ok().filter(|ms| *ms > 0);
            let expires_at = ttl.and_then(|ms| now.checked_add(Duration::from_millis(ms)));
            data.put(&entry[0], Entry::text(&entry[1], expires_at));
            soonest = soonest.into_iter().chain(expires_at).min();
        }
        drop(data);
        if let Some(at) = soonest {
            Sweeper::global().wake_by(at);
        }
        Reply::Null
    }

    /// Up to `count` keys after the cursor, in key order, those matching `pattern` returned
    /// without their first `strip` bytes (the adapter's prefix).
    fn scan(
        &self,
        pattern: &str,
        cursor: &str,
        count: u64,
        strip: usize,
        now: Instant,
    ) -> Result<Reply, StoreError> {
        let after = scan_start(cursor)?;
        let pattern_rules = Pattern::new(pattern);
        let literal = pattern_rules.literal_start();
        let literal = String::from_utf8_lossy(&literal);
        let data = lock(&self.data);
        // Keys sharing the pattern's literal start are together in key order.
        let from: Bound<&str> = match &after {
            Some(after) if after.as_str() >= literal.as_ref() => Bound::Excluded(after.as_str()),
            _ => Bound::Included(literal.as_ref()),
        };
        let mut keys = Vec::new();
        let mut last = None;
        let mut visited = 0;
        let mut within = data
            .keys
            .range::<str, _>((from, Bound::Unbounded))
            .take_while(|key| key.starts_with(literal.as_ref()));
        for key in within.by_ref() {
            visited += 1;
            let live = data.entries.get(key).is_some_and(|e| e.is_live(now));
            if live && pattern_rules.matches(key.as_bytes()) {
                keys.push(Reply::Text(key.get(strip..).unwrap_or_default().to_owned()));
            }
            last = Some(key.clone());
            if visited >= count {
                break;
            }
        }
        let done = within.next().is_none();
        let cursor = match last {
            Some(last) if !done => scan_cursor(&last),
            _ => "0".to_owned(),
        };
        Ok(Reply::List(vec![Reply::Text(cursor), Reply::List(keys)]))
    }

    fn stream_add(
        &self,
        key: &str,
        data: &str,
        max_len: Option<u64>,
        now: Instant,
    ) -> Result<Reply, StoreError> {
        let mut store = lock(&self.data);
        let id = store
            .stream_or_new(key, now)?
            .add(data, milliseconds_since_epoch(), max_len);
        store.serve_waiters(key, now);
        Ok(Reply::Text(id))
    }

    fn group_create(
        &self,
        key: &str,
        group: &str,
        args: &[String],
        now: Instant,
    ) -> Result<Reply, StoreError> {
        let start = match args.first().map(String::as_str) {
            Some("$") => None,
            Some(id) => Some(StreamId::parse_or_refuse(id, false, false)?),
            None => Some(StreamId::default()),
        };
        lock(&self.data)
            .stream_or_new(key, now)?
            .create_group(group, start);
        Ok(Reply::Null)
    }

    #[allow(clippy::too_many_arguments)]
    fn group_read(
        &self,
        caller: Caller,
        key: &str,
        group: &str,
        args: &[String],
        count: Option<u64>,
        block: Option<Duration>,
        now: Instant,
    ) -> Result<Reply, StoreError> {
        let consumer = args.first().map_or("", String::as_str);
        let mut data = lock(&self.data);
        let read = match data.stream(key, now)? {
            Some(stream) => stream.read_group(group, consumer, count),
            None => None,
        };
        let entries = read.ok_or_else(|| no_group(key, group))?;
        let Some(block) = block.filter(|_| entries.is_empty()) else {
            return Ok(entries_reply(&entries));
        };
        let deadline = now + block;
        data.waiters.push(Waiter {
            adapter: caller.adapter,
            outbox: Arc::downgrade(caller.outbox),
            call: caller.call,
            stream: key.to_owned(),
            group: group.to_owned(),
            consumer: consumer.to_owned(),
            count,
            deadline,
        });
        drop(data);
        Sweeper::global().wake_by(deadline);
        Ok(Reply::Pending)
    }

    fn range(
        &self,
        key: &str,
        args: &[String],
        count: Option<u64>,
        reverse: bool,
        now: Instant,
    ) -> Result<Reply, StoreError> {
        let id = |i: usize, high: bool| {
            let text = args
                .get(i)
                .map_or(if high { "+" } else { "-" }, String::as_str);
            StreamId::parse_or_refuse(text, high, true)
        };
        let (low, high) = (id(0, false)?, id(1, true)?);
        Ok(match lock(&self.data).stream(key, now)? {
            Some(stream) => entries_reply(&stream.range(low, high, count, reverse)),
            None => entries_reply(&[]),
        })
    }

    fn ack(
        &self,
        key: &str,
        group: &str,
        ids: &[String],
        now: Instant,
    ) -> Result<Reply, StoreError> {
        let ids = ids
            .iter()
            .map(|id| StreamId::parse_or_refuse(id, false, false))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(stream) = lock(&self.data).stream(key, now)? {
            stream.ack(group, ids.into_iter());
        }
        Ok(Reply::Null)
    }

    fn publish(&self, channel: &str, payload: &str) -> Reply {
        let mut channels = lock(&self.channels);
        if let Some(subscribers) = channels.get_mut(channel) {
            // Pushed while the lock is held, so every subscriber sees publishes in one order.
            subscribers.retain(|s| match s.outbox.upgrade() {
                // A subscriber whose JS has fallen this far behind misses messages, as a slow
                // Redis subscriber is cut off by the server's own limit.
                Some(outbox) if outbox.backlog_full(DROPPING) => true,
                Some(outbox) => {
                    outbox.push_all([Event::Message {
                        channel: channel.to_string(),
                        payload: payload.to_string(),
                    }]);
                    true
                }
                None => false,
            });
            if subscribers.is_empty() {
                channels.remove(channel);
            }
        }
        Reply::Null
    }

    fn subscribe(&self, adapter: u64, outbox: &Arc<Outbox>, channel: &str) -> Reply {
        let mut channels = lock(&self.channels);
        let subscribers = channels.entry(channel.to_string()).or_default();
        if !subscribers.iter().any(|s| s.adapter == adapter) {
            subscribers.push(Subscriber {
                adapter,
                outbox: Arc::downgrade(outbox),
            });
        }
        Reply::Null
    }

    fn unsubscribe(&self, adapter: u64, channel: &str) -> Reply {
        let mut channels = lock(&self.channels);
        if let Some(subscribers) = channels.get_mut(channel) {
            subscribers.retain(|s| s.adapter != adapter);
            if subscribers.is_empty() {
                channels.remove(channel);
            }
        }
        Reply::Null
    }

    /// Drops the closed adapter's subscriptions.
    pub fn unsubscribe_all(&self, adapter: u64) {
        lock(&self.channels).retain(|_, subscribers| {
            subscribers.retain(|s| s.adapter != adapter);
            !subscribers.is_empty()
        });
    }

    /// Drops the closing adapter's blocking reads (JS has ended them).
    pub fn end_blocking_reads(&self, adapter: u64) {
        lock(&self.data).waiters.retain(|w| w.adapter != adapter);
    }

    /// Entries held, expired or not: shows whether expired keys were reclaimed.
    pub fn entry_count(&self) -> u32 {
        lock(&self.data).entries.len() as u32
    }
}

/// Redis's rule: the whole value is a base-10 signed 64-bit integer, nothing around it.
fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    text.parse().ok()
}

/// One thread for the process that removes expired entries from every store when their
/// deadline passes, so memory is reclaimed even for keys nobody reads again.
struct Sweeper {
    state: Mutex<SweeperState>,
    wakeup: Condvar,
}

#[derive(Default)]
struct SweeperState {
    stores: Vec<Weak<MemoryStore>>,
    next_deadline: Option<Instant>,
}

impl Sweeper {
    fn global() -> &'static Sweeper {
        static SWEEPER: OnceLock<Sweeper> = OnceLock::new();
        SWEEPER.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("kindling-sweeper".into())
                .spawn(|| Sweeper::global().run());
            // Without the thread, expired keys are still never returned; they are only
            // reclaimed later, on access.
            drop(spawned);
            Sweeper {
                state: Mutex::default(),
                wakeup: Condvar::new(),
            }
        })
    }

    fn watch(&self, store: &Arc<MemoryStore>) {
        let mut state = lock(&self.state);
        state.stores.retain(|s| s.strong_count() > 0);
        state.stores.push(Arc::downgrade(store));
    }

    fn wake_by(&self, at: Instant) {
        let mut state = lock(&self.state);
        if state.next_deadline.is_none_or(|next| at < next) {
            state.next_deadline = Some(at);
            self.wakeup.notify_one();
        }
    }

    fn run(&self) {
        let mut state = lock(&self.state);
        loop {
            let now = Instant::now();
            if state.next_deadline.is_some_and(|at| at <= now) {
                // Cleared for the sweep: a deadline registered meanwhile is kept, not lost.
                state.next_deadline = None;
                let stores: Vec<Arc<MemoryStore>> =
                    state.stores.iter().filter_map(Weak::upgrade).collect();
                drop(state);
                let next = stores
                    .iter()
                    .filter_map(|s| lock(&s.data).reclaim_expired(now))
                    .min();
                drop(stores);
                state = lock(&self.state);
                state.next_deadline = next.into_iter().chain(state.next_deadline).min();
                continue;
            }
            state = match state.next_deadline {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    self.wakeup
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.wakeup.wait(state).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}
