//! napi exports only; the logic lives in `bridge` and `backend`.
//!
//! The hot path is shaped by what napi-rs calls cost (measured on the dev machine): a free
//! function ~40 ns against ~300 ns for a class method, ~35 ns per numeric argument, ~200 ns per
//! `String` argument. So adapters are numbered handles in a per-thread table, `submit` takes
//! only its two strings, and its numbers travel in a Float64Array shared once per thread.

#![deny(clippy::unwrap_used)]

mod backend;
mod bridge;
mod error;
mod options;

use std::cell::RefCell;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::{
    Array, Float64Array, FromNapiValue, Function, Object, ToNapiValue, Unknown,
};
use napi::{sys, Env, JsValue};
use napi_derive::napi;

use backend::memory::{self, MemoryStore};
use backend::redis::RedisBackend;
use backend::Op;
use bridge::{Outbox, Reply};
use error::{ErrorCode, StoreError};
use options::{NodeAddress, RedisOptions};

/// Runs as each environment (main thread or worker) loads the addon. The image is pinned for
/// the life of the process: the I/O and sweeper threads outlive the worker that started them,
/// and unloading the image under them would leave them running unmapped code.
#[napi(module_exports)]
pub fn pin_image(_exports: Object) {
    napi::bindgen_prelude::retain_current_module_for_unload_safety();
}

enum Backend {
    Redis(RedisBackend),
    Memory { store: Arc<MemoryStore>, id: u64 },
}

/// One adapter's native half. Its JS half (index.js) validates, serializes and keeps the
/// promises; this one runs the operations and reports back through the outbox.
struct Adapter {
    backend: Backend,
    outbox: Arc<Outbox>,
    /// Put before every key, and every channel, here, so JS never builds the joined string.
    /// They differ for an adapter made from an ioredis instance, whose prefix is for keys only.
    key_prefix: String,
    channel_prefix: String,
    /// `key_prefix` with glob characters escaped: put before a scan's pattern.
    pattern_prefix: String,
}

impl Adapter {
    fn new(
        backend: Backend,
        outbox: Arc<Outbox>,
        key_prefix: String,
        channel_prefix: String,
    ) -> Self {
        let mut pattern_prefix = String::with_capacity(key_prefix.len());
        for c in key_prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern_prefix.push('\\');
            }
            pattern_prefix.push(c);
        }
        Adapter {
            backend,
            outbox,
            key_prefix,
            channel_prefix,
            pattern_prefix,
        }
    }
}

thread_local! {
    /// This thread's adapters by handle; a closed one leaves its slot empty for reuse.
    static ADAPTERS: RefCell<Vec<Option<Adapter>>> = const { RefCell::new(Vec::new()) };
    /// `[handle, id, op, first, second]` of the next `submit`, written by JS; the last two are
    /// numbers whose meaning depends on the operation (see `Op::decode`).
    static CALL: RefCell<Option<Float64Array>> = const { RefCell::new(None) };
    /// Reused for reading a call's key (after the adapter's prefix) and payload out of JS.
    static KEY: RefCell<Vec<u8>> = RefCell::new(vec![0; USUAL_TEXT]);
    static PAYLOAD: RefCell<Vec<u8>> = RefCell::new(vec![0; USUAL_TEXT]);
}

fn register(adapter: Adapter) -> u32 {
    ADAPTERS.with_borrow_mut(|adapters| {
        let slot = adapters
            .iter()
            .position(Option::is_none)
            .unwrap_or_else(|| {
                adapters.push(None);
                adapters.len() - 1
            });
        adapters[slot] = Some(adapter);
        slot as u32
    })
}

fn with_adapter<R>(handle: u32, f: impl FnOnce(&Adapter) -> R) -> Option<R> {
    ADAPTERS.with_borrow(|adapters| adapters.get(handle as usize)?.as_ref().map(f))
}

