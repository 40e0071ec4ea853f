//! Blocking stream reads (`XREADGROUP ... BLOCK`). The server holds such a read until an entry
//! comes or its time is up, and answers nothing else on that connection meanwhile, so each
//! one runs on a connection of its own, lent from a pool: it grows with the reads waiting at
//! once up to a limit (past it, reads wait for a connection within their connect budget), and
//! a connection idle for `IDLE` is closed. The adapter's other calls never wait behind a read.
//! In a cluster each read goes to the master of its stream's slot, as the router's slot map
//! says, and the pool keeps connections to each master it has read from.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use super::cluster::{MapView, MAX_REDIRECTS};
use super::connect::{Connector, Endpoint};
use super::connection::{Connection, Mode, Sink};
use super::link::backoff;
use super::sentinel::{next_switch, Switch, Switches};
use super::{Op, Request};
use crate::bridge::{Outbox, Reply};
use crate::error::{ErrorCode, StoreError};
use crate::options::Timeouts;

/// A connection unused this long is closed.
const IDLE: Duration = Duration::from_secs(30);

/// Where the reads go.
pub enum Servers {
    /// The one server, or the master the sentinels name.
    One(Arc<Connector>),
    /// The master of each read's slot.
    Cluster(MapView),
}

impl Servers {
    /// The server `request` goes to (`Some(None)`: the one server), if it is known yet.
    fn destination(&mut self, request: &Request) -> Option<Option<(String, u16)>> {
        match self {
            Servers::One(_) => Some(None),
            Servers::Cluster(view) => view.node_for(request).map(Some),
        }
    }

    fn connector(&self, node: Option<&(String, u16)>) -> Arc<Connector> {
        match (self, node) {
            (Servers::Cluster(view), Some((host, port))) => {
                Arc::new(view.template.to_node(host, *port))
            }
            (Servers::One(connector), _)
            | (
                Servers::Cluster(MapView {
                    template: connector,
                    ..
                }),
                None,
            ) => connector.clone(),
        }
    }

    /// In a cluster, a view of the map for a lent read to watch.
    fn view(&self) -> Option<MapView> {
        match self {
            Servers::One(_) => None,
            Servers::Cluster(view) => Some(view.clone()),
        }
    }

    fn template(&self) -> &Arc<Connector> {
        match self {
            Servers::One(connector) => connector,
            Servers::Cluster(view) => &view.template,
        }
    }

    /// Once a cluster's slot map changes.
    async fn changed(&mut self) {
        match self {
            Servers::One(_) => std::future::pending().await,
            Servers::Cluster(view) => view.changed().await,
        }
    }
}

/// What a lent connection's task gives back.
enum Returned {
    /// The read is answered (or failed); the connection, if it can serve another.
    Connection(Option<Connection>),
    /// The connection had closed before the read was written: it waits for another.
    Unsent(Request),
    /// A cluster node could not be reached: the read goes where the slot map says next.
    Unreachable(Request, StoreError),
}

