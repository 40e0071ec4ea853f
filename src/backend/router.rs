//! The command router: takes calls off the adapter's queue, writes whatever has queued as one
//! pipeline per server, fails calls that waited their `connectTimeout` for a connection, and
//! retries calls the server refused for now (LOADING, BUSY, MASTERDOWN, TRYAGAIN, CLUSTERDOWN,
//! a full server; under Sentinel, READONLY from a demoted master) within their deadline. Under
//! Sentinel the one link follows the master the sentinels announce; in a cluster there is a
//! link per master, a batch is split by the slot of each call's key, and MOVED and ASK send a
//! call on to the node named.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::cluster::{self, MapUpdates, SlotMap, MAX_REDIRECTS};
use super::connect::Connector;
use super::connection::{Mode, Sink};
use super::link::{backoff, Link};
use super::sentinel::next_switch;
use super::{Op, Request};
use crate::bridge::{Outbox, Reply};
use crate::error::{ErrorCode, Redirect, StoreError};
use crate::options::Timeouts;

/// Commands taken off the queue into one pipeline at most.
const MAX_BATCH: usize = 1024;
const SPIN: Duration = Duration::from_micros(200);
/// Timers fire on millisecond ticks: deadlines this close fire together.
const TIMER_TICK: Duration = Duration::from_millis(2);
/// The least time between two reads of a cluster's slot map.
const REFRESH_GAP: Duration = Duration::from_millis(100);
/// How often the slot map is read when nothing asks for it (±20 %).
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// A node that has left a call unanswered this long may be hung (a stopped process, a lost
/// network path: no error comes): the slot map is read again, as often as `REFRESH_GAP`
/// allows, until the cluster has failed it over or it answers.
const SUSPECT_AFTER: Duration = Duration::from_millis(500);

/// A cluster's masters: the slot map, and how to reach a node and read the map again.
pub struct Cluster {
    map: Option<SlotMap>,
    /// Connects to any node, with the adapter's TLS and credentials.
    template: Arc<Connector>,
    seeds: Vec<(String, u16)>,
    timeouts: Timeouts,
    sink: Sink,
    refresh: Option<JoinHandle<Result<SlotMap, StoreError>>>,
    /// When to read the slot map again, if it should be.
    refresh_at: Option<Instant>,
    last_refresh: Option<Instant>,
    refresh_failures: u32,
    /// Why the slot map could not be read, the last time it failed.
    last_error: Option<StoreError>,
    /// Reads asked for (not periodic) in a row that found the map unchanged: while a node is
    /// down and not yet failed over, the map is read less and less often.
    unchanged_reads: u32,
    /// Whether a read is wanted for a reason (not the periodic one); and the one under way.
    asked: bool,
    refresh_asked: bool,
    /// The map changed since it was last published.
    changed: bool,
    /// Periodic reads so far: which master the next one asks.
    periodic_reads: usize,
    /// MOVED replies met while a read of the map was under way: fresher than what it reads,
    /// they are applied again over it.
    moved_meanwhile: Vec<Redirect>,
    /// The map as it changes, for the blocking reads' pool; and what the pool finds stale.
    updates: MapUpdates,
    stale: UnboundedReceiver<Option<Redirect>>,
}

impl Cluster {
    pub fn new(
        template: Arc<Connector>,
        seeds: Vec<(String, u16)>,
        timeouts: Timeouts,
        sink: Sink,
        updates: MapUpdates,
        stale: UnboundedReceiver<Option<Redirect>>,
    ) -> Self {
        Cluster {
            unchanged_reads: 0,
            asked: false,
            refresh_asked: false,
            changed: false,
            periodic_reads: 0,
            moved_meanwhile: Vec::new(),
            updates,
            stale,
            map: None,
            template,
            seeds,
            timeouts,
            sink,
            refresh: None,
            refresh_at: Some(Instant::now()),
            last_refresh: None,
            refresh_failures: 0,
            last_error: None,
        }
    }

