//! One pipelined connection: the write half, an in-flight queue with a deadline per request,
//! and a reader task that matches each reply to the oldest request and hands it on (a call's
//! completion to the outbox, a confirmation to whoever waits for it) and, on a subscriber
//! connection, hands Pub/Sub messages to the outbox. Everything in flight is settled exactly
//! once, however the connection ends.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, Instant};

use super::command::{self, Outcome};
use super::connect::{Endpoint, Stream};
use super::resp::{self, Frame};
use super::Request;
use crate::bridge::{Event, Outbox, Reply};
use crate::error::{from_server_reply, ErrorCode, Refused, StoreError};

// A panic while holding a lock leaves a plain value behind: still consistent.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a connection carries, which decides what its reader does with a frame no request
/// waits for and with a request that times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Calls. A timed-out call fails alone; the connection takes no more writes and is read
    /// until every other call has its reply or its own deadline.
    Commands,
    /// Pub/Sub. Messages go to the outbox; a request that times out ends the connection,
    /// since a subscription confirmed later would be one nobody tracks.
    Subscriber,
    /// One blocking read at a time (XREADGROUP ... BLOCK), from the pool of such connections:
    /// as `Commands`, but its owner learns when the reply is in, to lend the connection again.
    Blocking,
}

/// Where a connection's reader hands what it reads.
#[derive(Clone)]
pub struct Sink {
    pub outbox: Arc<Outbox>,
    /// Calls the server refused for now (LOADING, BUSY, ...): the router retries them.
    pub refused: Option<UnboundedSender<(Request, StoreError)>>,
    /// Shard channels the server unsubscribed of its own accord (their slot moved away).
    pub dropped: Option<UnboundedSender<String>>,
}

/// What a request written to the connection waits for.
// Nearly every entry is a `Call`: boxing it would cost an allocation per call to save space
// on the rare others.
#[allow(clippy::large_enum_variant)]
enum Pending {
    Call {
        request: Request,
        deadline: Instant,
        /// `ASKING` went before it: that reply comes first, and is dropped.
        asking: bool,
    },
    /// A subscriber's command: SUBSCRIBE gets one confirmation per channel, each a push of
    /// the kind `confirmed_by` (`subscribe`, `ssubscribe`, `pong`, ...).
    Confirm {
        confirmed_by: &'static [u8],
        remaining: usize,
        deadline: Instant,
        done: oneshot::Sender<Confirmed>,
    },
    /// Timed out: its replies (two after `ASKING`), when they come, are read and dropped.
    Abandoned(u8),
}

/// A reply to a subscriber's command (`Err`: the server refused it), or no reply at all.
pub type Confirmed = Result<Result<(), StoreError>, StoreError>;

struct InFlight {
    queue: VecDeque<Pending>,
    /// How many entries at the front are `Abandoned` (deadlines pass in write order).
    abandoned: usize,
    /// Set once, by whoever finds the connection dead; that side settles everything queued.
    closed: bool,
    /// A call timed out: no more writes; the reader stays for the replies still owed.
    retired: bool,
    /// No more requests will come.
    writer_gone: bool,
}

impl InFlight {
    fn oldest_deadline(&self) -> Option<Instant> {
        match self.queue.get(self.abandoned)? {
            Pending::Call { deadline, .. } | Pending::Confirm { deadline, .. } => Some(*deadline),
            Pending::Abandoned(_) => None,
        }
    }
}

struct Shared {
    in_flight: Mutex<InFlight>,
    /// Rung when requests arrive on an idle connection, so the reader arms their deadline.
    arrived: Notify,
    /// Rung once when the reader has ended.
    ended: Notify,
    /// Rung when nothing is left in flight, or the connection has closed.
    idle: Notify,
    /// The reader stopped reading because JS has too many messages waiting.
    paused: AtomicBool,
    /// The server has answered something on this connection.
    answered: AtomicBool,
    sink: Sink,
    mode: Mode,
}

