//! Redis standalone: one multiplexed connection for commands, sent as one pipeline per batch
//! taken off the queue, and one Pub/Sub connection that restores every subscription after
//! it reconnects. Both reconnect with capped backoff.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink};
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, Pipeline, ProtocolVersion, PushInfo, PushKind,
    RedisError, Value,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use super::{Op, MAX_SAFE_INTEGER};
use crate::bridge::{Event, Outbox, Reply};
use crate::error::{from_server_reply, ErrorCode, StoreError};
use crate::options::{RedisOptions, Timeouts};

/// Commands taken off the queue into one pipeline at most.
const MAX_BATCH: usize = 1024;
const SPIN: Duration = Duration::from_micros(200);
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(1);
/// How often a Pub/Sub connection is checked with a PING: the command timeout, within these.
/// A Pub/Sub connection that lived this long resets the reconnect backoff when it is lost.
const STABLE_SESSION: Duration = Duration::from_secs(5);
const MIN_PING_EVERY: Duration = Duration::from_secs(1);
const MAX_PING_EVERY: Duration = Duration::from_secs(30);

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
        let commands_client = options.client(ProtocolVersion::RESP3)?;
        let fallback_client = options.client(ProtocolVersion::RESP2)?;
        let runtime = runtime()?;
        let (commands, command_queue) = unbounded_channel();
        let (subscriptions, subscription_queue) = unbounded_channel();
        let timeouts = Arc::new(options.timeouts());
        let link = Link::new(commands_client, fallback_client.clone(), timeouts.clone());
        runtime.spawn(serve_commands(link, command_queue, outbox.clone()));
        runtime.spawn(serve_subscriptions(
            fallback_client,
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

pub fn install_crypto_provider() {
    // Refused only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Capped exponential backoff between connection attempts.
struct Backoff {
    failures: u32,
    next_attempt: Instant,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            failures: 0,
            next_attempt: Instant::now(),
        }
    }

    fn failed(&mut self) {
        let delay = FIRST_RETRY
            .saturating_mul(1 << self.failures.min(10))
            .min(MAX_RETRY);
        self.failures += 1;
        self.next_attempt = Instant::now() + delay;
    }

    fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// A command connection and the flag that marks it broken, raised by a failed batch or by
/// the crate's disconnection notice.
#[derive(Clone)]
struct Live {
    connection: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

/// The command connection, made on demand and again after it breaks. It speaks RESP3 where
/// the server can, so that the crate reports a dropped connection at once and the next call
/// reconnects instead of failing on the dead socket; older servers get RESP2.
struct Link {
    client: Client,
    resp2_fallback: Option<Client>,
    timeouts: Arc<Timeouts>,
    live: Option<Live>,
    backoff: Backoff,
    last_error: Option<StoreError>,
}

impl Link {
    fn new(client: Client, resp2_fallback: Client, timeouts: Arc<Timeouts>) -> Self {
        Link {
            client,
            resp2_fallback: Some(resp2_fallback),
            timeouts,
            live: None,
            backoff: Backoff::new(),
            last_error: None,
        }
    }

    async fn connection(&mut self) -> Result<Live, StoreError> {
        match &self.live {
            Some(live) if !live.broken.load(Ordering::Acquire) => return Ok(live.clone()),
            _ => self.live = None,
        }
        let wait = self
            .backoff
            .next_attempt
            .saturating_duration_since(Instant::now());
        if wait > self.timeouts.command {
            if let Some(err) = &self.last_error {
                return Err(err.clone());
            }
        }
        sleep_until(self.backoff.next_attempt).await;
        let mut attempt = self.connect().await;
        if matches!(&attempt, Err(err) if refuses_resp3(err)) {
            if let Some(resp2) = self.resp2_fallback.take() {
                self.client = resp2;
                attempt = self.connect().await;
            }
        }
        match attempt {
            Ok(live) => {
                self.backoff.succeeded();
                self.last_error = None;
                self.live = Some(live.clone());
                Ok(live)
            }
            Err(err) => {
                self.backoff.failed();
                let err = connection_error(err);
                self.last_error = Some(err.clone());
                Err(err)
            }
        }
    }

    async fn connect(&self) -> Result<Live, RedisError> {
        let broken = Arc::new(AtomicBool::new(false));
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeouts.connect))
            .set_response_timeout(None);
        if self.resp2_fallback.is_some() {
            let broken = broken.clone();
            config = config.set_push_sender(move |push: PushInfo| {
                if push.kind == PushKind::Disconnection {
                    broken.store(true, Ordering::Release);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        }
        let connecting = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        let connection = timeout(self.timeouts.connect, connecting)
            .await
            .unwrap_or_else(|_| Err(connect_timeout_error()))?;
        Ok(Live { connection, broken })
    }
}

/// A server without `HELLO` (before Redis 6, or with the command renamed away).
fn refuses_resp3(err: &RedisError) -> bool {
    err.kind() == ErrorKind::RESP3NotSupported
        || err
            .detail()
            .is_some_and(|detail| detail.starts_with("unknown command") && detail.contains("HELLO"))
}

fn connect_timeout_error() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "could not connect within connectTimeout",
    ))
}

/// A failure to connect is a connection error even when the crate calls it a timeout.
fn connection_error(err: RedisError) -> StoreError {
    let err = StoreError::from(err);
    match err.code {
        ErrorCode::Timeout => StoreError::new(ErrorCode::Connection, err.message),
        _ => err,
    }
}

async fn serve_commands(
    mut link: Link,
    mut queue: UnboundedReceiver<Request>,
    outbox: Arc<Outbox>,
) {
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
        let requests = std::mem::take(&mut batch);
        match link.connection().await {
            Ok(live) => {
                tokio::spawn(run_batch(
                    live,
                    requests,
                    outbox.clone(),
                    link.timeouts.command,
                ));
            }
            Err(err) => {
                // Everything that queued meanwhile fails too, so nothing piles up while down.
                let mut failed = requests;
                while let Ok(request) = queue.try_recv() {
                    failed.push(request);
                }
                outbox.push_all(failed.into_iter().map(|r| Event::Completion {
                    id: r.id,
                    reply: Reply::Error(err.clone()),
                }));
            }
        }
    }
}