    /// Reads the slot map again soon: at once, unless it was read less than `REFRESH_GAP` ago
    /// (several reasons to read it come together and are served by one read).
    fn want_refresh(&mut self) {
        if self.refresh.is_some() {
            return;
        }
        self.asked = true;
        let misses = self.refresh_failures + self.unchanged_reads;
        let gap = REFRESH_GAP.max(backoff(misses.saturating_sub(1)));
        let at = self
            .last_refresh
            .map_or_else(Instant::now, |last| last + gap)
            .max(Instant::now());
        self.refresh_at = Some(self.refresh_at.map_or(at, |due| due.min(at)));
    }

    /// The next read of the slot map when nobody asks for one: changes nobody reported (a
    /// failover while no call went to the failed master) are found within about this long.
    /// Jittered, so adapters started together do not read it together.
    fn schedule_periodic_refresh(&mut self) {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let jitter = REFRESH_EVERY.mul_f64(0.8 + 0.4 * (random % 1000) as f64 / 1000.0);
        self.refresh_at = Some(Instant::now() + jitter);
    }

    fn start_refresh(&mut self) {
        self.refresh_at = None;
        self.refresh_asked = std::mem::take(&mut self.asked);
        self.last_refresh = Some(Instant::now());
        let serving = self.map.as_ref().map(SlotMap::serving).unwrap_or_default();
        // The nodes the map names, then the seeds it does not (connected to as given).
        let mut nodes: Vec<((String, u16), bool)> = self
            .map
            .as_ref()
            .map(|map| map.nodes.iter().map(|node| (node.clone(), false)).collect())
            .unwrap_or_default();
        for seed in &self.seeds {
            if !nodes.iter().any(|(node, _)| node == seed) {
                nodes.push((seed.clone(), true));
            }
        }
        // The periodic read asks one master, each in turn, and the others only if it has not
        // answered within `SUSPECT_AFTER`: a read every 2 s of every node would be a new
        // connection to each, from every adapter. Reads asked for go to every node at once.
        let first_alone_for = match serving.len() {
            0 => Duration::ZERO,
            _ if self.refresh_asked => Duration::ZERO,
            count => {
                self.periodic_reads = self.periodic_reads.wrapping_add(1);
                let first = &serving[self.periodic_reads % count];
                if let Some(at) = nodes.iter().position(|(node, _)| node == first) {
                    nodes.swap(0, at);
                }
                SUSPECT_AFTER
            }
        };
        let deadline = Instant::now() + self.timeouts.connect;
        self.refresh = Some(tokio::spawn(cluster::discover(
            self.template.clone(),
            nodes,
            first_alone_for,
            deadline,
        )));
    }

    /// The node a call goes to, if the slot map says (`Err`: a scan cursor naming a node
    /// that serves no slots now).
    fn route(
        &mut self,
        request: &mut Request,
        links: &mut Vec<Link>,
    ) -> Result<Option<usize>, StoreError> {
        let Some(map) = self.map.as_mut() else {
            return Ok(None);
        };
        let node = match (request.ask.as_deref(), request.op) {
            (Some((host, port)), _) => map.node_index(host, *port),
            // Routed before and sent back (its connection had closed): the node it was for.
            (None, Op::Scan { .. }) if request.scan_hop.is_some() => {
                let id = request.scan_hop.as_deref().map(|(id, _)| id.as_str());
                match map.scan_order().iter().find(|(_, node_id)| Some(*node_id) == id) {
                    Some(&(node, _)) => node,
                    None => {
                        return Err(StoreError::invalid_argument(
                            "the scan cursor names a node that serves no slots now (the cluster changed): start again from '0'",
                        ))
                    }
                }
            }
            (None, Op::Scan { .. }) => {
                let order = map.scan_order();
                let (at, cursor) = match request.payload.split_once(':') {
                    Some((id, cursor)) => match order.iter().position(|(_, node_id)| *node_id == id) {
                        Some(at) => (at, cursor.to_owned()),
                        None => {
                            return Err(StoreError::invalid_argument(
                                "the scan cursor names a node that serves no slots now (the cluster changed): start again from '0'",
                            ))
                        }
                    },
                    None => (0, request.payload.clone()),
                };
                let Some(&(node, id)) = order.get(at) else {
                    return Ok(None);
                };
                let next = order.get(at + 1).map(|(_, id)| id.to_string());
                request.scan_hop = Some(Box::new((id.to_owned(), next)));
                request.payload = cursor;
                node
            }
            (None, _) => match map.owner(cluster::slot(request.key.as_bytes())) {
                Some(node) => node,
                None => return Ok(None),
            },
        };
        self.ensure_links(links);
        Ok(Some(node))
    }