impl Shared {
    /// Settles everything in flight with `err`; only the first call does anything.
    fn close(&self, err: StoreError) {
        let settled = {
            let mut in_flight = lock(&self.in_flight);
            if in_flight.closed {
                return;
            }
            in_flight.closed = true;
            in_flight.abandoned = 0;
            std::mem::take(&mut in_flight.queue)
        };
        let mut completions = Vec::new();
        for pending in settled {
            match pending {
                Pending::Call { request, .. } => {
                    completions.extend(request.settled(Reply::Error(err.clone())))
                }
                Pending::Confirm { done, .. } => {
                    let _ = done.send(Err(err.clone()));
                }
                Pending::Abandoned(_) => {}
            }
        }
        self.sink.outbox.push_all(completions);
        self.ended.notify_one();
        self.idle.notify_one();
    }

    /// Fails the requests whose deadline has passed, oldest first.
    fn expire(&self, now: Instant, after: Duration) {
        let mut expired = Vec::new();
        {
            let mut in_flight = lock(&self.in_flight);
            let in_flight = &mut *in_flight;
            while let Some(pending) = in_flight.queue.get_mut(in_flight.abandoned) {
                match pending {
                    Pending::Call { deadline, .. } | Pending::Confirm { deadline, .. }
                        if *deadline <= now => {}
                    _ => break,
                }
                let replies = match pending {
                    Pending::Call { asking: true, .. } => 2,
                    _ => 1,
                };
                expired.push(std::mem::replace(pending, Pending::Abandoned(replies)));
                in_flight.abandoned += 1;
            }
            in_flight.retired = true;
        }
        let err = StoreError::timeout(after.as_millis() as u64);
        self.sink
            .outbox
            .push_all(expired.into_iter().filter_map(|pending| match pending {
                Pending::Call { request, .. } => request.settled(Reply::Error(err.clone())),
                Pending::Confirm { done, .. } => {
                    let _ = done.send(Err(err.clone()));
                    None
                }
                Pending::Abandoned(_) => None,
            }));
    }
}

const NOT_READING: &str = "the Pub/Sub connection is not read until JS has taken half of them \
     (meanwhile the server holds them, within its client-output-buffer-limit for pubsub clients)";

/// A request the connection did not take because it had closed just before.
pub struct Unsent;

pub struct Connection {
    writer: WriteHalf<Box<dyn Stream>>,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
    encoded: Vec<u8>,
    write_failed: bool,
    command_timeout: Duration,
    endpoint: Arc<Endpoint>,
}

