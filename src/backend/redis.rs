//! Redis standalone: one command connection, written to as one pipeline per batch taken off
//! the queue and read by a task that completes each request with its reply; the Pub/Sub
//! connection is `pubsub`'s. Both reconnect with capped backoff.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;
use tokio::time::{sleep_until, timeout, Instant};

use super::pubsub::serve_subscriptions;
use super::wire::{self, Connector, Frame, Stream};
use super::{Op, MAX_SAFE_INTEGER};
use crate::bridge::{Event, Outbox, Reply};
use crate::error::{from_server_reply, ErrorCode, StoreError};
use crate::options::{RedisOptions, Timeouts};

/// Commands taken off the queue into one pipeline at most.
const MAX_BATCH: usize = 1024;
const SPIN: Duration = Duration::from_micros(200);
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_millis(500);

pub struct Request {
    pub id: u32,
    pub op: Op,
    pub key: String,
    pub payload: String,
}

pub struct RedisBackend {
    commands: UnboundedSender<Request>,
    subscriptions: UnboundedSender<Request>,
}

impl RedisBackend {
    pub fn start(options: &RedisOptions, outbox: Arc<Outbox>) -> Result<Self, StoreError> {
        let connector = Arc::new(Connector::new(options)?);
        let runtime = runtime()?;
        let (commands, command_queue) = unbounded_channel();
        let (subscriptions, subscription_queue) = unbounded_channel();
        let timeouts = Arc::new(options.timeouts());
        let link = Link {
            connector: connector.clone(),
            timeouts: timeouts.clone(),
            outbox: outbox.clone(),
            live: None,
            backoff: Backoff::new(),
        };
        runtime.spawn(serve_commands(link, command_queue));
        runtime.spawn(serve_subscriptions(
            connector,
            timeouts,
            subscription_queue,
            outbox,
        ));
        Ok(RedisBackend {
            commands,
            subscriptions,
        })
    }

    pub fn submit(&self, request: Request) -> Result<(), StoreError> {
        let queue = match request.op {
            Op::Subscribe | Op::Unsubscribe => &self.subscriptions,
            _ => &self.commands,
        };
        queue.send(request).map_err(|_| StoreError::closed())
    }
}

// A panic while holding the lock leaves a plain queue behind: still consistent.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One runtime thread for the process: a current-thread runtime beat a multi-thread one with
/// a single worker on this workload (DESIGN.md), and it outlives every worker thread.
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

/// Capped exponential backoff between connection attempts, and why the last one failed.
pub(super) struct Backoff {
    failures: u32,
    pub(super) next_attempt: Instant,
    last_error: Option<StoreError>,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Backoff {
            failures: 0,
            next_attempt: Instant::now(),
            last_error: None,
        }
    }

    pub(super) fn failed(&mut self, err: &StoreError) {
        let delay = FIRST_RETRY
            .saturating_mul(1 << self.failures.min(10))
            .min(MAX_RETRY);
        self.failures += 1;
        self.next_attempt = Instant::now() + delay;
        self.last_error = Some(err.clone());
    }

    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
        self.last_error = None;
    }

    /// Waits for the next attempt, or fails at once with the last failure when the attempt
    /// is further off than a call may wait: calls fail fast while the server is down.
    pub(super) async fn ready_within(&self, limit: Duration) -> Result<(), StoreError> {
        let wait = self.next_attempt.saturating_duration_since(Instant::now());
        if let Some(err) = self.last_error.as_ref().filter(|_| wait > limit) {
            return Err(err.clone());
        }
        sleep_until(self.next_attempt).await;
        Ok(())
    }
}

/// A request written to the connection and not yet answered, oldest first.
struct Awaiting {
    id: u32,
    op: Op,
    deadline: Instant,
}

/// What the writer (`serve_commands`) and the connection's reply reader share.
struct InFlight {
    queue: VecDeque<Awaiting>,
    /// Set once, by whoever finds the connection dead; that side fails everything queued.
    closed: bool,
    /// No more requests will come: the reader stops once the last one is answered.
    writer_gone: bool,
}

struct Shared {
    in_flight: Mutex<InFlight>,
    /// Rung when requests arrive on an idle connection, so the reader starts their clock.
    arrived: Notify,
    outbox: Arc<Outbox>,
}

impl Shared {
    fn close(&self, err: StoreError) {
        let failed = {
            let mut in_flight = lock(&self.in_flight);
            if in_flight.closed {
                return;
            }
            in_flight.closed = true;
            std::mem::take(&mut in_flight.queue)
        };
        self.outbox
            .push_all(failed.into_iter().map(|awaiting| Event::Completion {
                id: awaiting.id,
                reply: Reply::Error(err.clone()),
            }));
    }
}