pub async fn serve(
    mut servers: Servers,
    timeouts: Timeouts,
    limit: usize,
    mut queue: UnboundedReceiver<Request>,
    mut stop: oneshot::Receiver<()>,
    outbox: Arc<Outbox>,
) {
    let (refused, mut refusals) = unbounded_channel();
    let sink = Sink {
        outbox: outbox.clone(),
        refused: Some(refused),
        dropped: None,
    };
    let mut switches = servers.template().switches();
    // Most recently used last, so the oldest is closed first.
    let mut idle: Vec<(Connection, Instant)> = Vec::new();
    let mut waiting: VecDeque<Request> = VecDeque::new();
    let mut lent: JoinSet<Returned> = JoinSet::new();
    // Reads the server refused for now (LOADING, BUSY), each waiting out its backoff.
    let mut delayed: JoinSet<Request> = JoinSet::new();
    loop {
        // Whether the lent connections that were ready to come back have been taken back.
        let mut looked_back = false;
        // Reads that wait for a connection, or for the slot map to name their node.
        let mut unserved = VecDeque::new();
        while let Some(request) = waiting.pop_front() {
            let Some(node) = servers.destination(&request) else {
                unserved.push_back(request);
                continue;
            };
            idle.retain(|(connection, _)| connection.is_usable());
            let usable = idle.iter().rposition(|(connection, _)| match &node {
                Some((host, port)) => connection.endpoint().is_at(host, *port),
                None => true,
            });
            match usable {
                Some(at) => {
                    let (connection, _) = idle.remove(at);
                    lent.spawn(read(
                        connection,
                        request,
                        servers.template().switches(),
                        servers.view(),
                    ));
                }
                // A read's reply reaches JS only after its connection's task is woken to
                // give it back, so a read JS makes at once finds that task ready to run: let
                // it, rather than open a connection beside it.
                None if !lent.is_empty() && !looked_back => {
                    looked_back = true;
                    waiting.push_front(request);
                    tokio::task::yield_now().await;
                    while let Some(returned) = lent.try_join_next() {
                        take_back(
                            returned,
                            &mut idle,
                            &mut waiting,
                            &mut delayed,
                            &servers,
                            &outbox,
                        );
                    }
                }
                None if lent.len() < limit => {
                    // Idle connections to other nodes make room (in a cluster).
                    if lent.len() + idle.len() >= limit && !idle.is_empty() {
                        idle.remove(0);
                    }
                    lent.spawn(open_and_read(
                        servers.connector(node.as_ref()),
                        servers.view(),
                        timeouts,
                        sink.clone(),
                        request,
                    ));
                }
                None => unserved.push_back(request),
            }
        }
        waiting = unserved;
        let close_idle_at = idle.first().map(|(_, since)| *since + IDLE);
        let give_up_at = waiting.iter().map(|request| request.wait_until).min();
        tokio::select! {
            // Connections given back first: a read that follows the one just answered reuses
            // its connection rather than opening another.
            biased;
            // The adapter is closing (or gone): JS has rejected the reads.
            _ = &mut stop => break,
            Some(returned) = lent.join_next() => take_back(returned, &mut idle, &mut waiting, &mut delayed, &servers, &outbox),
            // A cluster's slot map read anew: reads waiting for it may go, and idle
            // connections to nodes that serve no slots now close.
            _ = servers.changed() => {
                if let Servers::Cluster(view) = &servers {
                    idle.retain(|(connection, _)| view.serves(connection.endpoint()));
                }
            }
            Some(Ok(request)) = delayed.join_next() => waiting.push_back(request),
            // Under Sentinel: idle connections to the old master close (lent ones end their
            // reads themselves).
            switch = next_switch(&mut switches) => {
                idle.retain(|(connection, _)| !connection.endpoint().is_not(&switch.master));
            }
            request = queue.recv() => match request {
                Some(request) => waiting.push_back(request),
                None => break,
            },
            Some((mut request, err)) = refusals.recv() => match (&err.redirect, &mut servers) {
                (Some(redirect), Servers::Cluster(view)) => {
                    request.redirects += 1;
                    if request.redirects > MAX_REDIRECTS {
                        outbox.push_all(request.settled(Reply::Error(err)));
                    } else {
                        view.redirected(&mut request, redirect);
                        // It may wait for the node named to be connected, as a new read would.
                        request.wait_until = request.wait_until.max(Instant::now() + timeouts.connect);
                        block_for_what_is_left(&mut request);
                        waiting.push_back(request);
                    }
                }
                // UNBLOCKED: its node was demoted, or its stream's slot left it; it took nothing.
                (None, Servers::Cluster(_)) if err.message.starts_with("UNBLOCKED") => {
                    request.redirects += 1;
                    if request.redirects > MAX_REDIRECTS {
                        outbox.push_all(request.settled(Reply::Error(err)));
                    } else {
                        request.wait_until = request.wait_until.max(Instant::now() + timeouts.connect);
                        block_for_what_is_left(&mut request);
                        retry_elsewhere(request, err, &mut delayed, &servers, &outbox);
                    }
                }
                _ => match request.hold(err, timeouts.command) {
                Ok(at) => {
                    delayed.spawn(async move {
                        sleep_until(at).await;
                        request
                    });
                }
                Err(err) => outbox.push_all(request.settled(Reply::Error(err))),
            }},
            _ = sleep_until(close_idle_at.unwrap_or_else(Instant::now)), if close_idle_at.is_some() => {
                idle.remove(0);
            }
            _ = sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() => {
                let now = Instant::now();
                let (expired, kept) = waiting.drain(..).partition(|r| r.wait_until <= now);
                waiting = kept;
                let err = pool_full(limit, timeouts.connect);
                let expired: VecDeque<Request> = expired;
                let failures: Vec<_> = expired
                    .into_iter()
                    .map(|request| {
                        let unrouted = servers.destination(&request).is_none();
                        let err = match (&request.refused, &servers) {
                            (Some(refused), _) => refused.clone(),
                            // No node to send it to: that is why it waited, not the pool.
                            (None, Servers::Cluster(view)) if unrouted => {
                                view.unrouted(&request.key, timeouts.connect)
                            }
                            (None, _) => err.clone(),
                        };
                        (request, err)
                    })
                    .collect();
                outbox.push_all(failures.into_iter().filter_map(|(request, err)| {
                    request.settled(Reply::Error(err))
                }));
            }
        }
    }
    // Reads end at once: dropping the lent and idle connections aborts their readers, so the
    // server sees them close and hands out nothing more to them.
}