fn outbox(wake: Function<(), Unknown<'static>>, backlog_limit: f64) -> napi::Result<Arc<Outbox>> {
    let wake = wake
        .build_threadsafe_function()
        .weak::<true>()
        .callee_handled::<false>()
        .build()?;
    Ok(Arc::new(Outbox::new(wake, backlog_limit as usize)))
}

/// The adapter's handle, or the error that kept it from starting, as `[code, message, ...]`
/// (the shape of a failed call's reply), which JS throws with its own code.
#[napi]
pub fn create_redis(
    options: RedisOptions,
    key_prefix: String,
    channel_prefix: String,
    backlog_limit: f64,
    wake: Function<(), Unknown<'static>>,
    nat_map: Option<Function<String, Option<NodeAddress>>>,
) -> napi::Result<napi::Either<u32, Reply>> {
    let outbox = outbox(wake, backlog_limit)?;
    // Weak, as the wake: it keeps no process alive.
    let nat_function = match nat_map {
        Some(function) => Some(bridge::nat_function(function)?),
        None => None,
    };
    let backend = match RedisBackend::start(&options, nat_function, outbox.clone()) {
        Ok(backend) => backend,
        Err(err) => {
            outbox.release_wake();
            return Ok(napi::Either::B(Reply::Error(err)));
        }
    };
    Ok(napi::Either::A(register(Adapter::new(
        Backend::Redis(backend),
        outbox,
        key_prefix,
        channel_prefix,
    ))))
}

/// `name`: a store shared by every adapter of that name in the process; none: a private one.
#[napi]
pub fn create_memory(
    name: Option<String>,
    key_prefix: String,
    backlog_limit: f64,
    wake: Function<(), Unknown<'static>>,
) -> napi::Result<u32> {
    static MEMORY_ADAPTERS: AtomicU64 = AtomicU64::new(1);
    let store = match name {
        Some(name) => MemoryStore::named(&name),
        None => MemoryStore::private(),
    };
    Ok(register(Adapter::new(
        Backend::Memory {
            store,
            id: MEMORY_ADAPTERS.fetch_add(1, Ordering::Relaxed),
        },
        outbox(wake, backlog_limit)?,
        key_prefix.clone(),
        key_prefix,
    )))
}

/// Where `submit` finds its numbers: the first array registered on this thread, which every
/// later caller gets back too, so two copies of index.js (a cleared require cache, a test
/// runner's module registry) write to the one array Rust reads.
#[napi]
pub fn register_call_buffer<'env>(
    env: &'env Env,
    candidate: Float64Array,
) -> napi::Result<Unknown<'env>> {
    CALL.with_borrow_mut(|slot| {
        let shared = slot.get_or_insert(candidate);
        // SAFETY: `env` is this call's environment, and `shared` holds a reference to a JS
        // array created on this thread, which gives its value back without consuming it.
        unsafe {
            let value = <&mut Float64Array as ToNapiValue>::to_napi_value(env.raw(), shared)?;
            Unknown::from_napi_value(env.raw(), value)
        }
    })
}

/// Copies a JS string's UTF-8 into `buffer` (NUL-terminated, cut short if it does not fit)
/// and returns the bytes written before the NUL; with an empty buffer, the full length.
fn copy_utf8(env: sys::napi_env, value: sys::napi_value, buffer: &mut [u8]) -> napi::Result<usize> {
    let mut written = 0;
    let target = if buffer.is_empty() {
        ptr::null_mut()
    } else {
        buffer.as_mut_ptr().cast()
    };
    // SAFETY: `target` is null or valid for `buffer.len()` bytes, of which napi writes at most
    // that many; `env` and `value` come from the napi call in progress.
    let status =
        unsafe { sys::napi_get_value_string_utf8(env, value, target, buffer.len(), &mut written) };
    if status == sys::Status::napi_ok {
        Ok(written)
    } else {
        Err(napi::Error::from_reason("expected a string"))
    }
}

