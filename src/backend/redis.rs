//! Redis standalone: a command router and a subscriber, each over its own link to the
//! server, served by one I/O thread for the whole process.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::time::Instant;

use super::connect::Connector;
use super::connection::{Mode, Sink};
use super::link::Link;
use super::{router, subscriber, Op, Request};
use crate::bridge::Outbox;
use crate::error::{ErrorCode, StoreError};
use crate::options::{RedisOptions, Timeouts};

pub struct RedisBackend {
    commands: UnboundedSender<Request>,
    subscriptions: UnboundedSender<Request>,
    timeouts: Timeouts,
    submitted: Cell<u64>,
}

impl RedisBackend {
    pub fn start(options: &RedisOptions, outbox: Arc<Outbox>) -> Result<Self, StoreError> {
        let connector = Arc::new(Connector::new(options)?);
        let runtime = runtime()?;
        let timeouts = options.timeouts();
        let (commands, command_queue) = unbounded_channel();
        let (subscriptions, subscription_queue) = unbounded_channel();
        let (refused, refused_queue) = unbounded_channel();
        let command_link = Link::new(
            connector.clone(),
            timeouts,
            Mode::Commands,
            Sink {
                outbox: outbox.clone(),
                refused: Some(refused),
            },
        );
        let subscriber_link = Link::new(
            connector,
            timeouts,
            Mode::Subscriber,
            Sink {
                outbox: outbox.clone(),
                refused: None,
            },
        );
        runtime.spawn(router::serve(
            command_link,
            command_queue,
            refused_queue,
            outbox.clone(),
        ));
        runtime.spawn(subscriber::serve(
            subscriber_link,
            subscription_queue,
            outbox,
        ));
        Ok(RedisBackend {
            commands,
            subscriptions,
            timeouts,
            submitted: Cell::new(0),
        })
    }

    pub fn submit(&self, id: u32, op: Op, key: &str, payload: &str) -> Result<(), StoreError> {
        let queue = match op {
            Op::Subscribe | Op::Unsubscribe => &self.subscriptions,
            _ => &self.commands,
        };
        let seq = self.submitted.get() + 1;
        self.submitted.set(seq);
        let request = Request {
            id,
            seq,
            op,
            key: key.to_owned(),
            payload: payload.to_owned(),
            wait_until: Instant::now() + self.timeouts.connect,
            first_written: None,
            refusals: 0,
            refused: None,
        };
        queue.send(request).map_err(|_| StoreError::closed())
    }
}

/// One runtime thread for the process: a current-thread runtime beat a multi-thread one with
/// a single worker on this workload (see ARCHITECTURE.md), and it outlives every worker thread.
fn runtime() -> Result<&'static tokio::runtime::Handle, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    let started = RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("kindling-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .map_err(|e| e.to_string())?;
        Ok(handle)
    });
    started.as_ref().map_err(|reason| {
        StoreError::new(
            ErrorCode::Connection,
            format!("cannot start the I/O thread: {reason}"),
        )
    })
}