/// What a lent connection's task gave back: an idle connection, or a read to send again (a
/// little later when its cluster node could not be reached, and the router is told).
fn take_back(
    returned: Result<Returned, tokio::task::JoinError>,
    idle: &mut Vec<(Connection, Instant)>,
    waiting: &mut VecDeque<Request>,
    delayed: &mut JoinSet<Request>,
    servers: &Servers,
    outbox: &Outbox,
) {
    match returned {
        Ok(Returned::Connection(Some(connection))) => idle.push((connection, Instant::now())),
        Ok(Returned::Connection(None)) | Err(_) => {}
        Ok(Returned::Unsent(request)) => waiting.push_front(request),
        Ok(Returned::Unreachable(request, err)) => {
            retry_elsewhere(request, err, delayed, servers, outbox)
        }
    }
}

/// A cluster's read that did not run where it went: it goes where the slot map says after a
/// backoff (the router reads the map again meanwhile), or fails with `err` past its wait.
fn retry_elsewhere(
    mut request: Request,
    err: StoreError,
    delayed: &mut JoinSet<Request>,
    servers: &Servers,
    outbox: &Outbox,
) {
    if let Servers::Cluster(view) = servers {
        view.unreachable();
    }
    let wait = backoff(request.refusals);
    if Instant::now() + wait < request.wait_until {
        request.refusals += 1;
        delayed.spawn(async move {
            sleep(wait).await;
            request
        });
    } else {
        outbox.push_all(request.settled(Reply::Error(err)));
    }
}

/// Sends the read on `connection` and gives the connection back once it is answered. Under
/// Sentinel, a read waiting on a master that has been failed over ends at once: no entry will
/// come to it there; so does one in a cluster once the slot map names another master for
/// its stream (a hung master never answers).
async fn read(
    mut connection: Connection,
    request: Request,
    mut switches: Switches,
    mut cluster: Option<MapView>,
) -> Returned {
    let key = request.key.clone();
    let mut batch = vec![request];
    if connection.send_calls(&mut batch).await.is_err() {
        return match batch.pop() {
            Some(request) => Returned::Unsent(request),
            None => Returned::Connection(None),
        };
    }
    let answered = connection.idle();
    tokio::pin!(answered);
    loop {
        tokio::select! {
            _ = &mut answered => break,
            switch = next_switch(&mut switches) => {
                if connection.endpoint().is_not(&switch.master) {
                    connection.abort(moved(connection.endpoint().describe(), &switch));
                    return Returned::Connection(None);
                }
            }
            owner = slot_moved(&mut cluster, connection.endpoint(), &key) => {
                connection.abort(StoreError {
                    retryable: true,
                    ..StoreError::new(
                        ErrorCode::Connection,
                        format!(
                            "{}: the cluster moved this stream's slot to {}:{} while the blocking \
                             read waited; it may have taken entries there",
                            connection.endpoint().describe(),
                            owner.0,
                            owner.1
                        ),
                    )
                });
                return Returned::Connection(None);
            }
        }
    }
    Returned::Connection(connection.is_usable().then_some(connection))
}