/// Strings up to this long are read in one copy; a buffer grown past it shrinks back after.
const USUAL_TEXT: usize = 16 * 1024;

/// Reads a JS string's UTF-8 into `buffer` after its first `start` bytes, which stay, and
/// returns the text from the start of the buffer. One copy when it fits.
fn read_utf8(
    env: sys::napi_env,
    value: sys::napi_value,
    buffer: &mut Vec<u8>,
    start: usize,
) -> napi::Result<&str> {
    if buffer.len() < start + USUAL_TEXT {
        buffer.resize(start + USUAL_TEXT, 0);
    }
    let mut written = copy_utf8(env, value, &mut buffer[start..])?;
    // V8 never writes part of a character, so a cut string can end up to 4 bytes short.
    if start + written + 4 >= buffer.len() {
        // Possibly cut short: ask for the length, grow, and copy again.
        buffer.resize(start + copy_utf8(env, value, &mut [])? + 1, 0);
        written = copy_utf8(env, value, &mut buffer[start..])?;
    }
    // V8 writes valid UTF-8 (JS checks names are well formed); checked all the same.
    std::str::from_utf8(&buffer[..start + written])
        .map_err(|_| napi::Error::from_reason("invalid UTF-8"))
}

/// One huge value must not pin its size in memory for the thread's lifetime.
fn shrink(buffer: &mut Vec<u8>) {
    if buffer.len() > 2 * USUAL_TEXT {
        buffer.truncate(USUAL_TEXT);
        buffer.shrink_to_fit();
    }
}

/// Runs one operation described by the call buffer `[handle, id, op, first, second]` on the
/// key (or channel) `name`, which gets the adapter's prefix here. Returns its reply when it
/// completed at once (memory, or an error), or `undefined` when the reply will come through
/// `drain` under `id` (Redis).
#[napi]
pub fn submit(env: Env, name: Unknown, payload: Option<Unknown>) -> napi::Result<Reply> {
    submit_with(env, name, payload, None)
}

/// `submit` for operations that take more strings than a key and a payload (see `Op`): the
/// keys among `args` get the adapter's prefix too.
#[napi]
pub fn submit_args(
    env: Env,
    name: Unknown,
    payload: Option<Unknown>,
    args: Array,
) -> napi::Result<Reply> {
    submit_with(env, name, payload, Some(args))
}

fn submit_with(
    env: Env,
    name: Unknown,
    payload: Option<Unknown>,
    args: Option<Array>,
) -> napi::Result<Reply> {
    let [handle, id, op, first, second] = CALL.with_borrow(|call| match call.as_deref() {
        Some([handle, id, op, first, second, ..]) => Ok([*handle, *id, *op, *first, *second]),
        _ => Err(napi::Error::from_reason(
            "the call buffer is not registered",
        )),
    })?;
    let Some(mut op) = Op::decode(op as u32, first, second) else {
        return Ok(Reply::Error(StoreError::new(
            ErrorCode::InvalidArgument,
            "unknown operation",
        )));
    };
    let reply = KEY.with_borrow_mut(|key_buffer| {
        PAYLOAD.with_borrow_mut(|payload_buffer| {
            let reply = with_adapter(handle as u32, |adapter| {
                let prefix = match op {
                    Op::Publish | Op::Subscribe | Op::Unsubscribe => &adapter.channel_prefix,
                    Op::Scan { ref mut strip, .. } => {
                        *strip = adapter.key_prefix.len();
                        &adapter.pattern_prefix
                    }
                    _ => &adapter.key_prefix,
                };
                let prefix = prefix.as_bytes();
                if key_buffer.len() < prefix.len() {
                    key_buffer.resize(prefix.len(), 0);
                }
                key_buffer[..prefix.len()].copy_from_slice(prefix);
                let key = read_utf8(env.raw(), name.raw(), key_buffer, prefix.len())?;
                let payload = match &payload {
                    Some(payload) => read_utf8(env.raw(), payload.raw(), payload_buffer, 0)?,
                    None => "",
                };
                let args = match &args {
                    Some(args) => read_args(env, args, op, &adapter.key_prefix)?,
                    None => Vec::new(),
                };
                Ok::<_, napi::Error>(run(adapter, id as u32, op, key, payload, args))
            });
            shrink(key_buffer);
            shrink(payload_buffer);
            reply
        })
    });
    Ok(reply
        .transpose()?
        .unwrap_or_else(|| Reply::Error(StoreError::closed())))
}

