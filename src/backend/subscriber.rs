//! The Pub/Sub side of one adapter. The set of channels it wants is the source of truth: each
//! subscriber connection is built from it, and made again (with backoff) whenever it is lost
//! or the server refuses it for now. A channel is given up only when the server refuses it
//! for good (NOPERM); JS is then told to forget it too.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{timeout_at, Instant};

use super::connection::Confirmed;
use super::link::{backoff, Link};
use super::sentinel::{next_switch, Switches};
use super::{Op, Request};
use crate::bridge::{Event, Outbox, Reply};
use crate::error::{ErrorCode, StoreError};

/// How often a subscriber connection is checked with a PING: the command timeout, within these.
const MIN_PING_EVERY: Duration = Duration::from_secs(1);
const MAX_PING_EVERY: Duration = Duration::from_secs(30);
/// How long to wait for more subscribes after one arrives: JS makes a loop's worth within
/// microseconds of each other.
const GATHER: Duration = Duration::from_micros(200);

struct Subscriber {
    link: Link,
    /// Under Sentinel, the masters announced.
    switches: Switches,
    outbox: Arc<Outbox>,
    channels: HashSet<String>,
    /// The loss was reported; failed attempts to come back say nothing more.
    in_outage: bool,
    /// A command failed because the master moved and the connection was let go: the caller
    /// starts over on the new master, reporting no loss.
    moved: bool,
}