    /// A link for every node of the slot map.
    fn ensure_links(&self, links: &mut Vec<Link>) {
        let Some(map) = &self.map else { return };
        for (host, port) in &map.nodes[links.len().min(map.nodes.len())..] {
            let connector = Arc::new(self.template.to_node(host, *port));
            links.push(Link::new(
                connector,
                self.timeouts,
                Mode::Commands,
                self.sink.clone(),
            ));
        }
    }

    /// Why calls waiting for a connection got none: what their node's link says, or why the
    /// slot map could not be read.
    fn not_connected(&self, links: &[Link], expired: &[Request]) -> StoreError {
        let node = self.map.as_ref().and_then(|map| {
            let request = expired.first()?;
            map.owner(cluster::slot(request.key.as_bytes()))
        });
        match (node.and_then(|node| links.get(node)), &self.last_error) {
            (Some(link), _) => link.not_connected(),
            (None, Some(err)) => StoreError {
                message: format!(
                    "no connection within connectTimeout ({} ms); {}",
                    self.timeouts.connect.as_millis(),
                    err.message
                ),
                ..err.clone()
            },
            (None, None) => StoreError::new(
                ErrorCode::Connection,
                match (&self.map, expired.first()) {
                    (Some(_), Some(request)) => format!(
                        "no master serves slot {} (the cluster is down there, or resharding) within connectTimeout ({} ms)",
                        cluster::slot(request.key.as_bytes()),
                        self.timeouts.connect.as_millis()
                    ),
                    _ => format!(
                        "no connection within connectTimeout ({} ms): the slot map was not read yet",
                        self.timeouts.connect.as_millis()
                    ),
                },
            ),
        }
    }

    /// MOVED: the slot is served there from now on (and the whole map is read again); ASK:
    /// this call goes there once.
    fn redirected(&mut self, request: &mut Request, redirect: &Redirect) {
        // An empty host was filled in with the answering node's by the connection.
        let host = redirect.host.clone();
        if redirect.ask {
            request.ask = Some(Box::new((host, redirect.port)));
        } else {
            request.ask = None;
            self.moved(redirect);
        }
    }

    /// MOVED: the slot is served there from now on, and the whole map is read again.
    fn moved(&mut self, redirect: &Redirect) {
        if let Some(map) = self.map.as_mut() {
            self.changed |= map.moved(redirect.slot, &redirect.host, redirect.port);
        }
        if self.refresh.is_some() {
            self.moved_meanwhile.push(redirect.clone());
        }
        self.want_refresh();
    }

    /// A read of the slot map has ended: the map is taken, or read again, backing off while it
    /// keeps failing (the periodic read never stops).
    fn refreshed(&mut self, map: Result<SlotMap, StoreError>, links: &mut Vec<Link>) {
        match map {
            Ok(map) => {
                let mut changed = match self.map.as_mut() {
                    Some(known) => known.adopt(map),
                    None => {
                        self.map = Some(map);
                        true
                    }
                };
                if let Some(map) = self.map.as_mut() {
                    for redirect in self.moved_meanwhile.drain(..) {
                        changed |= map.moved(redirect.slot, &redirect.host, redirect.port);
                    }
                }
                self.unchanged_reads = match (changed, self.refresh_asked) {
                    (false, true) => self.unchanged_reads + 1,
                    _ => 0,
                };
                self.refresh_failures = 0;
                // Published even when unchanged: whoever waits on the map hears it was read.
                self.changed = true;
                self.ensure_links(links);
                self.abandon_hung(links);
                self.schedule_periodic_refresh();
            }
            Err(err) => {
                self.moved_meanwhile.clear();
                self.refresh_failures += 1;
                self.last_error = Some(err);
                self.want_refresh();
            }
        }
    }

