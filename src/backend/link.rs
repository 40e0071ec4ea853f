//! A link to one server: its connection, made on demand and made again after it breaks, with
//! capped backoff between attempts. An attempt runs as its own task, so whoever owns the
//! link keeps serving (and failing calls at their deadlines) while it connects.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::connect::{Connected, Connector, Endpoint};
use super::connection::{Connection, Mode, Sink};
use super::sentinel::{Switch, Switches};
use crate::error::{ErrorCode, StoreError};
use crate::options::Timeouts;

const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_millis(500);

/// The delay before the `failures + 1`th attempt: 50 ms doubling to 500 ms.
pub fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.min(10))
        .min(MAX_RETRY)
}

pub struct Link {
    connector: Arc<Connector>,
    /// Under Sentinel, the master announced last.
    announced: Switches,
    pub timeouts: Timeouts,
    mode: Mode,
    sink: Sink,
    live: Option<Connection>,
    attempt: Option<JoinHandle<Result<Connected, StoreError>>>,
    /// When the attempt under way gives up, if it has not connected by then.
    attempt_ends: Instant,
    failures: u32,
    next_attempt: Instant,
    last_error: Option<StoreError>,
}

impl Link {
    pub fn new(connector: Arc<Connector>, timeouts: Timeouts, mode: Mode, sink: Sink) -> Self {
        Link {
            announced: connector.switches(),
            connector,
            timeouts,
            mode,
            sink,
            live: None,
            attempt: None,
            attempt_ends: Instant::now(),
            failures: 0,
            next_attempt: Instant::now(),
            last_error: None,
        }
    }

    /// The connection, whether or not it still takes writes.
    pub fn connection(&mut self) -> Option<&mut Connection> {
        self.live.as_mut()
    }

    /// The connection, if it takes writes.
    pub fn usable(&mut self) -> Option<&mut Connection> {
        self.live.as_mut().filter(|live| live.is_usable())
    }

    /// Lets the connection go (see `Connection`'s drop for what happens to its reader). One
    /// that never got an answer counts as a failed attempt, so a server that accepts and
    /// drops every connection is retried with backoff; one that served starts the backoff over.
    pub fn discard(&mut self) {
        if let Some(live) = self.live.take() {
            if live.has_answered() {
                self.healthy();
            } else {
                self.failed(&StoreError::new(
                    ErrorCode::Connection,
                    "the connection closed before the server answered anything",
                ));
            }
        }
    }

    /// Lets the connection go after the server refused what it needs (a subscriber's restore).
    pub fn discard_failed(&mut self, err: &StoreError) {
        self.live = None;
        self.failed(err);
    }

    pub fn connecting(&self) -> bool {
        self.attempt.is_some()
    }

    /// When the attempt under way will have connected or failed, if one is.
    pub fn attempt_ends(&self) -> Option<Instant> {
        self.attempt.as_ref().map(|_| self.attempt_ends)
    }

    /// Starts an attempt, at the time the backoff allows, unless one is under way.
    pub fn start_attempt(&mut self) {
        if self.attempt.is_some() {
            return;
        }
        let connector = self.connector.clone();
        let (at, limit) = (self.next_attempt.max(Instant::now()), self.timeouts.connect);
        self.attempt_ends = at + limit;
        self.attempt = Some(tokio::spawn(async move {
            sleep_until(at).await;
            connector.connect_within(limit).await
        }));
    }

    /// Waits for the attempt under way (cancel-safe: it goes on if this is dropped) and keeps
    /// its connection.
    pub async fn attempt_done(&mut self) -> Result<(), StoreError> {
        std::future::poll_fn(|cx| self.poll_attempt(cx)).await
    }

    /// `attempt_done` as a poll, for an owner of many links.
    pub fn poll_attempt(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        let Some(attempt) = self.attempt.as_mut() else {
            return Poll::Ready(Err(self.not_connected()));
        };
        let outcome = ready!(Pin::new(attempt).poll(cx)).unwrap_or_else(|e| {
            Err(StoreError::new(
                ErrorCode::Connection,
                format!("the connection attempt stopped: {e}"),
            ))
        });
        self.attempt = None;
        Poll::Ready(self.attempt_outcome(outcome))
    }