pub async fn serve(link: Link, mut queue: UnboundedReceiver<Request>, outbox: Arc<Outbox>) {
    // A connection that went silent without closing shows up as an unanswered PING.
    let every = link.timeouts.command.clamp(MIN_PING_EVERY, MAX_PING_EVERY);
    let mut health = tokio::time::interval(every);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut subscriber = Subscriber {
        switches: link.switches(),
        link,
        outbox,
        channels: HashSet::new(),
        in_outage: false,
        moved: false,
    };
    // A request taken off the queue while gathering subscribes, handled next.
    let mut held_back: Option<Request> = None;
    loop {
        if subscriber
            .link
            .connection()
            .is_some_and(|live| !live.is_usable())
        {
            subscriber.lost("the connection closed");
        } else if subscriber.channels.is_empty() && subscriber.link.connection().is_some() {
            // Nothing left to listen to (a refused subscribe, a channel given up).
            subscriber.link.discard();
        }
        let ended = subscriber.link.connection().map(|live| live.ended());
        let live = ended.is_some();
        if !live && !subscriber.channels.is_empty() {
            subscriber.link.start_attempt();
        }
        let ended = async move {
            match ended {
                Some(ended) => ended.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            request = next_request(&mut queue, &mut held_back) => {
                let Some(request) = request else { break };
                if request.op == Op::Subscribe {
                    // Subscribes submitted together go in one command, so none waits out
                    // another's refusals in turn.
                    let mut batch = vec![request];
                    let mut gather_until = std::time::Instant::now() + GATHER;
                    while std::time::Instant::now() < gather_until {
                        match queue.try_recv() {
                            Ok(next) if next.op == Op::Subscribe => {
                                batch.push(next);
                                gather_until = std::time::Instant::now() + GATHER;
                            }
                            Ok(next) => {
                                held_back = Some(next);
                                break;
                            }
                            Err(_) => tokio::task::yield_now().await,
                        }
                    }
                    subscriber.subscribe(batch).await;
                } else {
                    let reply = subscriber.unsubscribe(&request.key).await;
                    subscriber.outbox.complete(request.id, reply.into());
                }
            }
            _ = ended, if live => {}
            // Under Sentinel: the channels move to the new master, as after any loss but
            // without reporting one.
            switch = next_switch(&mut subscriber.switches) => {
                subscriber.link.follow(&switch);
            }
            outcome = subscriber.link.attempt_done(), if subscriber.link.connecting() => {
                match outcome {
                    // Everything was unsubscribed while it connected.
                    Ok(()) if subscriber.channels.is_empty() => subscriber.link.discard(),
                    Ok(()) => {
                        let _ = subscriber.restore().await;
                    }
                    Err(_) => {}
                }
            }
            _ = health.tick(), if live => subscriber.check_health().await,
        }
    }
}

impl Subscriber {
    /// Subscribes the channels of `requests` together and completes each request. When the
    /// server refuses them for good, channel by channel, so only the refused ones fail.
    async fn subscribe(&mut self, requests: Vec<Request>) {
        let (known, requests): (Vec<_>, Vec<_>) = requests
            .into_iter()
            .partition(|request| self.channels.contains(&request.key));
        for request in known {
            self.outbox.complete(request.id, Reply::Null);
        }
        let outcome = match requests.as_slice() {
            [] => return,
            all => self.subscribe_channels(all).await,
        };
        match outcome {
            Err(refusal) if refused_for_good(&refusal) && requests.len() > 1 => {
                for request in requests {
                    let outcome = self
                        .subscribe_channels(std::slice::from_ref(&request))
                        .await;
                    self.settle_subscribe(request, outcome);
                }
            }
            outcome => {
                for request in requests {
                    self.settle_subscribe(request, outcome.clone());
                }
            }
        }
    }

    fn settle_subscribe(&mut self, request: Request, outcome: Result<(), StoreError>) {
        let reply = match outcome {
            Ok(()) => {
                self.channels.insert(request.key);
                Reply::Null
            }
            Err(err) => Reply::Error(err),
        };
        self.outbox.complete(request.id, reply);
    }

    /// One SUBSCRIBE for every channel of `requests`, on a connection made if needed, retried
    /// within their deadline while the server refuses it for now.
    async fn subscribe_channels(&mut self, requests: &[Request]) -> Result<(), StoreError> {
        let wait_until = requests.iter().map(|r| r.wait_until).min();
        let wait_until = wait_until.unwrap_or_else(Instant::now);
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(requests.iter().map(|r| r.key.as_bytes()));
        let mut first_written = None;
        let mut refusals = 0;
        loop {
            if self.link.usable().is_none() {
                self.link.discard();
                self.link.start_attempt();
                let attempt = {
                    let Subscriber { link, switches, .. } = &mut *self;
                    let attempt = timeout_at(wait_until, link.attempt_done());
                    tokio::pin!(attempt);
                    loop {
                        tokio::select! {
                            outcome = &mut attempt => break Ok(outcome),
                            switch = next_switch(switches) => if switch.moved { break Err(switch) },
                        }
                    }
                };
                let attempt = match attempt {
                    Ok(outcome) => outcome,
                    // An attempt under way may be going to the old master: start over.
                    Err(switch) => {
                        self.link.follow(&switch);
                        continue;
                    }
                };
                match attempt {
                    Err(_) => return Err(self.link.not_connected()),
                    // A failover under way: the sentinels will name a master soon.
                    Ok(Err(err)) if err.retryable && Instant::now() < wait_until => continue,
                    Ok(Err(err)) => return Err(err),
                    Ok(Ok(())) => {
                        if let Err(err) = self.restore().await {
                            // Refused for now: the loop tries again while the call may wait.
                            if !err.retryable || Instant::now() >= wait_until {
                                return Err(err);
                            }
                            continue;
                        }
                    }
                }
            }
            let written = *first_written.get_or_insert_with(Instant::now);
            match self.request(&args, requests.len()).await {
                Ok(Ok(())) => return Ok(()),
                // Refused for now: again after a backoff, within the call's deadline.
                Ok(Err(refusal)) if refusal.retryable => {
                    let now = Instant::now();
                    let deadline = written + self.link.timeouts.command;
                    if now >= deadline {
                        return Err(refusal);
                    }
                    refusals += 1;
                    tokio::time::sleep_until((now + backoff(refusals - 1)).min(deadline)).await;
                }
                // Refused for good (an ACL): the other channels stay as they are.
                Ok(Err(refusal)) => return Err(refusal),
                // The master moved: again on the new one, nothing lost to report.
                Err(_) if std::mem::take(&mut self.moved) && Instant::now() < wait_until => {}
                // The connection had closed (it holds no subscription now): again on a new
                // one, while the call may still wait for it.
                Err(err) if err.code == ErrorCode::Connection && Instant::now() < wait_until => {
                    self.lost("the connection closed");
                }
                // No reply in time: the connection has ended, and the loop reconnects.
                Err(err) => return Err(err),
            }
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> Result<Reply, StoreError> {
        self.channels.remove(channel);
        if self.link.usable().is_some() {
            // Confirmed before the call resolves, so the server shows it gone by then.
            let confirmed = self.request(&[b"UNSUBSCRIBE", channel.as_bytes()], 1).await;
            let moved = std::mem::take(&mut self.moved);
            // Nothing left to listen to: close the connection. No reply: close it too, which
            // drops any subscription the server still has on it, and get the others back.
            // Refused (BUSY, say): the same, since the server may still hold the channel.
            // The master moved: that connection is gone already.
            if self.channels.is_empty() {
                self.link.discard();
            } else if !moved && !matches!(confirmed, Ok(Ok(()))) {
                self.lost("UNSUBSCRIBE was not confirmed");
            }
        }
        Ok(Reply::Null)
    }

    /// Any reply proves the connection alive, a refusal included (a server that is loading,
    /// or a replica whose master is down, refuses PING and still delivers messages). No
    /// check while the reader is paused: the silence is ours, not the server's.
    async fn check_health(&mut self) {
        if self.link.usable().is_none_or(|live| live.is_paused()) {
            return;
        }
        // No reply: the reader has ended the connection, and the loop reports it. The master
        // moved: the loop restores the channels on the new one.
        let _ = self.request(&[b"PING"], 1).await;
        self.moved = false;
    }

    /// Sends one command on the connection and waits for its confirmations, unless the
    /// master moves meanwhile (a hung master would never answer): then the connection is let
    /// go and this fails with `moved` set.
    async fn request(&mut self, args: &[&[u8]], confirmations: usize) -> Confirmed {
        let Subscriber { link, switches, .. } = &mut *self;
        let switch = {
            let Some(live) = link.usable() else {
                return Err(link.not_connected());
            };
            let on = live.endpoint().master.clone();
            let request = live.request(args, confirmations);
            tokio::pin!(request);
            loop {
                tokio::select! {
                    confirmed = &mut request => return confirmed,
                    switch = next_switch(switches) => {
                        if on.as_deref() != Some(switch.master.as_str()) {
                            break switch;
                        }
                    }
                }
            }
        };
        link.follow(&switch);
        self.moved = true;
        Err(StoreError::new(
            ErrorCode::Connection,
            format!("the master moved to {}", switch.master),
        ))
    }

    /// The connection is gone: report it once per outage, then reconnect with backoff.
    fn lost(&mut self, why: &str) {
        self.link.discard();
        if self.channels.is_empty() || self.in_outage {
            return;
        }
        self.in_outage = true;
        self.outbox.push_all([Event::Failure(StoreError::new(
            ErrorCode::Connection,
            format!(
                "the Pub/Sub connection was lost ({why}); reconnecting and subscribing again to {} channel(s)",
                self.channels.len()
            ),
        ))]);
    }

    /// Subscribes a new connection to every channel wanted, in one command. A refusal for now
    /// (BUSY, LOADING, NOAUTH, ...) keeps them all and tries again later; a refusal for good
    /// goes channel by channel, and only the refused ones are given up.
    async fn restore(&mut self) -> Result<(), StoreError> {
        let channels: Vec<String> = self.channels.iter().cloned().collect();
        if self.link.usable().is_none() {
            return Err(self.link.not_connected());
        }
        if channels.is_empty() {
            self.in_outage = false;
            return Ok(());
        }
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(channels.iter().map(|c| c.as_bytes()));
        let mut outcome = self.request(&args, channels.len()).await;
        let mut given_up = Vec::new();
        if matches!(&outcome, Ok(Err(refusal)) if refused_for_good(refusal)) {
            outcome = Ok(Ok(()));
            for channel in channels {
                match self.request(&[b"SUBSCRIBE", channel.as_bytes()], 1).await {
                    Ok(Err(refusal)) if refused_for_good(&refusal) => {
                        given_up.push((channel, refusal))
                    }
                    Ok(Ok(())) => {}
                    other => {
                        outcome = other;
                        break;
                    }
                }
            }
        }
        for (channel, refusal) in given_up {
            self.forget(&channel, refusal);
        }
        let err = match outcome {
            Ok(Ok(())) => {
                self.in_outage = false;
                return Ok(());
            }
            Ok(Err(err)) | Err(err) => err,
        };
        // The master moved: the channels go to the new one, no failure to report.
        if std::mem::take(&mut self.moved) {
            return Err(StoreError {
                retryable: true,
                ..err
            });
        }
        self.link.discard_failed(&err);
        if !self.in_outage {
            self.in_outage = true;
            self.outbox.push_all([Event::Failure(StoreError {
                message: format!(
                    "the Pub/Sub connection could not subscribe again ({}); retrying",
                    err.message
                ),
                ..err.clone()
            })]);
        }
        Err(err)
    }

    /// The server will never take this channel: JS forgets it too, then hears why.
    fn forget(&mut self, channel: &str, refusal: StoreError) {
        self.channels.remove(channel);
        self.outbox.push_all([Event::Failure(StoreError {
            message: format!("no longer subscribed to {channel:?}: {}", refusal.message),
            channel: Some(channel.to_owned()),
            ..refusal
        })]);
    }
}

/// The request held back while gathering a batch, else the next one queued.
async fn next_request(
    queue: &mut UnboundedReceiver<Request>,
    held_back: &mut Option<Request>,
) -> Option<Request> {
    match held_back.take() {
        Some(request) => Some(request),
        None => queue.recv().await,
    }
}

fn refused_for_good(refusal: &StoreError) -> bool {
    refusal.message.starts_with("NOPERM")
}
