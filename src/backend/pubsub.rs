//! The Pub/Sub side of one Redis adapter: the channels it wants, and one connection of our
//! own that has them. A reader task hands every message of a read to the outbox at once and
//! completes the confirmations that SUBSCRIBE, UNSUBSCRIBE and PING wait for, in order. After
//! the connection is lost it reconnects with backoff and subscribes to every channel again.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use super::redis::{lock, Backoff, Request};
use super::wire::{self, Connector, Frame, Stream};
use super::Op;
use crate::bridge::{Event, Outbox, Reply};
use crate::error::{from_server_reply, ErrorCode, StoreError};
use crate::options::Timeouts;

/// A Pub/Sub connection that lived this long resets the reconnect backoff when it is lost.
const STABLE_SESSION: Duration = Duration::from_secs(5);
/// How often a Pub/Sub connection is checked with a PING: the command timeout, within these.
const MIN_PING_EVERY: Duration = Duration::from_secs(1);
const MAX_PING_EVERY: Duration = Duration::from_secs(30);

/// A command sent on the connection and the confirmations it still waits for.
struct Awaited {
    confirmations: usize,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The commands waiting for confirmations, oldest first; `closed` once the reader has ended,
/// after which nothing is queued, so no request waits on a connection nobody reads.
#[derive(Default)]
struct Confirmations {
    awaited: VecDeque<Awaited>,
    closed: bool,
}

type AwaitedQueue = Arc<Mutex<Confirmations>>;

fn closed_error() -> StoreError {
    StoreError::new(ErrorCode::Connection, "the Pub/Sub connection closed")
}

/// A live Pub/Sub connection: its write half, and the task that reads it.
struct Session {
    writer: WriteHalf<Box<dyn Stream>>,
    awaited: AwaitedQueue,
    reader: JoinHandle<()>,
    id: u64,
    opened: Instant,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The read half goes with the task, and the socket with it.
        self.reader.abort();
    }
}

impl Session {
    /// Sends one command and waits for its `confirmations` (a refusal ends the wait early).
    async fn request(
        &mut self,
        args: &[&[u8]],
        confirmations: usize,
        limit: Duration,
    ) -> Result<(), StoreError> {
        let mut command = Vec::new();
        wire::command(&mut command, args);
        let (done, confirmed) = oneshot::channel();
        {
            let mut waiting = lock(&self.awaited);
            if waiting.closed {
                return Err(closed_error());
            }
            waiting.awaited.push_back(Awaited {
                confirmations,
                done,
            });
        }
        let exchange = async {
            self.writer.write_all(&command).await.map_err(|err| {
                StoreError::new(ErrorCode::Connection, format!("connection lost: {err}"))
            })?;
            confirmed.await.unwrap_or_else(|_| Err(closed_error()))
        };
        timeout(limit, exchange)
            .await
            .unwrap_or_else(|_| Err(StoreError::timeout(limit.as_millis() as u64)))
    }
}

/// Ends a session's reading however it ends (a panic included): what still waits fails, and
/// the subscriber hears the connection is gone.
struct EndOfSession {
    awaited: AwaitedQueue,
    lost: UnboundedSender<u64>,
    id: u64,
}

impl Drop for EndOfSession {
    fn drop(&mut self) {
        let mut waiting = lock(&self.awaited);
        waiting.closed = true;
        // Dropping the senders tells every waiting request the connection closed.
        waiting.awaited.clear();
        drop(waiting);
        let _ = self.lost.send(self.id);
    }
}