    fn attempt_outcome(
        &mut self,
        outcome: Result<Connected, StoreError>,
    ) -> Result<(), StoreError> {
        match outcome {
            // Discovery named another server than the master announced since (a switch
            // during the attempt): it is not kept, and the next attempt asks again.
            Ok((_, endpoint)) if self.announced_elsewhere(&endpoint) => {
                let err = StoreError {
                    retryable: true,
                    ..StoreError::new(
                        ErrorCode::Connection,
                        format!(
                            "{}: no longer the master the sentinels announce",
                            endpoint.describe()
                        ),
                    )
                };
                self.failed(&err);
                Err(err)
            }
            Ok((stream, endpoint)) => {
                let command = self.timeouts.command;
                self.live = Some(Connection::open(
                    stream,
                    self.mode,
                    self.sink.clone(),
                    command,
                    endpoint,
                ));
                Ok(())
            }
            Err(err) => {
                self.failed(&err);
                Err(err)
            }
        }
    }

    /// Under Sentinel, the masters announced as they move.
    pub fn switches(&self) -> Switches {
        self.connector.switches()
    }

    fn announced_elsewhere(&self, endpoint: &Endpoint) -> bool {
        let Some(announced) = &self.announced else {
            return false;
        };
        let announced = announced.borrow();
        announced
            .as_ref()
            .is_some_and(|switch| endpoint.is_not(&switch.master))
    }

    /// A master is announced: a connection to another server takes no more writes (what it
    /// has in flight still gets its replies, unless the sentinels found that server down, when
    /// none will come: then it fails now); when the master has moved, an attempt under way,
    /// which may be going to the old one, starts over at once. Whether a connection or
    /// attempt was let go.
    pub fn follow(&mut self, switch: &Switch) -> bool {
        let stale = self
            .live
            .as_ref()
            .is_some_and(|live| live.endpoint().is_not(&switch.master));
        if stale {
            if let Some(live) = self.live.take() {
                if switch.previous_down {
                    live.abort(StoreError::new(
                        ErrorCode::Connection,
                        format!(
                            "{}: the sentinels found this master down and failed it over to {}; \
                             the command may have run",
                            live.endpoint().describe(),
                            switch.master
                        ),
                    ));
                } else {
                    live.retire();
                }
            }
        }
        let restarted = switch.moved && self.attempt.is_some();
        if switch.moved {
            if let Some(attempt) = self.attempt.take() {
                attempt.abort();
            }
            self.healthy();
            self.next_attempt = Instant::now();
        }
        stale || restarted
    }

    /// The server is serving: the next failure is retried quickly again.
    fn healthy(&mut self) {
        self.failures = 0;
        self.last_error = None;
    }

    /// An attempt, or what followed it, failed: the next waits longer.
    pub fn failed(&mut self, err: &StoreError) {
        self.next_attempt = Instant::now() + backoff(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(err.clone());
    }

    /// Why a call that waited its `connectTimeout` got no connection.
    pub fn not_connected(&self) -> StoreError {
        let waited = self.timeouts.connect.as_millis();
        let (reason, why) = match (&self.last_error, self.connector.progress()) {
            (Some(last), _) => ("the last attempt failed", last.clone()),
            // The call gave up before the first attempt ended (it started late).
            (None, Some(so_far)) => ("the attempt under way", so_far),
            (None, None) => {
                return StoreError::new(
                    ErrorCode::Connection,
                    format!("no connection within connectTimeout ({waited} ms)"),
                )
            }
        };
        StoreError {
            message: format!(
                "no connection within connectTimeout ({waited} ms); {reason}: {}",
                why.message
            ),
            ..why
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(attempt) = self.attempt.take() {
            attempt.abort();
        }
    }
}