async fn run_batch(
    Live {
        mut connection,
        broken,
    }: Live,
    requests: Vec<Request>,
    outbox: Arc<Outbox>,
    command_timeout: Duration,
) {
    let mut pipeline = Pipeline::with_capacity(requests.len());
    for request in &requests {
        add_command(&mut pipeline, request);
    }
    let sent = timeout(
        command_timeout,
        connection.send_packed_commands(&pipeline, 0, requests.len()),
    )
    .await;
    let replies = match sent {
        Ok(Ok(values)) if values.len() == requests.len() => Ok(values),
        Ok(Ok(_)) => Err(StoreError::new(
            ErrorCode::Redis,
            "the server's replies did not match the commands sent",
        )),
        Ok(Err(err)) => {
            if err.is_unrecoverable_error() || err.is_connection_dropped() || err.is_io_error() {
                broken.store(true, Ordering::Release);
            }
            Err(StoreError::from(err))
        }
        Err(_) => {
            // A connection that stops answering may be dead without a FIN: replace it, which
            // also frees the requests it still holds.
            broken.store(true, Ordering::Release);
            Err(StoreError::timeout(command_timeout.as_millis() as u64))
        }
    };
    match replies {
        Ok(values) => {
            outbox.push_all(
                requests
                    .iter()
                    .zip(values)
                    .map(|(request, value)| Event::Completion {
                        id: request.id,
                        reply: reply_for(&request.op, value),
                    }),
            )
        }
        Err(err) => outbox.push_all(requests.iter().map(|request| Event::Completion {
            id: request.id,
            reply: Reply::Error(err.clone()),
        })),
    }
}

