//! napi exports only; the logic lives in `bridge` and `backend`.

#![deny(clippy::unwrap_used)]

mod backend;
mod bridge;
mod error;
mod options;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{Array, Function, Unknown};
use napi::Env;
use napi_derive::napi;

use backend::memory::MemoryStore;
use backend::redis::{RedisBackend, Request};
use backend::Op;
use bridge::{Outbox, Reply};
use error::{ErrorCode, StoreError};
use options::RedisOptions;

/// Runs as each environment (main thread or worker) loads the addon. The image is pinned for
/// the life of the process: the I/O and sweeper threads outlive the worker that started them,
/// and unloading the image under them would leave them running unmapped code.
#[napi(module_exports)]
pub fn pin_image(_exports: napi::bindgen_prelude::Object) {
    napi::bindgen_prelude::retain_current_module_for_unload_safety();
}

enum Backend {
    Redis(RedisBackend),
    Memory { store: Arc<MemoryStore>, id: u64 },
}

/// One adapter's native half. Its JS half (index.js) validates, serializes and keeps the
/// promises; this one runs the operations and reports back through the outbox.
#[napi]
pub struct NativeAdapter {
    backend: Mutex<Option<Backend>>,
    outbox: Arc<Outbox>,
}

fn outbox(wake: Function<(), Unknown<'static>>) -> napi::Result<Arc<Outbox>> {
    let wake = wake
        .build_threadsafe_function()
        .weak::<true>()
        .callee_handled::<false>()
        .build()?;
    Ok(Arc::new(Outbox::new(wake)))
}

#[napi]
impl NativeAdapter {
    #[napi(factory)]
    pub fn redis(
        options: RedisOptions,
        wake: Function<(), Unknown<'static>>,
    ) -> napi::Result<NativeAdapter> {
        let outbox = outbox(wake)?;
        let backend = RedisBackend::start(&options, outbox.clone())
            .map_err(|e| napi::Error::from_reason(format!("{}: {}", e.code.as_str(), e.message)))?;
        Ok(NativeAdapter {
            backend: Mutex::new(Some(Backend::Redis(backend))),
            outbox,
        })
    }

    /// `name`: a store shared by every adapter of that name in the process; none: a private one.
    #[napi(factory)]
    pub fn memory(
        name: Option<String>,
        wake: Function<(), Unknown<'static>>,
    ) -> napi::Result<NativeAdapter> {
        static ADAPTERS: AtomicU64 = AtomicU64::new(1);
        let store = match name {
            Some(name) => MemoryStore::named(&name),
            None => MemoryStore::private(),
        };
        Ok(NativeAdapter {
            backend: Mutex::new(Some(Backend::Memory {
                store,
                id: ADAPTERS.fetch_add(1, Ordering::Relaxed),
            })),
            outbox: outbox(wake)?,
        })
    }

    /// Runs one operation. Returns its reply when it completed at once (memory, or an
    /// error), or `undefined` when the reply will come through `drain` under `id` (Redis).
    #[napi]
    pub fn submit(
        &self,
        id: u32,
        op: u32,
        key: String,
        payload: Option<String>,
        ttl_ms: Option<f64>,
    ) -> Reply {
        let Some(op) = Op::decode(op, ttl_ms) else {
            return Reply::Error(StoreError::new(
                ErrorCode::InvalidArgument,
                "unknown operation",
            ));
        };
        let payload = payload.unwrap_or_default();
        let backend = self.backend.lock().unwrap_or_else(|e| e.into_inner());
        match backend.as_ref() {
            None => Reply::Error(StoreError::closed()),
            Some(Backend::Memory { store, id: adapter }) => match op {
                Op::Get => store.get(&key),
                Op::Set { ttl } => store.set(key, payload, ttl),
                Op::Delete => store.delete(&key),
                Op::Has => store.has(&key),
                Op::Increment => store.increment(&key),
                Op::Expire { ttl } => store.expire(&key, ttl),
                Op::Publish => store.publish(&key, &payload),
                Op::Subscribe => store.subscribe(*adapter, &self.outbox, &key),
                Op::Unsubscribe => store.unsubscribe(*adapter, &key),
            },
            Some(Backend::Redis(redis)) => redis
                .submit(Request {
                    id,
                    op,
                    key,
                    payload,
                })
                .map_or_else(Reply::Error, |()| Reply::Pending),
        }
    }

    /// Completions and messages queued since the last drain; see `Outbox::drain`.
    #[napi]
    pub fn drain<'env>(&self, env: &'env Env, limit: u32) -> napi::Result<Array<'env>> {
        self.outbox.drain(env, limit)
    }

    /// Entries the memory store holds, expired or not (0 for Redis).
    #[napi]
    pub fn memory_entry_count(&self) -> u32 {
        match self
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(Backend::Memory { store, .. }) => store.entry_count(),
            _ => 0,
        }
    }

    /// Stops the backend (its connections close once the commands in flight are answered)
    /// and lets go of the JS dispatcher.
    #[napi]
    pub fn close(&self) {
        self.stop();
        self.outbox.release_wake();
    }
}

impl NativeAdapter {
    fn stop(&self) {
        let backend = self
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Backend::Memory { store, id }) = backend {
            store.unsubscribe_all(id);
        }
    }
}

impl Drop for NativeAdapter {
    fn drop(&mut self) {
        // On environment teardown the threadsafe function is napi's to finalize, not ours.
        self.stop();
    }
}
