//! Redis, standalone or under Sentinel: a command router and a subscriber, each over its own
//! link to the server (the master the sentinels name, under Sentinel), and a pool of
//! connections for blocking reads, served by one I/O thread for the whole process.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::cluster::{self, MapView};
use super::connect::{Connector, NatFunction};
use super::connection::{Mode, Sink};
use super::link::Link;
use super::router::Cluster;
use super::sentinel::Switches;
use super::subscriber::Order;
use super::{blocking, router, shards, subscriber, Joint, Op, Request};
use crate::bridge::Outbox;
use crate::error::{ErrorCode, StoreError};
use crate::options::{RedisOptions, Timeouts};

pub struct RedisBackend {
    commands: UnboundedSender<Request>,
    subscriptions: UnboundedSender<Order>,
    blocking_reads: UnboundedSender<Request>,
    /// Dropped to end the blocking reads at once, before the adapter's other calls settle.
    stop_blocking_reads: RefCell<Option<oneshot::Sender<()>>>,
    timeouts: Timeouts,
    /// A cluster: calls of several keys are split by slot, scan cursors name a node.
    cluster: bool,
    /// Publishes go to shard channels (SPUBLISH).
    sharded_pubsub: bool,
    submitted: Cell<u64>,
    /// Under Sentinel, keeps the sentinel watcher going while the adapter lives.
    _switches: Switches,
}

impl RedisBackend {
    pub fn start(
        options: &RedisOptions,
        nat_function: Option<Box<dyn NatFunction>>,
        outbox: Arc<Outbox>,
    ) -> Result<Self, StoreError> {
        let connector = Arc::new(Connector::new(options, nat_function)?);
        let runtime = runtime()?;
        let timeouts = options.timeouts();
        let (commands, command_queue) = unbounded_channel();
        let (subscriptions, subscription_queue) = unbounded_channel();
        let (refused, refused_queue) = unbounded_channel();
        let (blocking_reads, blocking_queue) = unbounded_channel();
        let (stop_blocking_reads, stop) = oneshot::channel();
        // Taken before the watcher starts, which ends once nothing listens.
        let switches = connector.switches();
        if let Some(sentinels) = connector.sentinels() {
            runtime.spawn(sentinels.watch());
        }
        let command_sink = Sink {
            outbox: outbox.clone(),
            refused: Some(refused),
            dropped: None,
        };
        // A cluster's masters get links as the slot map names them; one server has one. The
        // blocking reads go by the router's slot map.
        // Pub/Sub: one subscriber (on any node of a cluster), or a cluster's shard channels
        // placed on a subscriber per master.
        let (
            command_links,
            cluster,
            blocking_servers,
            (subscriber_connector, shard_map, classic_map),
        ) = match &options.cluster {
            Some(nodes) => {
                let seeds = nodes
                    .iter()
                    .map(|node| (node.host.clone(), node.port as u16))
                    .collect();
                let (updates, map) = watch::channel(None);
                let (stale, notices) = unbounded_channel();
                let cluster = Cluster::new(
                    connector.clone(),
                    seeds,
                    timeouts,
                    command_sink,
                    updates,
                    notices,
                );
                let subscriber = Arc::new(connector.to_any_node(map.clone()));
                let classic = (!options.sharded_pubsub).then(|| map.clone());
                let view = MapView::new(connector.clone(), map, stale);
                let shards = options.sharded_pubsub.then(|| view.clone());
                (
                    Vec::new(),
                    Some(cluster),
                    blocking::Servers::Cluster(view),
                    (subscriber, shards, classic),
                )
            }
            None => {
                let link = Link::new(connector.clone(), timeouts, Mode::Commands, command_sink);
                (
                    vec![link],
                    None,
                    blocking::Servers::One(connector.clone()),
                    (connector.clone(), None, None),
                )
            }
        };
        runtime.spawn(blocking::serve(
            blocking_servers,
            timeouts,
            options.max_blocking_connections.max(1) as usize,
            blocking_queue,
            stop,
            outbox.clone(),
        ));
        let subscriber_link = Link::new(
            subscriber_connector,
            timeouts,
            Mode::Subscriber,
            Sink {
                outbox: outbox.clone(),
                refused: None,
                dropped: None,
            },
        );
        runtime.spawn(router::serve(
            command_links,
            cluster,
            timeouts,
            command_queue,
            refused_queue,
            outbox.clone(),
        ));
        match shard_map {
            Some(map) => runtime.spawn(shards::serve(map, timeouts, subscription_queue, outbox)),
            None => runtime.spawn(subscriber::serve(
                subscriber_link,
                None,
                classic_map,
                subscription_queue,
                outbox,
            )),
        };
        Ok(RedisBackend {
            commands,
            subscriptions,
            blocking_reads,
            stop_blocking_reads: RefCell::new(Some(stop_blocking_reads)),
            timeouts,
            cluster: options.cluster.is_some(),
            sharded_pubsub: options.cluster.is_some() && options.sharded_pubsub,
            submitted: Cell::new(0),
            _switches: switches,
        })
    }

    pub fn end_blocking_reads(&self) {
        self.stop_blocking_reads.borrow_mut().take();
    }