    /// Calls waiting on a node that serves no slots now and has left them unanswered a while
    /// (a hung master the cluster has failed over) fail now, as under Sentinel, rather than
    /// at `commandTimeout`; they may have run, so they are not sent again.
    fn abandon_hung(&self, links: &mut [Link]) {
        let Some(map) = &self.map else { return };
        let suspect_after = SUSPECT_AFTER.min(self.timeouts.command / 2);
        for (node, link) in links.iter_mut().enumerate() {
            if map.serves(node) {
                continue;
            }
            if let Some(live) = link
                .connection()
                .filter(|live| live.unanswered_for(suspect_after))
            {
                let err = StoreError::new(
                    ErrorCode::Connection,
                    format!(
                        "{}: the cluster failed this master over while calls waited for its \
                         reply; they may have run",
                        live.endpoint().describe()
                    ),
                );
                live.abort(StoreError {
                    retryable: true,
                    ..err
                });
            }
        }
    }

    /// Once per turn of the router's loop, however many MOVED came: the map is copied whole.
    fn publish_changes(&mut self) {
        if std::mem::take(&mut self.changed) {
            self.updates.send_replace(self.map.clone().map(Arc::new));
        }
    }
}

pub async fn serve(
    mut links: Vec<Link>,
    mut cluster: Option<Cluster>,
    timeouts: Timeouts,
    mut queue: UnboundedReceiver<Request>,
    mut refused: UnboundedReceiver<(Request, StoreError)>,
    outbox: Arc<Outbox>,
) {
    // Connect at once, so the first calls find the connection ready or being made.
    for link in &mut links {
        link.start_attempt();
    }
    let mut switches = links.first().and_then(Link::switches);
    let mut waiting: Vec<Request> = Vec::new();
    // Calls the server refused for now, and every call submitted after them, in submission
    // order: sent again together when `held_until` comes, so retries never reorder calls.
    let mut held: Vec<Request> = Vec::new();
    let mut held_until: Option<Instant> = None;
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
        let give_up_at = give_up_at(&mut links, cluster.is_some(), &waiting);
        let connecting = links.iter().any(Link::connecting);
        if let Some(cluster) = cluster.as_mut() {
            let suspect_after = SUSPECT_AFTER.min(timeouts.command / 2);
            if links.iter_mut().any(|link| {
                link.connection()
                    .is_some_and(|live| live.unanswered_for(suspect_after))
            }) {
                cluster.want_refresh();
            }
        }
        let refresh_at = cluster.as_ref().and_then(|c| c.refresh_at);
        // While a node is suspect, look again when the next read may start.
        let suspect_check_at = cluster
            .as_ref()
            .filter(|_| {
                links
                    .iter_mut()
                    .any(|link| !link.connection().is_none_or(|live| live.is_idle()))
            })
            .map(|_| Instant::now() + SUSPECT_AFTER);
        let refreshing = cluster.as_ref().is_some_and(|c| c.refresh.is_some());
        tokio::select! {
            biased;
            (node, outcome) = any_attempt_done(&mut links), if connecting => match outcome {
                Ok(()) => {}
                // A server refusing connections for now (maxclients): calls wait out their own
                // connect budget while attempts go on with backoff.
                Err(err) if err.retryable => {}
                // A node that cannot be reached: the slot map may say its slots moved, and
                // calls wait for that within their connect budget.
                Err(_) if cluster.is_some() => {
                    if let Some(cluster) = cluster.as_mut() {
                        cluster.want_refresh();
                    }
                    let _ = node;
                }
                // Each call rides at most one failed attempt: those waiting fail with it.
                Err(err) => fail(&outbox, waiting.drain(..), &err),
            },
            news = cluster_news(&mut cluster) => if let Some(cluster) = cluster.as_mut() {
                match news {
                    News::Refreshed(map) => {
                        cluster.refreshed(map, &mut links);
                        // Refused for good before any map was read (the credentials): the
                        // calls waiting fail now, as with one server.
                        if let (None, Some(err)) = (&cluster.map, &cluster.last_error) {
                            if !err.retryable {
                                fail(&outbox, waiting.drain(..), err);
                            }
                        }
                    }
                    // The blocking reads' pool found the map out of date.
                    News::Moved(redirect) => cluster.moved(&redirect),
                    News::Unreachable => cluster.want_refresh(),
                }
            },
            _ = sleep_until(refresh_at.unwrap_or_else(Instant::now)), if refresh_at.is_some() && !refreshing => {
                if let Some(cluster) = cluster.as_mut() {
                    cluster.start_refresh();
                }
            }
            _ = sleep_until(suspect_check_at.unwrap_or_else(Instant::now)), if suspect_check_at.is_some() => {}
            // Under Sentinel: nothing more goes to the old master once the switch is known.
            switch = next_switch(&mut switches) => {
                let link = &mut links[0];
                let drained = switch.previous_down
                    || link.connection().is_none_or(|live| live.is_idle());
                if link.follow(&switch) {
                    link.start_attempt();
                    // Calls the old master refused for now (NOREPLICAS, READONLY) go to the
                    // new one as soon as it is connected, not after their backoff; unless
                    // calls written after them may still be refused there and join them, so
                    // they keep their order.
                    if held_until.is_some() && drained {
                        held_until = Some(Instant::now());
                    }
                }
            }
            Some((mut request, err)) = refused.recv() => match (&err.redirect, cluster.as_mut()) {
                (Some(redirect), Some(cluster)) => {
                    request.redirects += 1;
                    if request.redirects > MAX_REDIRECTS {
                        outbox.push_all(request.settled(Reply::Error(err)));
                    } else {
                        cluster.redirected(&mut request, redirect);
                        // It may wait for the node named to be connected, as a new call would.
                        request.wait_until = request.wait_until.max(Instant::now() + timeouts.connect);
                        waiting.push(request);
                    }
                }
                _ => hold(request, err, timeouts.command, &mut held, &mut held_until, &outbox),
            },
            count = queue.recv_many(&mut waiting, MAX_BATCH) => if count == 0 { break },
            _ = sleep_until(held_until.unwrap_or_else(Instant::now)), if held_until.is_some() => {
                held_until = None;
                held.sort_by_key(|request| request.seq);
                held.append(&mut waiting);
                waiting = std::mem::take(&mut held);
            }
            _ = sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() => {
                let now = Instant::now();
                let (expired, kept): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|r| r.wait_until <= now);
                waiting = kept;
                // A call the server refused for now fails with its words, others with the
                // reason their server gives (or the slot map's).
                let not_connected = match &cluster {
                    None => links[0].not_connected(),
                    Some(cluster) => cluster.not_connected(&links, &expired),
                };
                outbox.push_all(expired.into_iter().filter_map(|mut request| {
                    let err = request.refused.take().unwrap_or_else(|| not_connected.clone());
                    request.settled(Reply::Error(err))
                }));
            }
        }
        if let Some(cluster) = cluster.as_mut() {
            cluster.publish_changes();
        }
        if held_until.is_some() {
            // Their clock runs from now, as if written: held calls wait on the server too.
            let now = Instant::now();
            for request in &mut waiting {
                request.first_written.get_or_insert(now);
            }
            held.append(&mut waiting);
        }
        pipelining = waiting.len() > 1;
        if waiting.is_empty() {
            continue;
        }
        match cluster.as_mut() {
            None => send(&mut links[0], &mut waiting).await,
            Some(cluster) => {
                let mut parts: Vec<Vec<Request>> = Vec::new();
                let mut unrouted = Vec::new();
                for mut request in waiting.drain(..) {
                    match cluster.route(&mut request, &mut links) {
                        Ok(Some(node)) => {
                            if parts.len() <= node {
                                parts.resize_with(node + 1, Vec::new);
                            }
                            parts[node].push(request);
                        }
                        Ok(None) => unrouted.push(request),
                        Err(err) => outbox.push_all(request.settled(Reply::Error(err))),
                    }
                }
                if !unrouted.is_empty() {
                    cluster.want_refresh();
                }
                waiting = unrouted;
                for (node, mut part) in parts.into_iter().enumerate() {
                    if !part.is_empty() {
                        send(&mut links[node], &mut part).await;
                        waiting.append(&mut part);
                    }
                }
                waiting.sort_by_key(|request| request.seq);
            }
        }
    }
}