/// Reads pushes until the connection ends.
async fn read_pushes(
    mut reader: ReadHalf<Box<dyn Stream>>,
    awaited: AwaitedQueue,
    outbox: Arc<Outbox>,
    lost: UnboundedSender<u64>,
    id: u64,
) {
    let _end = EndOfSession {
        awaited: awaited.clone(),
        lost,
        id,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut wanted = 0;
    let mut messages = Vec::new();
    loop {
        wire::make_room(&mut buf, wanted);
        match reader.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let parsed = wire::parse_each(&buf, |frame, bytes| {
            take_push(frame, bytes, &awaited, &mut messages);
            Ok(())
        });
        if !messages.is_empty() {
            outbox.push_all(messages.drain(..));
        }
        let Ok((used, needed)) = parsed else { break };
        wanted = needed;
        wire::consume(&mut buf, used);
    }
}

/// A message goes to the outbox; a confirmation or refusal to the oldest command waiting.
fn take_push(frame: Frame, bytes: &[u8], awaited: &AwaitedQueue, messages: &mut Vec<Event>) {
    let outcome = match &frame {
        Frame::Array(items) => match items.as_slice() {
            [Frame::Bulk(kind), Frame::Bulk(channel), Frame::Bulk(payload)]
                if &bytes[kind.clone()] == b"message" =>
            {
                messages.push(Event::Message {
                    channel: wire::text(bytes, channel),
                    payload: wire::text(bytes, payload),
                });
                return;
            }
            [Frame::Bulk(kind), ..]
                if matches!(
                    &bytes[kind.clone()],
                    b"subscribe" | b"unsubscribe" | b"pong"
                ) =>
            {
                Ok(())
            }
            _ => return,
        },
        // PING's answer on a connection that holds no subscription.
        Frame::Status(_) => Ok(()),
        Frame::Error(message) => Err(from_server_reply(&wire::text(bytes, message), false)),
        _ => return,
    };
    let mut waiting = lock(awaited);
    let Some(oldest) = waiting.awaited.front_mut() else {
        return;
    };
    oldest.confirmations = oldest.confirmations.saturating_sub(1);
    if outcome.is_err() || oldest.confirmations == 0 {
        if let Some(finished) = waiting.awaited.pop_front() {
            let _ = finished.done.send(outcome);
        }
    }
}

/// The Pub/Sub side of one adapter: the channels it wants, and the connection that has them.
struct Subscriber {
    connector: Arc<Connector>,
    timeouts: Arc<Timeouts>,
    outbox: Arc<Outbox>,
    channels: HashSet<String>,
    session: Option<Session>,
    backoff: Backoff,
    /// Told by a session's reader when its connection closed.
    lost: UnboundedSender<u64>,
}

pub async fn serve_subscriptions(
    connector: Arc<Connector>,
    timeouts: Arc<Timeouts>,
    mut queue: UnboundedReceiver<Request>,
    outbox: Arc<Outbox>,
) {
    let (lost, mut lost_sessions) = unbounded_channel::<u64>();
    // A connection that went silent without closing shows up as an unanswered PING.
    let mut health = tokio::time::interval(timeouts.command.clamp(MIN_PING_EVERY, MAX_PING_EVERY));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut subscriber = Subscriber {
        connector,
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
                // Could not connect: the subscribes queued meanwhile fail with it rather than
                // each waiting out its own attempt in turn.
                let unreachable = subscriber.session.is_none();
                if let (Err(err), true) = (&reply, unreachable) {
                    while let Ok(queued) = queue.try_recv() {
                        let reply = match queued.op {
                            Op::Subscribe => Err(err.clone()),
                            _ => subscriber.unsubscribe(&queued.key).await,
                        };
                        subscriber.outbox.complete(queued.id, reply.into());
                    }
                }
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

/// A refusal by the server (an ACL, say), as opposed to a connection that failed.
fn refused_by_server(err: &StoreError) -> bool {
    !matches!(err.code, ErrorCode::Connection | ErrorCode::Timeout)
}

impl Subscriber {
    async fn subscribe(&mut self, channel: String) -> Result<Reply, StoreError> {
        if self.session.is_none() {
            self.backoff.ready_within(self.timeouts.command).await?;
            self.connect().await?;
        }
        let Some(live) = self.session.as_mut() else {
            return Err(StoreError::new(ErrorCode::Connection, "not connected"));
        };
        let limit = self.timeouts.command;
        match live
            .request(&[b"SUBSCRIBE", channel.as_bytes()], 1, limit)
            .await
        {
            Ok(()) => {
                self.channels.insert(channel);
                Ok(Reply::Null)
            }
            // The other channels stay as they are.
            Err(err) if refused_by_server(&err) => Err(err),
            // A timed-out SUBSCRIBE may still be confirmed later on this connection, leaving a
            // server subscription nobody tracks: the connection goes, and it with it.
            Err(err) => {
                self.lose();
                Err(err)
            }
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> Result<Reply, StoreError> {
        self.channels.remove(channel);
        if let Some(live) = self.session.as_mut() {
            // Confirmed before the call resolves, so the server shows it gone by then.
            let confirmed = live
                .request(
                    &[b"UNSUBSCRIBE", channel.as_bytes()],
                    1,
                    self.timeouts.command,
                )
                .await;
            // Nothing left to listen to: close the connection. No answer: close it too, which
            // drops any subscription the server still has on it, and get the others back.
            if self.channels.is_empty() {
                self.session = None;
            } else if confirmed.is_err() {
                self.lose();
            }
        }
        Ok(Reply::Null)
    }

    async fn check_health(&mut self) {
        let Some(live) = self.session.as_mut() else {
            return;
        };
        if live
            .request(&[b"PING"], 1, self.timeouts.command)
            .await
            .is_err()
        {
            self.lose();
        }
    }

    /// The connection is gone: report it once, then reconnect with backoff. The backoff starts
    /// over only after a connection that lasted, so a server that keeps dropping new
    /// connections is retried (and reported) at most twice a second.
    fn lose(&mut self) {
        if let Some(lost) = self.session.take() {
            if lost.opened.elapsed() >= STABLE_SESSION {
                self.backoff.succeeded();
            }
        }
        let lost = StoreError::new(
            ErrorCode::Connection,
            "the Pub/Sub connection was lost; reconnecting and subscribing again",
        );
        self.backoff.failed(&lost);
        self.outbox.push_all([Event::Failure(lost)]);
    }

    /// Opens the Pub/Sub connection and subscribes to every channel wanted so far.
    async fn connect(&mut self) -> Result<(), StoreError> {
        let stream = match wire::connect_within(&self.connector, self.timeouts.connect).await {
            Ok(stream) => stream,
            Err(err) => {
                self.backoff.failed(&err);
                return Err(err);
            }
        };
        static SESSIONS: AtomicU64 = AtomicU64::new(0);
        let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let (reader, writer) = tokio::io::split(stream);
        let awaited = AwaitedQueue::default();
        let reader = tokio::spawn(read_pushes(
            reader,
            awaited.clone(),
            self.outbox.clone(),
            self.lost.clone(),
            id,
        ));
        let mut session = Session {
            writer,
            awaited,
            reader,
            id,
            opened: Instant::now(),
        };
        if let Err(err) = self.subscribe_all(&mut session).await {
            self.backoff.failed(&err);
            return Err(err);
        }
        self.session = Some(session);
        Ok(())
    }

    /// Subscribes a new session to every channel wanted, in one command. When the server
    /// refuses it (an ACL changed since), channel by channel: a refused one is dropped and
    /// reported, and the others are kept.
    async fn subscribe_all(&mut self, session: &mut Session) -> Result<(), StoreError> {
        if self.channels.is_empty() {
            return Ok(());
        }
        let limit = self.timeouts.command;
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(self.channels.iter().map(|c| c.as_bytes()));
        match session.request(&args, self.channels.len(), limit).await {
            Err(err) if refused_by_server(&err) => {}
            outcome => return outcome,
        }
        let mut refused = Vec::new();
        for channel in &self.channels {
            match session
                .request(&[b"SUBSCRIBE", channel.as_bytes()], 1, limit)
                .await
            {
                Ok(()) => {}
                Err(err) if refused_by_server(&err) => refused.push((channel.clone(), err)),
                Err(err) => return Err(err),
            }
        }
        for (channel, err) in refused {
            self.channels.remove(&channel);
            self.outbox.push_all([Event::Failure(StoreError::new(
                err.code,
                format!("no longer subscribed to {channel:?}: {}", err.message),
            ))]);
        }
        Ok(())
    }
}