    pub fn submit(
        &self,
        id: u32,
        op: Op,
        key: &str,
        payload: &str,
        args: Vec<String>,
    ) -> Result<(), StoreError> {
        let queue = match op {
            Op::GroupRead { block: Some(_), .. } => &self.blocking_reads,
            _ => &self.commands,
        };
        let op = match op {
            Op::Publish if self.sharded_pubsub => Op::ShardPublish,
            op => op,
        };
        // In a cluster a cursor names the master it is on: `<node id>:<cursor>`.
        let cursor = match (op, self.cluster) {
            (Op::Scan { .. }, true) if payload != "0" => payload
                .split_once(':')
                .filter(|(id, _)| !id.is_empty())
                .map_or("", |(_, cursor)| cursor),
            _ => payload,
        };
        if matches!(op, Op::Scan { .. }) && cursor.parse::<u64>().is_err() {
            return Err(StoreError::invalid_argument(format!(
                "invalid scan cursor {payload:?}: pass '0' or the cursor a previous scan returned"
            )));
        }
        let wait_until = Instant::now() + self.timeouts.connect;
        let request = |op, key: String, payload: String, args, joint| {
            let seq = self.submitted.get() + 1;
            self.submitted.set(seq);
            Request {
                id,
                seq,
                op,
                key,
                payload,
                args,
                joint,
                wait_until,
                first_written: None,
                refusals: 0,
                refused: None,
                redirects: 0,
                ask: None,
                part: 0,
                scan_hop: None,
            }
        };
        if op == Op::GetMany && self.cluster {
            // MGET takes keys of one slot only: one per slot, its values put back in key order.
            let mut slots: Vec<(u16, Vec<String>, Vec<usize>)> = Vec::new();
            for (position, key) in args.into_iter().enumerate() {
                let slot = cluster::slot(key.as_bytes());
                let part = match slots.iter().position(|(s, _, _)| *s == slot) {
                    Some(i) => i,
                    None => {
                        slots.push((slot, Vec::new(), Vec::new()));
                        slots.len() - 1
                    }
                };
                slots[part].1.push(key);
                slots[part].2.push(position);
            }
            let joint = Joint::gathering(id, slots.iter().map(|(_, _, at)| at.clone()).collect());
            for (part, (_, keys, _)) in slots.into_iter().enumerate() {
                let first = keys.first().cloned().unwrap_or_default();
                let mut sent =
                    request(Op::GetMany, first, String::new(), keys, Some(joint.clone()));
                sent.part = part;
                queue.send(sent).map_err(|_| StoreError::closed())?;
            }
            return Ok(());
        }
        if op == Op::SetMany
            && (self.cluster
                || args
                    .chunks(3)
                    .any(|entry| entry.get(2).is_some_and(|ttl| !ttl.is_empty())))
        {
            // MSET sets no TTL: entries with one go as SETs of their own, pipelined in entry
            // order with MSETs of the runs between them, so a key given twice ends as the last
            // entry says, as it would with one MSET. In a cluster, an MSET takes keys of one
            // slot only: the entries are grouped by slot first, in entry order within each.
            let groups = if self.cluster {
                group_by_slot(args)
            } else {
                vec![args]
            };
            let parts: Vec<Part> = groups.into_iter().flat_map(split_set_many).collect();
            let joint = Joint::new(id, parts.len());
            for part in parts {
                let sent = match part {
                    // Routed by its first key: all of them share its slot in a cluster.
                    Part::Run(entries) => request(
                        Op::SetMany,
                        entries.first().cloned().unwrap_or_default(),
                        String::new(),
                        entries,
                        Some(joint.clone()),
                    ),
                    Part::Expiring { key, value, ttl } => request(
                        Op::Set { ttl: Some(ttl) },
                        key,
                        value,
                        Vec::new(),
                        Some(joint.clone()),
                    ),
                };
                queue.send(sent).map_err(|_| StoreError::closed())?;
            }
            return Ok(());
        }
        let sent = request(op, key.to_owned(), payload.to_owned(), args, None);
        let sent = match op {
            Op::Subscribe | Op::Unsubscribe => self.subscriptions.send(Order::Call(sent)).is_ok(),
            _ => queue.send(sent).is_ok(),
        };
        sent.then_some(()).ok_or_else(StoreError::closed)
    }
}

enum Part {
    /// Entries without a TTL, as `SetMany` takes them.
    Run(Vec<String>),
    Expiring {
        key: String,
        value: String,
        ttl: Duration,
    },
}

/// `SetMany`'s `[key, value, ttlMs]` triples grouped by the slot of their key, in entry order
/// within each group.
fn group_by_slot(args: Vec<String>) -> Vec<Vec<String>> {
    let mut groups: Vec<(u16, Vec<String>)> = Vec::new();
    let mut args = args.into_iter();
    while let (Some(key), Some(value), Some(ttl)) = (args.next(), args.next(), args.next()) {
        let slot = cluster::slot(key.as_bytes());
        let group = match groups.iter().position(|(s, _)| *s == slot) {
            Some(i) => i,
            None => {
                groups.push((slot, Vec::new()));
                groups.len() - 1
            }
        };
        groups[group].1.extend([key, value, ttl]);
    }
    groups.into_iter().map(|(_, entries)| entries).collect()
}

/// `SetMany`'s `[key, value, ttlMs]` triples as runs of entries without a TTL and single
/// entries with one, in entry order.
fn split_set_many(args: Vec<String>) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut run = Vec::new();
    let mut args = args.into_iter();
    while let (Some(key), Some(value), Some(ttl)) = (args.next(), args.next(), args.next()) {
        match ttl.parse::<u64>() {
            Ok(ms) if ms > 0 => {
                if !run.is_empty() {
                    parts.push(Part::Run(std::mem::take(&mut run)));
                }
                parts.push(Part::Expiring {
                    key,
                    value,
                    ttl: Duration::from_millis(ms),
                });
            }
            _ => run.extend([key, value, ttl]),
        }
    }
    if !run.is_empty() {
        parts.push(Part::Run(run));
    }
    parts
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