impl Connection {
    pub fn open(
        stream: Box<dyn Stream>,
        mode: Mode,
        sink: Sink,
        command_timeout: Duration,
        endpoint: Arc<Endpoint>,
    ) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let shared = Arc::new(Shared {
            in_flight: Mutex::new(InFlight {
                queue: VecDeque::new(),
                abandoned: 0,
                closed: false,
                retired: false,
                writer_gone: false,
            }),
            arrived: Notify::new(),
            ended: Notify::new(),
            idle: Notify::new(),
            paused: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            sink,
            mode,
        });
        let reader = tokio::spawn(read(
            reader,
            shared.clone(),
            command_timeout,
            endpoint.clone(),
        ));
        Connection {
            writer,
            shared,
            reader,
            encoded: Vec::new(),
            write_failed: false,
            command_timeout,
            endpoint,
        }
    }

    /// The server this connection is to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn shared_endpoint(&self) -> Arc<Endpoint> {
        self.endpoint.clone()
    }

    /// Nothing written is waiting for its reply.
    pub fn is_idle(&self) -> bool {
        lock(&self.shared.in_flight).queue.is_empty()
    }

    /// A call written at least `long` ago still waits for its reply: the server may be hung.
    pub fn unanswered_for(&self, long: Duration) -> bool {
        let oldest = lock(&self.shared.in_flight).oldest_deadline();
        oldest.is_some_and(|deadline| deadline < Instant::now() + self.command_timeout - long)
    }

    /// Takes no more writes; what was written still gets its replies (or its deadline).
    pub fn retire(&self) {
        lock(&self.shared.in_flight).retired = true;
    }

    /// Still taking writes.
    pub fn is_usable(&self) -> bool {
        let in_flight = lock(&self.shared.in_flight);
        !self.write_failed && !in_flight.closed && !in_flight.retired
    }

    /// The server has answered something here: the connection served, however it ends.
    pub fn has_answered(&self) -> bool {
        self.shared.answered.load(Ordering::Relaxed)
    }

    /// Not reading for now, because JS has too many messages waiting.
    pub fn is_paused(&self) -> bool {
        self.shared.paused.load(Ordering::Acquire)
    }

    /// Completes when nothing written is still waiting for its reply (or the connection has
    /// closed).
    pub fn idle(&self) -> impl std::future::Future<Output = ()> + 'static {
        let shared = self.shared.clone();
        async move {
            loop {
                {
                    let in_flight = lock(&shared.in_flight);
                    if in_flight.closed || in_flight.queue.is_empty() {
                        return;
                    }
                }
                shared.idle.notified().await;
            }
        }
    }

    /// Ends the connection at once, failing whatever is in flight with `err`.
    pub fn abort(&self, err: StoreError) {
        self.shared.close(err);
        self.reader.abort();
    }

    /// Completes when the connection's reader has ended.
    pub fn ended(&self) -> impl std::future::Future<Output = ()> + 'static {
        let shared = self.shared.clone();
        async move { shared.ended.notified().await }
    }

    /// Has `pending` enqueue entries for what is encoded (given the time of writing and the
    /// deadline it sets), then writes it. The clock of each starts now.
    async fn write(
        &mut self,
        pending: impl FnOnce(Instant, Instant, &mut VecDeque<Pending>),
    ) -> Result<(), Unsent> {
        let now = Instant::now();
        let deadline = now + self.command_timeout;
        {
            let mut in_flight = lock(&self.shared.in_flight);
            if in_flight.closed || in_flight.retired {
                return Err(Unsent);
            }
            let was_idle = in_flight.oldest_deadline().is_none();
            pending(now, deadline, &mut in_flight.queue);
            if was_idle {
                self.shared.arrived.notify_one();
            }
        }
        match timeout(self.command_timeout, self.writer.write_all(&self.encoded)).await {
            Ok(Ok(())) => {}
            // The server may have answered before it closed (a refusal of a value past its
            // limit, say): the reader reports what came back and fails the rest when it ends.
            Ok(Err(_)) => self.write_failed = true,
            // A server that stops reading may be gone without a FIN: replace the connection.
            Err(_) => self
                .shared
                .close(StoreError::timeout(self.command_timeout.as_millis() as u64)),
        }
        let written = self.encoded.len();
        resp::consume(&mut self.encoded, written);
        Ok(())
    }

    /// Writes the calls as one pipeline, taking them out of `requests`; their replies, or
    /// their failures, come through the reader. On `Unsent` they stay where they were.
    pub async fn send_calls(&mut self, requests: &mut Vec<Request>) -> Result<(), Unsent> {
        self.encoded.clear();
        for request in requests.iter() {
            command::encode(&mut self.encoded, request);
        }
        let calls = requests;
        self.write(|now, deadline, queue| {
            queue.extend(calls.drain(..).map(|mut request| {
                request.first_written.get_or_insert(now);
                // A blocking read's deadline is later by its block time: the only request on
                // its connection, so deadlines still pass in write order.
                let deadline = deadline + request.op.blocks_for();
                let asking = request.ask.is_some();
                Pending::Call {
                    request,
                    deadline,
                    asking,
                }
            }))
        })
        .await
    }

    /// Sends one command of the subscriber's and waits for its `confirmations`.
    pub async fn request(&mut self, args: &[&[u8]], confirmations: usize) -> Confirmed {
        self.encoded.clear();
        resp::command(&mut self.encoded, args);
        let (done, confirmed) = oneshot::channel();
        let confirmed_by = confirmation_kind(args.first().copied().unwrap_or_default());
        let queued = self
            .write(|_, deadline, queue| {
                queue.push_back(Pending::Confirm {
                    confirmed_by,
                    remaining: confirmations,
                    deadline,
                    done,
                })
            })
            .await;
        if queued.is_err() {
            return Err(closed());
        }
        confirmed.await.unwrap_or_else(|_| Err(closed()))
    }
}