fn add_command(pipeline: &mut Pipeline, request: &Request) {
    let key = request.key.as_str();
    match request.op {
        Op::Get => pipeline.cmd("GET").arg(key),
        Op::Set { ttl: None } => pipeline.cmd("SET").arg(key).arg(&request.payload),
        Op::Set { ttl: Some(ttl) } => pipeline
            .cmd("SET")
            .arg(key)
            .arg(&request.payload)
            .arg("PX")
            .arg(ttl.as_millis() as u64),
        Op::Delete => pipeline.cmd("DEL").arg(key),
        Op::Has => pipeline.cmd("EXISTS").arg(key),
        Op::Increment => pipeline.cmd("INCR").arg(key),
        Op::Expire { ttl } => pipeline.cmd("PEXPIRE").arg(key).arg(ttl.as_millis() as u64),
        // Subscriptions travel on their own connection; `submit` never routes them here.
        Op::Publish | Op::Subscribe | Op::Unsubscribe => {
            pipeline.cmd("PUBLISH").arg(key).arg(&request.payload)
        }
    };
}

fn reply_for(op: &Op, value: Value) -> Reply {
    let unexpected = |value: &Value| {
        Reply::Error(StoreError::new(
            ErrorCode::Redis,
            format!("unexpected reply {value:?}"),
        ))
    };
    match (op, value) {
        (op, Value::ServerError(err)) => {
            Reply::Error(from_server_reply(&err, matches!(op, Op::Increment)))
        }
        (Op::Get, Value::Nil) => Reply::Null,
        (Op::Get, Value::BulkString(bytes)) => Reply::Text(text(bytes)),
        (Op::Get, Value::SimpleString(s)) => Reply::Text(s),
        (Op::Has, Value::Int(n)) => Reply::Bool(n > 0),
        (Op::Increment, Value::Int(n)) if n > MAX_SAFE_INTEGER => {
            Reply::Error(StoreError::out_of_safe_range())
        }
        (Op::Increment, Value::Int(n)) => Reply::Number(n as f64),
        (Op::Get | Op::Has | Op::Increment, value) => unexpected(&value),
        _ => Reply::Null,
    }
}

/// Other clients may write bytes that are not UTF-8; they arrive with replacement characters.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A live Pub/Sub connection: the sink subscribes, a task forwards the messages.
struct Session {
    sink: PubSubSink,
    forwarder: JoinHandle<()>,
    id: u64,
    opened: Instant,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Dropping the stream inside the forwarder closes the connection.
        self.forwarder.abort();
    }
}

/// The Pub/Sub side of one adapter: the channels it wants, and the connection that has them.
struct Subscriber {
    client: Client,
    timeouts: Arc<Timeouts>,
    outbox: Arc<Outbox>,
    channels: HashSet<String>,
    session: Option<Session>,
    backoff: Backoff,
    /// Told by a session's forwarder when its connection closed.
    lost: UnboundedSender<u64>,
}

async fn serve_subscriptions(
    client: Client,
    timeouts: Arc<Timeouts>,
    mut queue: UnboundedReceiver<Request>,
    outbox: Arc<Outbox>,
) {
    let (lost, mut lost_sessions) = unbounded_channel::<u64>();
    // A connection that went silent without closing shows up as an unanswered PING.
    let mut health = tokio::time::interval(timeouts.command.clamp(MIN_PING_EVERY, MAX_PING_EVERY));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut subscriber = Subscriber {
        client,
        timeouts,
        outbox,
        channels: HashSet::new(),
        session: None,
        backoff: Backoff::new(),
        lost,
    };
    loop {
        let connected = subscriber.session.is_some();
        let want_reconnect = !connected && !subscriber.channels.is_empty();
        tokio::select! {
            request = queue.recv() => {
                let Some(request) = request else { break };
                let reply = match request.op {
                    Op::Subscribe => subscriber.subscribe(request.key).await,
                    _ => subscriber.unsubscribe(&request.key).await,
                };
                subscriber.outbox.complete(request.id, reply.into());
            }
            Some(id) = lost_sessions.recv() => {
                if subscriber.session.as_ref().is_some_and(|live| live.id == id) {
                    subscriber.lose();
                }
            }
            _ = health.tick(), if connected => subscriber.check_health().await,
            _ = sleep_until(subscriber.backoff.next_attempt), if want_reconnect => {
                // The loss was reported once; failed attempts only lengthen the backoff.
                let _ = subscriber.connect().await;
            }
        }
    }
}