/// A request the connection did not take because it had closed just before.
struct Unsent;

/// One live command connection: its write half, and a task that reads the replies.
struct Connection {
    writer: WriteHalf<Box<dyn Stream>>,
    shared: Arc<Shared>,
    encoded: Vec<u8>,
    write_failed: bool,
    command_timeout: Duration,
}

impl Connection {
    fn open(stream: Box<dyn Stream>, outbox: Arc<Outbox>, command_timeout: Duration) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            in_flight: Mutex::new(InFlight {
                queue: VecDeque::new(),
                closed: false,
                writer_gone: false,
            }),
            arrived: Notify::new(),
            outbox,
        });
        tokio::spawn(read_replies(reader, shared.clone(), command_timeout));
        Connection {
            writer,
            shared,
            encoded: Vec::new(),
            write_failed: false,
            command_timeout,
        }
    }

    /// Closed, or no longer taking writes: the next batch goes to a new connection.
    fn is_closed(&self) -> bool {
        self.write_failed || lock(&self.shared.in_flight).closed
    }

    /// Writes the batch as one pipeline. The replies, or their failures, come through the
    /// reader.
    async fn send(&mut self, requests: &[Request]) -> Result<(), Unsent> {
        let command_timeout = self.command_timeout;
        self.encoded.clear();
        for request in requests {
            wire::encode(
                &mut self.encoded,
                &request.op,
                &request.key,
                &request.payload,
            );
        }
        let deadline = Instant::now() + command_timeout;
        {
            let mut in_flight = lock(&self.shared.in_flight);
            if in_flight.closed {
                return Err(Unsent);
            }
            let was_idle = in_flight.queue.is_empty();
            in_flight
                .queue
                .extend(requests.iter().map(|request| Awaiting {
                    id: request.id,
                    op: request.op,
                    deadline,
                }));
            if was_idle {
                self.shared.arrived.notify_one();
            }
        }
        match timeout(command_timeout, self.writer.write_all(&self.encoded)).await {
            Ok(Ok(())) => {}
            // The server may have answered before it closed (a refusal of a value past its
            // limit, say): the reader reports what came back and fails the rest when it ends.
            Ok(Err(_)) => self.write_failed = true,
            // A server that stops reading may be gone without a FIN: replace the connection.
            Err(_) => self
                .shared
                .close(StoreError::timeout(command_timeout.as_millis() as u64)),
        }
        let written = self.encoded.len();
        wire::consume(&mut self.encoded, written);
        Ok(())
    }
}

/// A replaced or released connection: the reader still delivers the replies owed (or fails
/// them when the connection ends or they time out), then closes the socket.
impl Drop for Connection {
    fn drop(&mut self) {
        lock(&self.shared.in_flight).writer_gone = true;
        self.shared.arrived.notify_one();
    }
}

/// Reads replies in order and completes the oldest request with each; fails them all when
/// the connection closes, breaks or lets the oldest one wait past the command timeout.
async fn read_replies(
    mut reader: ReadHalf<Box<dyn Stream>>,
    shared: Arc<Shared>,
    command_timeout: Duration,
) {
    // However this task ends (a panic included), nothing it owes is left waiting.
    let _settles = CloseOnExit(shared.clone());
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut wanted = 0;
    let timer = sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed_for = None;
    let failure = loop {
        let oldest = {
            let in_flight = lock(&shared.in_flight);
            let oldest = in_flight.queue.front().map(|a| a.deadline);
            if oldest.is_none() && in_flight.writer_gone {
                return;
            }
            oldest
        };
        if let Some(deadline) = oldest {
            if armed_for != Some(deadline) {
                timer.as_mut().reset(deadline);
                armed_for = Some(deadline);
            }
        }
        wire::make_room(&mut buf, wanted);
        tokio::select! {
            // Replies already read win over a deadline passed meanwhile.
            biased;
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => break StoreError::new(ErrorCode::Connection, "the server closed the connection"),
                Ok(_) => {}
                Err(err) => break StoreError::new(ErrorCode::Connection, format!("connection lost: {err}")),
            },
            _ = &mut timer, if oldest.is_some() => {
                break StoreError::timeout(command_timeout.as_millis() as u64)
            }
            _ = shared.arrived.notified(), if oldest.is_none() => continue,
        }
        let parsed = {
            let mut in_flight = lock(&shared.in_flight);
            wire::parse_each(&buf, |frame, bytes| {
                let awaiting = in_flight
                    .queue
                    .pop_front()
                    .ok_or_else(|| wire::protocol_error("a reply to no command"))?;
                let (reply, fits) = match reply_for(&awaiting.op, frame, bytes) {
                    Some(reply) => (reply, Ok(())),
                    // Out of step with the commands: no later reply can be trusted.
                    None => {
                        let err = wire::protocol_error("a reply that does not fit its command");
                        (Reply::Error(err.clone()), Err(err))
                    }
                };
                events.push(Event::Completion {
                    id: awaiting.id,
                    reply,
                });
                fits
            })
        };
        if !events.is_empty() {
            shared.outbox.push_all(events.drain(..));
        }
        let (used, needed) = match parsed {
            Ok(progress) => progress,
            Err(err) => break err,
        };
        wanted = needed;
        wire::consume(&mut buf, used);
    };
    shared.close(failure);
}

struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close(StoreError::new(
            ErrorCode::Connection,
            "the connection's reader stopped",
        ));
    }
}

/// The command connection, made on demand and again after it breaks.
struct Link {
    connector: Arc<Connector>,
    timeouts: Arc<Timeouts>,
    outbox: Arc<Outbox>,
    live: Option<Connection>,
    backoff: Backoff,
}

impl Link {
    async fn connection(&mut self) -> Result<&mut Connection, StoreError> {
        if self.live.as_ref().is_none_or(|live| live.is_closed()) {
            self.live = None;
            self.reconnect().await?;
        }
        self.live
            .as_mut()
            .ok_or_else(|| StoreError::new(ErrorCode::Connection, "not connected"))
    }

    async fn reconnect(&mut self) -> Result<(), StoreError> {
        self.backoff.ready_within(self.timeouts.command).await?;
        match wire::connect_within(&self.connector, self.timeouts.connect).await {
            Ok(stream) => {
                self.backoff.succeeded();
                self.live = Some(Connection::open(
                    stream,
                    self.outbox.clone(),
                    self.timeouts.command,
                ));
                Ok(())
            }
            Err(err) => {
                self.backoff.failed(&err);
                Err(err)
            }
        }
    }
}

async fn serve_commands(mut link: Link, mut queue: UnboundedReceiver<Request>) {
    // Connect at once, so the first commands find the connection ready or being made.
    let _ = link.connection().await;
    let mut batch = Vec::new();
    let mut pipelining = false;
    loop {
        // Under pipelined load, poll a little before parking: JS answers a batch with the
        // next within microseconds, and waking a parked thread costs a syscall and a context
        // switch each time. One call at a time does not pay for the spinning.
        if pipelining {
            let spin_until = std::time::Instant::now() + SPIN;
            while queue.is_empty() && std::time::Instant::now() < spin_until {
                tokio::task::yield_now().await;
            }
        }
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            break;
        }
        pipelining = batch.len() > 1;
        // A connection that closed just before this batch was written gets one more try.
        let mut retried = false;
        let failure = loop {
            match link.connection().await {
                Ok(connection) => match connection.send(&batch).await {
                    Ok(()) => break None,
                    Err(Unsent) if !retried => retried = true,
                    Err(Unsent) => {
                        break Some(StoreError::new(
                            ErrorCode::Connection,
                            "the connection closed as soon as it opened",
                        ))
                    }
                },
                Err(err) => {
                    // Everything that queued meanwhile fails too, so nothing piles up while down.
                    while let Ok(request) = queue.try_recv() {
                        batch.push(request);
                    }
                    break Some(err);
                }
            }
        };
        let requests = std::mem::take(&mut batch);
        if let Some(err) = failure {
            link.outbox
                .push_all(requests.into_iter().map(|request| Event::Completion {
                    id: request.id,
                    reply: Reply::Error(err.clone()),
                }));
        }
    }
}

/// The reply a command gets, or `None` when the frame is not one that command can get.
fn reply_for(op: &Op, frame: Frame, bytes: &[u8]) -> Option<Reply> {
    Some(match (op, frame) {
        (op, Frame::Error(message)) => Reply::Error(from_server_reply(
            &wire::text(bytes, &message),
            matches!(op, Op::Increment),
        )),
        (Op::Get, Frame::Nil) => Reply::Null,
        (Op::Get, Frame::Bulk(value)) => Reply::Text(wire::text(bytes, &value)),
        (Op::Has, Frame::Integer(n)) => Reply::Bool(n > 0),
        (Op::Increment, Frame::Integer(n))
            if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&n) =>
        {
            Reply::Error(StoreError::out_of_safe_range())
        }
        (Op::Increment, Frame::Integer(n)) => Reply::Number(n as f64),
        (Op::Set { .. }, Frame::Status(_)) => Reply::Null,
        (Op::Delete | Op::Expire { .. } | Op::Publish, Frame::Integer(_)) => Reply::Null,
        _ => return None,
    })
}