/// Writes `requests` on the link's connection, taking them out; without a usable one, they
/// stay and an attempt starts.
async fn send(link: &mut Link, requests: &mut Vec<Request>) {
    match link.usable() {
        // A connection that closed just before leaves the calls waiting for the next.
        Some(connection) => {
            let _ = connection.send_calls(requests).await;
        }
        None => {
            link.discard();
            link.start_attempt();
        }
    }
}

/// When the first waiting call gives up waiting for a connection. With one server, calls
/// that wait as long as the attempt under way get its outcome, and the reason it gives when
/// it fails.
fn give_up_at(links: &mut [Link], cluster: bool, waiting: &[Request]) -> Option<Instant> {
    let first = waiting.iter().map(|r| r.wait_until).min()?;
    if cluster {
        return Some(first);
    }
    let link = &mut links[0];
    if link.usable().is_some() {
        return None;
    }
    Some(first).filter(|at| link.attempt_ends().is_none_or(|end| end > *at + TIMER_TICK))
}

/// The first link whose connection attempt has ended, and how.
async fn any_attempt_done(links: &mut [Link]) -> (usize, Result<(), StoreError>) {
    poll_fn(|cx| {
        for (node, link) in links.iter_mut().enumerate() {
            if link.connecting() {
                if let Poll::Ready(outcome) = link.poll_attempt(cx) {
                    return Poll::Ready((node, outcome));
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// What changes a cluster's slot map.
enum News {
    /// The read under way has ended.
    Refreshed(Result<SlotMap, StoreError>),
    /// The blocking reads' pool was told a slot MOVED.
    Moved(Redirect),
    /// The blocking reads' pool could not reach a node.
    Unreachable,
}

/// The next news of the slot map: the read under way ending, or what the blocking reads'
/// pool found out of date.
async fn cluster_news(cluster: &mut Option<Cluster>) -> News {
    let news = poll_fn(|cx| {
        let Some(cluster) = cluster.as_mut() else {
            return Poll::Pending;
        };
        if let Poll::Ready(Some(notice)) = cluster.stale.poll_recv(cx) {
            return Poll::Ready(match notice {
                Some(redirect) => News::Moved(redirect),
                None => News::Unreachable,
            });
        }
        match cluster.refresh.as_mut() {
            Some(refresh) => Pin::new(refresh).poll(cx).map(|outcome| {
                News::Refreshed(outcome.unwrap_or_else(|e| {
                    Err(StoreError::new(
                        ErrorCode::Connection,
                        format!("reading the slot map stopped: {e}"),
                    ))
                }))
            }),
            None => Poll::Pending,
        }
    })
    .await;
    if let (News::Refreshed(_), Some(cluster)) = (&news, cluster.as_mut()) {
        cluster.refresh = None;
    }
    news
}

/// A call the server refused for now waits among the held calls, in submission order, until
/// `Request::hold` says to send it again; past its deadline it fails with the server's words
/// and `retryable`.
fn hold(
    mut request: Request,
    err: StoreError,
    command_timeout: Duration,
    held: &mut Vec<Request>,
    held_until: &mut Option<Instant>,
    outbox: &Outbox,
) {
    match request.hold(err, command_timeout) {
        Ok(at) => {
            *held_until = Some(held_until.map_or(at, |until| until.min(at)));
            held.push(request);
        }
        Err(err) => outbox.push_all(request.settled(Reply::Error(err))),
    }
}

fn fail(outbox: &Outbox, requests: impl Iterator<Item = Request>, err: &StoreError) {
    outbox.push_all(requests.filter_map(|request| request.settled(Reply::Error(err.clone()))));
}