impl Subscriber {
    async fn subscribe(&mut self, channel: String) -> Result<Reply, StoreError> {
        if self.session.is_none() {
            self.connect().await?;
        }
        let Some(live) = self.session.as_mut() else {
            return Err(StoreError::new(ErrorCode::Connection, "not connected"));
        };
        match timeout(self.timeouts.command, live.sink.subscribe(&channel)).await {
            Ok(Ok(())) => {
                self.channels.insert(channel);
                Ok(Reply::Null)
            }
            // Refused by the server (an ACL, say): the other channels stay as they are.
            Ok(Err(err)) if matches!(err.kind(), ErrorKind::Server(_)) => {
                Err(StoreError::from(err))
            }
            Ok(Err(err)) => {
                self.lose();
                Err(StoreError::from(err))
            }
            Err(_) => {
                // The SUBSCRIBE may still be confirmed later on this connection, leaving a
                // server subscription nobody tracks: drop the connection, and it with it.
                self.session = None;
                Err(StoreError::timeout(self.timeouts.command.as_millis() as u64))
            }
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> Result<Reply, StoreError> {
        self.channels.remove(channel);
        if let Some(live) = self.session.as_mut() {
            // Confirmed before the call resolves, so the server shows it gone by then.
            let confirmed = timeout(self.timeouts.command, live.sink.unsubscribe(channel)).await;
            // Nothing left to listen to, or no answer: close the connection, which drops any
            // subscription the server still has on it.
            if self.channels.is_empty() || !matches!(confirmed, Ok(Ok(()))) {
                self.session = None;
            }
        }
        Ok(Reply::Null)
    }

    async fn check_health(&mut self) {
        let Some(live) = self.session.as_mut() else {
            return;
        };
        let answered = timeout(self.timeouts.command, live.sink.ping::<Value>()).await;
        if !matches!(answered, Ok(Ok(_))) {
            self.lose();
        }
    }

    /// The connection is gone: report it once, then reconnect with backoff. The backoff starts
    /// over only after a connection that lasted, so a server that keeps dropping new
    /// connections is retried (and reported) at most once a second.
    fn lose(&mut self) {
        if let Some(lost) = self.session.take() {
            if lost.opened.elapsed() >= STABLE_SESSION {
                self.backoff.succeeded();
            }
        }
        self.backoff.failed();
        self.outbox.push_all([Event::Failure(StoreError::new(
            ErrorCode::Connection,
            "the Pub/Sub connection was lost; reconnecting and subscribing again",
        ))]);
    }

    /// Opens the Pub/Sub connection and subscribes to every channel wanted so far.
    async fn connect(&mut self) -> Result<(), StoreError> {
        let opened = timeout(self.timeouts.connect, self.client.get_async_pubsub()).await;
        let pubsub = match opened.unwrap_or_else(|_| Err(connect_timeout_error())) {
            Ok(pubsub) => pubsub,
            Err(err) => {
                self.backoff.failed();
                return Err(connection_error(err));
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        if !self.channels.is_empty() {
            let all: Vec<&String> = self.channels.iter().collect();
            let confirmed = timeout(self.timeouts.command, sink.subscribe(all)).await;
            let failure = match confirmed {
                Ok(Ok(())) => None,
                Ok(Err(err)) => Some(connection_error(err)),
                Err(_) => Some(StoreError::timeout(self.timeouts.command.as_millis() as u64)),
            };
            if let Some(err) = failure {
                self.backoff.failed();
                return Err(err);
            }
        }
        static SESSIONS: AtomicU64 = AtomicU64::new(0);
        let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let outbox = self.outbox.clone();
        let lost = self.lost.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                outbox.push_all([Event::Message {
                    channel: message.get_channel_name().to_string(),
                    payload: text(message.get_payload_bytes().to_vec()),
                }]);
            }
            let _ = lost.send(id);
        });
        self.session = Some(Session {
            sink,
            forwarder,
            id,
            opened: Instant::now(),
        });
        Ok(())
    }
}