/// In a cluster, once the slot map names a master other than `endpoint` for `key`'s slot.
async fn slot_moved(
    cluster: &mut Option<MapView>,
    endpoint: &Endpoint,
    key: &str,
) -> (String, u16) {
    let Some(view) = cluster else {
        return std::future::pending().await;
    };
    loop {
        view.changed().await;
        if let Some(owner) = view.master_of(key) {
            if !endpoint.is_at(&owner.0, owner.1) {
                return owner;
            }
        }
    }
}

fn moved(from: &str, switch: &Switch) -> StoreError {
    StoreError {
        retryable: true,
        ..StoreError::new(
            ErrorCode::Connection,
            format!(
                "{from}: the sentinels failed this master over to {} while the blocking read \
                 waited; it may have taken entries there",
                switch.master
            ),
        )
    }
}

/// A new connection for the read, within what is left of its connect budget; the read fails
/// with the reason when none can be made. A server refusing connections for now (maxclients)
/// is tried again with backoff within that budget, as the router does; a cluster node that
/// cannot be reached is given back, for the read to go where the slot map says next.
async fn open_and_read(
    connector: Arc<Connector>,
    cluster: Option<MapView>,
    timeouts: Timeouts,
    sink: Sink,
    request: Request,
) -> Returned {
    let mut failures = 0;
    let mut switches = connector.switches();
    loop {
        let budget = request
            .wait_until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        // An attempt under way when the master moves may be going to the old one.
        let connect = connector.connect_within(budget);
        tokio::pin!(connect);
        let attempt = loop {
            tokio::select! {
                attempt = &mut connect => break Some(attempt),
                switch = next_switch(&mut switches) => if switch.moved { break None },
            }
        };
        // The master moved during the attempt: start over.
        let Some(attempt) = attempt else { continue };
        match attempt {
            Ok((stream, endpoint)) => {
                let connection =
                    Connection::open(stream, Mode::Blocking, sink, timeouts.command, endpoint);
                return read(connection, request, switches, cluster).await;
            }
            Err(err) if cluster.is_some() && err.code == ErrorCode::Connection => {
                return Returned::Unreachable(request, err)
            }
            Err(err)
                if err.retryable && Instant::now() + backoff(failures) < request.wait_until =>
            {
                sleep(backoff(failures)).await;
                failures += 1;
            }
            Err(err) => {
                sink.outbox.push_all(request.settled(Reply::Error(err)));
                return Returned::Connection(None);
            }
        }
    }
}

/// A read sent again (redirected, or let go by the server) blocks for what is left of its
/// `blockMs`, not all of it again (at least 1 ms: `BLOCK 0` would wait for ever).
fn block_for_what_is_left(request: &mut Request) {
    if let (
        Op::GroupRead {
            count,
            block: Some(block),
        },
        Some(first),
    ) = (request.op, request.first_written)
    {
        let left = block
            .saturating_sub(first.elapsed())
            .max(Duration::from_millis(1));
        request.op = Op::GroupRead {
            count,
            block: Some(left),
        };
    }
}

fn pool_full(limit: usize, waited: Duration) -> StoreError {
    StoreError {
        retryable: true,
        ..StoreError::new(
            ErrorCode::Connection,
            format!(
                "no connection for a blocking read came free within connectTimeout ({} ms): \
                 all {limit} (maxBlockingConnections) are waiting on reads",
                waited.as_millis()
            ),
        )
    }
}