fn closed() -> StoreError {
    StoreError::new(ErrorCode::Connection, "the connection closed")
}

/// A connection let go: a command connection's reader still delivers the replies owed (or
/// fails them when they time out), then closes the socket; a subscriber's stops at once, so
/// no message comes through a connection the subscriber no longer counts, and so does a
/// blocking read's, whose adapter has closed.
impl Drop for Connection {
    fn drop(&mut self) {
        lock(&self.shared.in_flight).writer_gone = true;
        self.shared.arrived.notify_one();
        match self.shared.mode {
            Mode::Commands => {}
            Mode::Subscriber => self.reader.abort(),
            Mode::Blocking => self.abort(StoreError::closed()),
        }
    }
}

/// The kind of push that confirms a subscriber's `command`.
fn confirmation_kind(command: &[u8]) -> &'static [u8] {
    match command {
        b"SUBSCRIBE" => b"subscribe",
        b"UNSUBSCRIBE" => b"unsubscribe",
        b"SSUBSCRIBE" => b"ssubscribe",
        b"SUNSUBSCRIBE" => b"sunsubscribe",
        _ => b"pong",
    }
}

/// What a frame on a subscriber connection is.
enum Push<'a> {
    /// A message, of a channel (`message`) or a shard channel (`smessage`).
    Message(Event),
    /// A subscription change or PING's answer, of this kind (`subscribe`, `pong`, ...), and
    /// the channel it names.
    Confirmation(&'a [u8], Option<&'a Range<usize>>),
    Other,
}

fn push_kind<'a>(frame: &'a Frame, bytes: &'a [u8]) -> Push<'a> {
    match frame {
        Frame::Array(items) => match items.as_slice() {
            [Frame::Bulk(kind), Frame::Bulk(channel), Frame::Bulk(payload)]
                if matches!(&bytes[kind.clone()], b"message" | b"smessage") =>
            {
                Push::Message(Event::Message {
                    channel: resp::text(bytes, channel),
                    payload: resp::text(bytes, payload),
                })
            }
            [Frame::Bulk(kind), rest @ ..] => {
                let channel = match rest.first() {
                    Some(Frame::Bulk(channel)) => Some(channel),
                    _ => None,
                };
                Push::Confirmation(&bytes[kind.clone()], channel)
            }
            _ => Push::Other,
        },
        // PING's answer on a connection that holds no subscription.
        Frame::Status(_) => Push::Confirmation(b"pong", None),
        _ => Push::Other,
    }
}