/// The strings of `args`, with `key_prefix` before those that are keys.
fn read_args(env: Env, args: &Array, op: Op, key_prefix: &str) -> napi::Result<Vec<String>> {
    let is_key = |i: u32| match op {
        Op::GetMany => true,
        Op::SetMany => i.is_multiple_of(3),
        _ => false,
    };
    let mut buffer = Vec::new();
    (0..args.len())
        .map(|i| {
            let arg = args
                .get::<Unknown>(i)?
                .ok_or_else(|| napi::Error::from_reason("expected a string"))?;
            let prefix = if is_key(i) { key_prefix } else { "" };
            if buffer.len() < prefix.len() {
                buffer.resize(prefix.len(), 0);
            }
            buffer[..prefix.len()].copy_from_slice(prefix.as_bytes());
            let text = read_utf8(env.raw(), arg.raw(), &mut buffer, prefix.len())?;
            Ok(text.to_owned())
        })
        .collect()
}

fn run(adapter: &Adapter, id: u32, op: Op, key: &str, payload: &str, args: Vec<String>) -> Reply {
    match &adapter.backend {
        Backend::Memory {
            store,
            id: adapter_id,
        } => {
            let caller = memory::Caller {
                adapter: *adapter_id,
                outbox: &adapter.outbox,
                call: id,
            };
            store.run(caller, op, key, payload, &args)
        }
        Backend::Redis(redis) => redis
            .submit(id, op, key, payload, args)
            .map_or_else(Reply::Error, |()| Reply::Pending),
    }
}

/// Completions, and messages unless `messages` is false, queued since the last drain; see
/// `Outbox::drain`.
#[napi]
pub fn drain<'env>(
    env: &'env Env,
    handle: u32,
    limit: u32,
    messages: bool,
) -> napi::Result<Array<'env>> {
    with_adapter(handle, |adapter| adapter.outbox.clone()).map_or_else(
        || env.create_array(0),
        |outbox| outbox.drain(env, limit, messages),
    )
}

/// Entries the memory store holds, expired or not (0 for Redis).
#[napi]
pub fn memory_entry_count(handle: u32) -> u32 {
    with_adapter(handle, |adapter| match &adapter.backend {
        Backend::Memory { store, .. } => store.entry_count(),
        Backend::Redis(_) => 0,
    })
    .unwrap_or(0)
}

/// Ends the adapter's blocking reads at once (JS has rejected them), as it starts closing:
/// the server sees their connections close, and nothing more is read for them.
#[napi]
pub fn end_blocking_reads(handle: u32) {
    with_adapter(handle, |adapter| match &adapter.backend {
        Backend::Memory { store, id } => store.end_blocking_reads(*id),
        Backend::Redis(redis) => redis.end_blocking_reads(),
    });
}

/// Stops the adapter: its connections close once the commands in flight are answered, and
/// the JS dispatcher is let go.
#[napi]
pub fn close(handle: u32) {
    let adapter = ADAPTERS
        .with_borrow_mut(|adapters| adapters.get_mut(handle as usize).and_then(Option::take));
    if let Some(adapter) = adapter {
        if let Backend::Memory { store, id } = &adapter.backend {
            store.end_blocking_reads(*id);
            store.unsubscribe_all(*id);
        }
        adapter.outbox.release_wake();
    }
}
