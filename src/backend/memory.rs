//! The in-process store: values with millisecond TTLs, atomic counters and Pub/Sub. Named
//! stores live for the whole process, so every adapter of that name (in any worker) shares
//! them, and a worker's exit loses nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::MAX_SAFE_INTEGER;
use crate::bridge::{Event, Outbox, Reply};
use crate::error::StoreError;

/// Keys and values are shared, not copied: the deadline heap holds the entry's own key, and a
/// read hands JS the stored value.
struct Entry {
    value: Arc<str>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

#[derive(Default)]
struct Data {
    entries: HashMap<Arc<str>, Entry>,
    /// Deadlines in order; an item whose entry has since changed its deadline is skipped.
    deadlines: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
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

    /// The key as the map holds it, or a new one.
    fn shared_key(&self, key: &str) -> Arc<str> {
        match self.entries.get_key_value(key) {
            Some((held, _)) => held.clone(),
            None => Arc::from(key),
        }
    }

    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.is_live(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn reclaim_expired(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                return Some(*at);
            }
            if let Some(Reverse((at, key))) = self.deadlines.pop() {
                if self
                    .entries
                    .get(&key)
                    .is_some_and(|e| e.expires_at == Some(at))
                {
                    self.entries.remove(&key);
                }
            }
        }
        None
    }
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

    pub fn get(&self, key: &str) -> Reply {
        match lock(&self.data).live(key, Instant::now()) {
            Some(entry) => Reply::Shared(entry.value.clone()),
            None => Reply::Null,
        }
    }

    /// `ttl` of `None` stores without expiry, clearing any earlier one.
    pub fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Reply {
        // A TTL too long for the clock to represent is as good as none.
        let expires_at = ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        let value = Arc::from(value);
        let mut data = lock(&self.data);
        let key = data.shared_key(key);
        data.entries
            .insert(key.clone(), Entry { value, expires_at });
        if let Some(at) = expires_at {
            data.add_deadline(at, key);
        }
        drop(data);
        if let Some(at) = expires_at {
            Sweeper::global().wake_by(at);
        }
        Reply::Null
    }

    pub fn delete(&self, key: &str) -> Reply {
        lock(&self.data).entries.remove(key);
        Reply::Null
    }

    pub fn has(&self, key: &str) -> Reply {
        Reply::Bool(lock(&self.data).live(key, Instant::now()).is_some())
    }

    /// Refuses, leaving the value as it was, when it is not an integer or the result would
    /// not fit a JS number exactly.
    pub fn increment(&self, key: &str) -> Reply {
        let mut data = lock(&self.data);
        let now = Instant::now();
        let result = match data.live(key, now) {
            None => {
                data.entries.insert(
                    Arc::from(key),
                    Entry {
                        value: Arc::from("1"),
                        expires_at: None,
                    },
                );
                Ok(1)
            }
            Some(entry) => match parse_integer(&entry.value) {
                None => Err(StoreError::not_integer()),
                Some(n) if n >= MAX_SAFE_INTEGER => Err(StoreError::out_of_safe_range()),
                Some(n) => {
                    entry.value = Arc::from(itoa::Buffer::new().format(n + 1));
                    Ok(n + 1)
                }
            },
        };
        result.map(|n| Reply::Number(n as f64)).into()
    }

    pub fn expire(&self, key: &str, ttl: Duration) -> Reply {
        let mut data = lock(&self.data);
        let now = Instant::now();
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

    pub fn publish(&self, channel: &str, payload: &str) -> Reply {
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

    pub fn subscribe(&self, adapter: u64, outbox: &Arc<Outbox>, channel: &str) -> Reply {
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

    pub fn unsubscribe(&self, adapter: u64, channel: &str) -> Reply {
        let mut channels = lock(&self.channels);
        if let Some(subscribers) = channels.get_mut(channel) {
            subscribers.retain(|s| s.adapter != adapter);
            if subscribers.is_empty() {
                channels.remove(channel);
            }
        }
        Reply::Null
    }

    pub fn unsubscribe_all(&self, adapter: u64) {
        lock(&self.channels).retain(|_, subscribers| {
            subscribers.retain(|s| s.adapter != adapter);
            !subscribers.is_empty()
        });
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