/// Reads replies in order and settles the oldest request with each.
async fn read(
    mut reader: ReadHalf<Box<dyn Stream>>,
    shared: Arc<Shared>,
    command_timeout: Duration,
    endpoint: Arc<Endpoint>,
) {
    // However this task ends (a panic or an abort included), nothing it owes is left waiting.
    let _settles = CloseOnExit(shared.clone());
    let outbox = shared.sink.outbox.clone();
    let mut buf: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut refused = Vec::new();
    let mut dropped = Vec::new();
    let mut wanted = 0;
    let timer = sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed_for = None;
    // Under Sentinel, a READONLY reply means the master has moved: the call did not run.
    let follows_failover = endpoint.master.is_some();
    let in_cluster = endpoint.is_cluster_node();
    // A cluster node that does not know its own address redirects to ":port": its host is
    // this node's, as the slot map names it (before natMap).
    let host = endpoint.announced_host().unwrap_or_default().to_owned();
    let failure = loop {
        let oldest = {
            let in_flight = lock(&shared.in_flight);
            let oldest = in_flight.oldest_deadline();
            let done = in_flight.writer_gone || in_flight.retired;
            if in_flight.closed || (oldest.is_none() && done && shared.mode != Mode::Subscriber) {
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
        // Too many messages wait for JS: stop reading, so the server holds them and applies
        // its own limit for slow subscribers, until JS has taken most of them. Not while a
        // subscriber's command waits for its answer, which only reading can bring.
        let paused =
            shared.mode == Mode::Subscriber && oldest.is_none() && outbox.backlog_full(NOT_READING);
        shared.paused.store(paused, Ordering::Release);
        resp::make_room(&mut buf, wanted);
        tokio::select! {
            // Replies already read win over a deadline passed meanwhile.
            biased;
            read = reader.read_buf(&mut buf), if !paused => match read {
                Ok(0) => break endpoint.lost(None),
                Ok(_) => {}
                Err(err) => break endpoint.lost(Some(&err)),
            },
            _ = &mut timer, if oldest.is_some() => {
                if shared.mode == Mode::Subscriber {
                    break StoreError::timeout(command_timeout.as_millis() as u64);
                }
                shared.expire(Instant::now(), command_timeout);
                continue;
            }
            _ = shared.arrived.notified(), if oldest.is_none() => continue,
            _ = outbox.backlog_taken(), if paused => continue,
        }
        let (parsed, idle) = {
            let mut in_flight = lock(&shared.in_flight);
            let parsed = resp::parse_each(&buf, |frame, bytes| {
                take(
                    &mut in_flight,
                    shared.mode,
                    follows_failover,
                    in_cluster,
                    frame,
                    bytes,
                    &mut events,
                    &mut refused,
                    &mut dropped,
                )
            });
            (parsed, in_flight.queue.is_empty())
        };
        if idle && shared.mode == Mode::Blocking {
            shared.idle.notify_one();
        }
        if !events.is_empty() {
            outbox.push_all(events.drain(..));
        }
        if let Some(to) = shared.sink.dropped.as_ref().filter(|_| !dropped.is_empty()) {
            for channel in dropped.drain(..) {
                let _ = to.send(channel);
            }
        }
        dropped.clear();
        if !refused.is_empty() {
            for (_, err) in refused.iter_mut() {
                if let Some(redirect) = err.redirect.as_mut().filter(|r| r.host.is_empty()) {
                    redirect.host.clone_from(&host);
                }
            }
            hand_back(&shared.sink, refused.drain(..));
        }
        let (used, needed) = match parsed {
            Ok(progress) => progress,
            Err(err) => break err,
        };
        if used > 0 && !shared.answered.load(Ordering::Relaxed) {
            shared.answered.store(true, Ordering::Relaxed);
        }
        wanted = needed;
        resp::consume(&mut buf, used);
    };
    if failure.code == ErrorCode::Connection && failure.retryable {
        // The server refused the connection itself: nothing after that refusal ran.
        let unrun: Vec<Request> = {
            let mut in_flight = lock(&shared.in_flight);
            let queue = std::mem::take(&mut in_flight.queue);
            in_flight.abandoned = 0;
            queue
                .into_iter()
                .filter_map(|pending| match pending {
                    Pending::Call { request, .. } => Some(request),
                    _ => None,
                })
                .collect()
        };
        hand_back(
            &shared.sink,
            unrun.into_iter().map(|r| (r, failure.clone())),
        );
    }
    shared.close(failure);
}

/// Settles the oldest request with `frame`, or hands a message on.
#[allow(clippy::too_many_arguments)]
fn take(
    in_flight: &mut InFlight,
    mode: Mode,
    follows_failover: bool,
    in_cluster: bool,
    frame: Frame,
    bytes: &[u8],
    events: &mut Vec<Event>,
    refused: &mut Vec<(Request, StoreError)>,
    dropped: &mut Vec<String>,
) -> Result<(), StoreError> {
    let push = match mode {
        Mode::Subscriber => push_kind(&frame, bytes),
        Mode::Commands | Mode::Blocking => Push::Other,
    };
    if let Push::Message(message) = push {
        events.push(message);
        return Ok(());
    }
    // Every shard channel unsubscribed, asked for or not (its slot moved away): the
    // subscriber tells them apart by the channels it still wants.
    if let Push::Confirmation(b"sunsubscribe", Some(channel)) = &push {
        dropped.push(resp::text(bytes, channel));
    }
    match in_flight.queue.front_mut() {
        None if mode == Mode::Subscriber => Ok(()),
        None => Err(resp::protocol_error("a reply to no command")),
        Some(Pending::Abandoned(replies)) => {
            if *replies > 1 {
                *replies -= 1;
            } else {
                in_flight.queue.pop_front();
                in_flight.abandoned -= 1;
            }
            Ok(())
        }
        // `ASKING`'s reply; the command's comes next.
        Some(Pending::Call { asking, .. }) if *asking => {
            *asking = false;
            Ok(())
        }
        Some(Pending::Call { .. }) => {
            let Some(Pending::Call { request, .. }) = in_flight.queue.pop_front() else {
                return Ok(());
            };
            match command::outcome(&request, frame, bytes) {
                // A cluster's blocking read the server let go without an entry (its node was
                // demoted, its stream's slot moved away): it took nothing, and goes back to
                // wait where the stream is now.
                Outcome::Settled(Reply::Error(err))
                    if in_cluster
                        && mode == Mode::Blocking
                        && err.message.starts_with("UNBLOCKED") =>
                {
                    refused.push((
                        request,
                        StoreError {
                            retryable: true,
                            ..err
                        },
                    ));
                    Ok(())
                }
                Outcome::Settled(reply) => {
                    events.extend(request.settled(reply));
                    Ok(())
                }
                // A demoted master: under Sentinel, the connection takes no more writes and
                // the call goes back to be sent to the new master; otherwise a replica was
                // named, and the call fails with its words.
                Outcome::Refused(err) if err.demoted => {
                    if follows_failover {
                        in_flight.retired = true;
                        let err = StoreError {
                            retryable: true,
                            ..err
                        };
                        refused.push((request, err));
                    } else {
                        events.extend(request.settled(Reply::Error(err)));
                    }
                    Ok(())
                }
                // Refused with the whole connection: the rest go back with it as it ends.
                Outcome::Refused(err) if err.code == ErrorCode::Connection => {
                    refused.push((request, err.clone()));
                    Err(err)
                }
                Outcome::Refused(err) => {
                    refused.push((request, err));
                    Ok(())
                }
                // Out of step with the commands: no later reply can be trusted.
                Outcome::Mismatch => {
                    let err = resp::protocol_error("a reply that does not fit its command");
                    events.extend(request.settled(Reply::Error(err.clone())));
                    Err(err)
                }
            }
        }
        Some(Pending::Confirm {
            confirmed_by,
            remaining,
            ..
        }) => {
            let outcome = match (&frame, push) {
                (Frame::Error(text), _) => {
                    Err(from_server_reply(&resp::text(bytes, text), Refused::Other))
                }
                (_, Push::Confirmation(kind, _)) if kind == *confirmed_by => Ok(()),
                // A push of a kind these connections do not ask for.
                _ => return Ok(()),
            };
            *remaining = remaining.saturating_sub(1);
            if outcome.is_err() || *remaining == 0 {
                if let Some(Pending::Confirm { done, .. }) = in_flight.queue.pop_front() {
                    let _ = done.send(Ok(outcome));
                }
            }
            Ok(())
        }
    }
}

/// Refused calls go back to the router to be retried; with none, they fail as refused.
fn hand_back(sink: &Sink, refused: impl Iterator<Item = (Request, StoreError)>) {
    let mut failed = Vec::new();
    for (request, err) in refused {
        let unsent = match &sink.refused {
            Some(router) => router.send((request, err)).err().map(|e| e.0),
            None => Some((request, err)),
        };
        if let Some((request, err)) = unsent {
            failed.extend(request.settled(Reply::Error(err)));
        }
    }
    sink.outbox.push_all(failed);
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
