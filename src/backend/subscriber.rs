//! The Pub/Sub side of one adapter. The set of channels it wants is the source of truth: each
//! subscriber connection is built from it, and made again (with backoff) whenever it is lost
//! or the server refuses it for now. A channel is given up only when the server refuses it
//! for good (NOPERM); JS is then told to forget it too.
//!
//! In a cluster's sharded mode there is one such subscriber per master, for the shard
//! channels of its slots (`SSUBSCRIBE`), and `shards` hands each its channels; a channel
//! whose slot the master no longer serves (its `-MOVED`, or the `sunsubscribe` it pushes) is
//! handed back to be subscribed where the slot went.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::{timeout_at, Instant};

use super::cluster::{self, MapReceiver};
use super::connect::Endpoint;
use super::connection::Confirmed;
use super::link::{backoff, Link};
use super::sentinel::{next_switch, Switches};
use super::{Op, Request};
use crate::bridge::{Event, Outbox, Reply};
use crate::error::{ErrorCode, Redirect, StoreError};

/// How often a subscriber connection is checked with a PING: the command timeout, within these.
const MIN_PING_EVERY: Duration = Duration::from_secs(1);
const MAX_PING_EVERY: Duration = Duration::from_secs(30);
/// How long to wait for more subscribes after one arrives: JS makes a loop's worth within
/// microseconds of each other.
const GATHER: Duration = Duration::from_micros(200);

/// What a subscriber is told to do.
// Nearly every order is a call: boxing it would cost an allocation each to save space on the
// rare others.
#[allow(clippy::large_enum_variant)]
pub enum Order {
    /// A call of JS's: subscribe or unsubscribe a channel.
    Call(Request),
    /// Sharded mode: shard channels that moved to this master, to subscribe here.
    Adopt(Vec<String>),
    /// Sharded mode: shard channels that moved away, to unsubscribe here.
    Release(Vec<String>),
}

/// Classic channels, or a cluster's shard channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    Classic,
    Sharded,
}

impl Channels {
    fn subscribe(self) -> &'static [u8] {
        match self {
            Channels::Classic => b"SUBSCRIBE",
            Channels::Sharded => b"SSUBSCRIBE",
        }
    }

    fn unsubscribe(self) -> &'static [u8] {
        match self {
            Channels::Classic => b"UNSUBSCRIBE",
            Channels::Sharded => b"SUNSUBSCRIBE",
        }
    }

    /// The channels as one command takes them: all at once, or (shard channels) those of
    /// each slot together.
    fn groups(self, channels: Vec<String>) -> Vec<Vec<String>> {
        self.grouped(channels, |channel| channel.as_str())
    }

    /// Subscribe calls grouped as `groups` groups their channels.
    fn groups_of(self, requests: Vec<Request>) -> Vec<Vec<Request>> {
        self.grouped(requests, |request| request.key.as_str())
    }

    fn grouped<T>(self, items: Vec<T>, channel: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
        match self {
            Channels::Classic if items.is_empty() => Vec::new(),
            Channels::Classic => vec![items],
            Channels::Sharded => {
                let mut groups: Vec<(u16, Vec<T>)> = Vec::new();
                for item in items {
                    let slot = cluster::slot(channel(&item).as_bytes());
                    match groups.iter_mut().find(|(s, _)| *s == slot) {
                        Some((_, group)) => group.push(item),
                        None => groups.push((slot, vec![item])),
                    }
                }
                groups.into_iter().map(|(_, group)| group).collect()
            }
        }
    }
}

/// What a master's shard subscriber hands back: channels its master no longer serves.
pub enum Handback {
    /// A subscribe refused with `-MOVED`/`-ASK`: the call (none when the channel was
    /// adopted), its channel, and where the server said to go.
    Redirected(Option<Box<Request>>, String, Redirect),
    /// A shard channel the master unsubscribed on its own: its slot moved away.
    Dropped(String),
    /// A shard channel not subscribed after all: its call failed, or it was given up.
    Refused(String),
    /// The master could not be reached: the slot map may name another for its slots.
    Unreachable,
}

/// Sharded mode: the master a subscriber serves, and where it hands channels back.
pub struct Shard {
    pub node: (String, u16),
    pub handback: UnboundedSender<((String, u16), Handback)>,
    /// Shard channels the server unsubscribed on its own, as the connection reads them.
    pub dropped: UnboundedReceiver<String>,
}

struct Subscriber {
    link: Link,
    kind: Channels,
    shard: Option<Shard>,
    /// Classic Pub/Sub in a cluster: the slot map, to leave a node failed over.
    cluster_map: Option<MapReceiver>,
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

/// `cluster_map`: classic Pub/Sub in a cluster, whose connection moves off a master the
/// cluster has failed over (it may be hung, and would be found so only by a PING).
pub async fn serve(
    link: Link,
    shard: Option<Shard>,
    cluster_map: Option<MapReceiver>,
    mut queue: UnboundedReceiver<Order>,
    outbox: Arc<Outbox>,
) {
    // A connection that went silent without closing shows up as an unanswered PING.
    let every = link.timeouts.command.clamp(MIN_PING_EVERY, MAX_PING_EVERY);
    let mut health = tokio::time::interval(every);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut subscriber = Subscriber {
        switches: link.switches(),
        link,
        kind: if shard.is_some() {
            Channels::Sharded
        } else {
            Channels::Classic
        },
        shard,
        cluster_map,
        outbox,
        channels: HashSet::new(),
        in_outage: false,
        moved: false,
    };
    // An order taken off the queue while gathering subscribes, handled next.
    let mut held_back: Option<Order> = None;
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
            order = next_order(&mut queue, &mut held_back) => match order {
                None => break,
                Some(Order::Call(request)) if request.op == Op::Subscribe => {
                    // Subscribes submitted together go in one command, so none waits out
                    // another's refusals in turn.
                    let mut batch = vec![request];
                    let mut gather_until = std::time::Instant::now() + GATHER;
                    while std::time::Instant::now() < gather_until {
                        match queue.try_recv() {
                            Ok(Order::Call(next)) if next.op == Op::Subscribe => {
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
                }
                Some(Order::Call(request)) => {
                    subscriber.unsubscribe(std::slice::from_ref(&request.key)).await;
                    subscriber.outbox.complete(request.id, Reply::Null);
                }
                Some(Order::Adopt(channels)) => subscriber.adopt(channels).await,
                Some(Order::Release(channels)) => subscriber.unsubscribe(&channels).await,
            },
            _ = map_changed(&mut subscriber.cluster_map), if live => {
                let on = subscriber.link.connection().map(|live| live.shared_endpoint());
                if on.is_some_and(|on| failed_over(&subscriber.cluster_map, &on)) {
                    subscriber.lost(FAILED_OVER);
                }
            }
            // Sharded mode: the master let go of a shard channel (its slot moved away).
            Some(channel) = dropped_channel(&mut subscriber.shard) => {
                if subscriber.channels.remove(&channel) {
                    subscriber.hand_back(Handback::Dropped(channel));
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
                    Err(_) => subscriber.hand_back(Handback::Unreachable),
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
        for group in self.kind.groups_of(requests) {
            self.subscribe_group(group).await;
        }
    }

    /// Subscribes channels one command can take together.
    async fn subscribe_group(&mut self, requests: Vec<Request>) {
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
            // Sharded mode: another master serves the channel's slot.
            Err(StoreError {
                redirect: Some(redirect),
                ..
            }) if self.shard.is_some() => {
                let channel = request.key.clone();
                self.hand_back(Handback::Redirected(
                    Some(Box::new(request)),
                    channel,
                    *redirect,
                ));
                return;
            }
            Err(err) => {
                self.hand_back(Handback::Refused(request.key.clone()));
                Reply::Error(err)
            }
        };
        self.outbox.complete(request.id, reply);
    }

    fn hand_back(&self, handback: Handback) {
        if let Some(shard) = &self.shard {
            let _ = shard.handback.send((shard.node.clone(), handback));
        }
    }

    /// Sharded mode: shard channels that moved here are subscribed (by `restore` once
    /// connected, when not connected now).
    async fn adopt(&mut self, channels: Vec<String>) {
        let new: Vec<String> = channels
            .into_iter()
            .filter(|channel| self.channels.insert(channel.clone()))
            .collect();
        if self.link.usable().is_none() {
            return;
        }
        for group in self.kind.groups(new) {
            match self.subscribe_or_hand_back(group).await {
                Ok(Ok(())) => {}
                // Refused for now, or no answer: subscribed again with the others once the
                // connection is made again.
                _ => {
                    self.lost("a shard channel that moved here was not subscribed");
                    return;
                }
            }
        }
    }

    /// One SUBSCRIBE for every channel of `requests`, on a connection made if needed, retried
    /// within their deadline while the server refuses it for now.
    async fn subscribe_channels(&mut self, requests: &[Request]) -> Result<(), StoreError> {
        let wait_until = requests.iter().map(|r| r.wait_until).min();
        let wait_until = wait_until.unwrap_or_else(Instant::now);
        let mut args: Vec<&[u8]> = vec![self.kind.subscribe()];
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
                // Sharded mode: another master serves the slot.
                Ok(Err(refusal)) if refusal.redirect.is_some() => return Err(refusal),
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

    async fn unsubscribe(&mut self, channels: &[String]) {
        // Only what the server holds: a channel never subscribed here is not asked about.
        let held: Vec<String> = channels
            .iter()
            .filter(|channel| self.channels.remove(*channel))
            .cloned()
            .collect();
        if held.is_empty() || self.link.usable().is_none() {
            return;
        }
        if self.channels.is_empty() {
            // Nothing left to listen to: closing the connection unsubscribes everything.
            self.link.discard();
            return;
        }
        for group in self.kind.groups(held) {
            // Confirmed before the call resolves, so the server shows it gone by then.
            let mut args: Vec<&[u8]> = vec![self.kind.unsubscribe()];
            args.extend(group.iter().map(|c| c.as_bytes()));
            let confirmed = self.request(&args, group.len()).await;
            let moved = std::mem::take(&mut self.moved);
            // No reply: close the connection, which drops any subscription the server still
            // has on it, and get the others back. Refused (BUSY, say): the same, since the
            // server may still hold the channel; but not `-MOVED`: a master holds no shard
            // channel of a slot it does not serve. The master moved: that connection is gone
            // already.
            let gone = match &confirmed {
                Ok(Ok(())) => true,
                Ok(Err(refusal)) => refusal.redirect.is_some(),
                Err(_) => false,
            };
            if !moved && !gone {
                self.lost("UNSUBSCRIBE was not confirmed");
                return;
            }
        }
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
        let Subscriber {
            link,
            switches,
            cluster_map,
            ..
        } = &mut *self;
        let switch = {
            let Some(live) = link.usable() else {
                return Err(link.not_connected());
            };
            let on = live.shared_endpoint();
            let request = live.request(args, confirmations);
            tokio::pin!(request);
            loop {
                tokio::select! {
                    confirmed = &mut request => return confirmed,
                    switch = next_switch(switches) => {
                        if on.master.as_deref() != Some(switch.master.as_str()) {
                            break Some(switch);
                        }
                    }
                    // In a cluster, a node failed over may be hung: no answer will come.
                    _ = map_changed(cluster_map) => if failed_over(cluster_map, &on) { break None },
                }
            }
        };
        let Some(switch) = switch else {
            self.lost(FAILED_OVER);
            return Err(StoreError::new(ErrorCode::Connection, FAILED_OVER));
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
        self.hand_back(Handback::Unreachable);
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
        let mut outcome = Ok(Ok(()));
        let mut given_up = Vec::new();
        for group in self.kind.groups(channels) {
            match self.subscribe_or_hand_back(group.clone()).await {
                Ok(Ok(())) => continue,
                Ok(Err(refusal)) if refused_for_good(&refusal) => {}
                other => {
                    outcome = other;
                    break;
                }
            }
            for channel in group {
                match self
                    .request(&[self.kind.subscribe(), channel.as_bytes()], 1)
                    .await
                {
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
            if !matches!(outcome, Ok(Ok(()))) {
                break;
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

    /// One subscribe of `group` (in sharded mode, channels of one slot) for channels already in
    /// the set. When the master says the slot is served elsewhere (`-MOVED`), they leave the
    /// set and are handed back to be placed there: that too is `Ok`.
    async fn subscribe_or_hand_back(&mut self, group: Vec<String>) -> Confirmed {
        let mut args: Vec<&[u8]> = vec![self.kind.subscribe()];
        args.extend(group.iter().map(|c| c.as_bytes()));
        match self.request(&args, group.len()).await {
            Ok(Err(StoreError {
                redirect: Some(redirect),
                ..
            })) => {
                for channel in group {
                    self.channels.remove(&channel);
                    self.hand_back(Handback::Redirected(None, channel, (*redirect).clone()));
                }
                Ok(Ok(()))
            }
            outcome => outcome,
        }
    }

    /// The server will never take this channel: JS forgets it too, then hears why.
    fn forget(&mut self, channel: &str, refusal: StoreError) {
        self.channels.remove(channel);
        self.hand_back(Handback::Refused(channel.to_owned()));
        self.outbox.push_all([Event::Failure(StoreError {
            message: format!("no longer subscribed to {channel:?}: {}", refusal.message),
            channel: Some(channel.to_owned()),
            ..refusal
        })]);
    }
}

/// The order held back while gathering a batch, else the next one queued.
async fn next_order(
    queue: &mut UnboundedReceiver<Order>,
    held_back: &mut Option<Order>,
) -> Option<Order> {
    match held_back.take() {
        Some(order) => Some(order),
        None => queue.recv().await,
    }
}

const FAILED_OVER: &str = "its node serves no slots now: the cluster failed it over";

/// In a cluster, whether the slot map shows the node `on` failed over.
fn failed_over(cluster_map: &Option<MapReceiver>, on: &Endpoint) -> bool {
    cluster_map.as_ref().is_some_and(|map| {
        map.borrow()
            .as_deref()
            .is_some_and(|map| map.no_longer_serves(on))
    })
}

/// In a cluster, once the slot map is read anew.
async fn map_changed(map: &mut Option<MapReceiver>) {
    let changed = match map {
        Some(map) => map.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// Sharded mode: the next shard channel the server unsubscribed on its own.
async fn dropped_channel(shard: &mut Option<Shard>) -> Option<String> {
    match shard {
        Some(shard) => shard.dropped.recv().await,
        None => std::future::pending().await,
    }
}

fn refused_for_good(refusal: &StoreError) -> bool {
    refusal.message.starts_with("NOPERM")
}
