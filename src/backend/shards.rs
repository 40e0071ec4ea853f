//! Sharded Pub/Sub in a cluster (`cluster.pubsub: 'sharded'`): a shard channel lives on the
//! master of its slot, so there is a subscriber (see `subscriber`) per master, and each
//! channel is handed to the master the router's slot map names. A channel follows its slot:
//! when the map names another master (a failover, a resharding), when a master answers a
//! subscribe with `-MOVED`, or when it pushes `sunsubscribe` (its slot has left it).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::time::{sleep_until, Instant};

use super::cluster::{self, MapView, MAX_REDIRECTS};
use super::connection::{Mode, Sink};
use super::link::Link;
use super::subscriber::{self, Handback, Order, Shard};
use super::{Op, Request};
use crate::bridge::{Outbox, Reply};
use crate::error::{ErrorCode, StoreError};
use crate::options::Timeouts;

type Node = (String, u16);

struct Shards {
    map: MapView,
    timeouts: Timeouts,
    outbox: Arc<Outbox>,
    /// Each master's subscriber, made when a channel first goes there.
    masters: HashMap<Node, UnboundedSender<Order>>,
    /// Where each channel wanted is subscribed (or being subscribed).
    placed: HashMap<String, Node>,
    /// Subscribe calls whose slot no master serves yet, as far as the map says.
    waiting: Vec<Request>,
    /// Channels a master let go of, waiting for the map to say where their slot went.
    orphans: Vec<String>,
    /// Redirections of adopted channels since the map was last read: past `MAX_REDIRECTS`
    /// (masters that disagree mid-migration) a channel waits for the next read.
    bounces: HashMap<String, u8>,
    handback: UnboundedSender<(Node, Handback)>,
}

pub async fn serve(
    map: MapView,
    timeouts: Timeouts,
    mut queue: UnboundedReceiver<Order>,
    outbox: Arc<Outbox>,
) {
    let (handback, mut handbacks) = unbounded_channel();
    let mut shards = Shards {
        map,
        timeouts,
        outbox,
        masters: HashMap::new(),
        placed: HashMap::new(),
        waiting: Vec::new(),
        orphans: Vec::new(),
        bounces: HashMap::new(),
        handback,
    };
    loop {
        let give_up_at = shards.waiting.iter().map(|r| r.wait_until).min();
        tokio::select! {
            order = queue.recv() => match order {
                Some(Order::Call(request)) if request.op == Op::Subscribe => shards.place(request),
                Some(Order::Call(request)) => shards.unsubscribe(request),
                // Only the subscribers are given these.
                Some(Order::Adopt(_) | Order::Release(_)) => {}
                // The adapter is closing: the subscribers end as their queues close.
                None => break,
            },
            Some((from, handback)) = handbacks.recv() => shards.handed_back(from, handback),
            _ = shards.map.changed() => shards.follow_map(),
            _ = sleep_until(give_up_at.unwrap_or_else(Instant::now)), if give_up_at.is_some() => {
                shards.give_up_waiting();
            }
        }
    }
}

impl Shards {
    /// A subscribe goes to the master of its channel's slot, or waits for the map to name one.
    fn place(&mut self, request: Request) {
        match self.map.master_of(&request.key) {
            Some(node) => {
                self.placed.insert(request.key.clone(), node.clone());
                self.send(&node, Order::Call(request));
            }
            None => {
                self.map.unreachable();
                self.waiting.push(request);
            }
        }
    }

    fn unsubscribe(&mut self, request: Request) {
        match self.placed.remove(&request.key) {
            Some(node) => self.send(&node, Order::Call(request)),
            None => {
                self.orphans.retain(|channel| *channel != request.key);
                let waiting = std::mem::take(&mut self.waiting);
                for subscribe in waiting {
                    if subscribe.key == request.key {
                        self.outbox.complete(subscribe.id, Reply::Null);
                    } else {
                        self.waiting.push(subscribe);
                    }
                }
                self.outbox.complete(request.id, Reply::Null);
            }
        }
    }

    /// What the subscriber of `from` handed back; only about channels placed there now (one
    /// unsubscribed or placed elsewhere meanwhile is left as it is).
    fn handed_back(&mut self, from: Node, handback: Handback) {
        let here = |channel: &String| self.placed.get(channel) == Some(&from);
        match handback {
            Handback::Redirected(request, channel, _) if !here(&channel) => {
                // Unsubscribed meanwhile: the subscribe settles, and goes nowhere.
                if let Some(request) = request {
                    self.outbox.complete(request.id, Reply::Null);
                }
            }
            Handback::Redirected(request, channel, redirect) => {
                self.placed.remove(&channel);
                if redirect.ask {
                    // The slot is being migrated: the channel goes where the map says once
                    // it is done.
                    self.map.unreachable();
                    match request {
                        Some(request) => self.waiting.push(*request),
                        None => self.orphans.push(channel),
                    }
                    return;
                }
                self.map.moved(&redirect);
                let node = (redirect.host.clone(), redirect.port);
                match request {
                    Some(mut request) => {
                        request.redirects += 1;
                        if request.redirects > MAX_REDIRECTS {
                            let err = StoreError {
                                retryable: true,
                                ..StoreError::new(
                                    ErrorCode::Redis,
                                    format!(
                                        "MOVED {} {}:{}: redirected more than {MAX_REDIRECTS} times",
                                        redirect.slot, redirect.host, redirect.port
                                    ),
                                )
                            };
                            self.outbox.complete(request.id, Reply::Error(err));
                            return;
                        }
                        self.placed.insert(channel, node.clone());
                        self.send(&node, Order::Call(*request));
                    }
                    None => {
                        let bounces = self.bounces.entry(channel.clone()).or_default();
                        *bounces += 1;
                        if *bounces > MAX_REDIRECTS {
                            self.map.unreachable();
                            self.orphans.push(channel);
                            return;
                        }
                        self.placed.insert(channel.clone(), node.clone());
                        self.send(&node, Order::Adopt(vec![channel]));
                    }
                }
            }
            Handback::Dropped(channel) if here(&channel) => {
                self.placed.remove(&channel);
                self.map.unreachable();
                self.orphans.push(channel);
            }
            Handback::Refused(channel) if here(&channel) => {
                self.placed.remove(&channel);
            }
            Handback::Dropped(_) | Handback::Refused(_) => {}
            Handback::Unreachable => self.map.unreachable(),
        }
    }

    /// The map changed: channels whose slot another master serves now move there, and
    /// channels waiting for a master go to the one named.
    fn follow_map(&mut self) {
        self.bounces.clear();
        let mut moves: HashMap<(Node, Node), Vec<String>> = HashMap::new();
        for (channel, node) in self.placed.iter_mut() {
            if let Some(owner) = self.map.master_of(channel).filter(|owner| owner != node) {
                let from = std::mem::replace(node, owner.clone());
                moves
                    .entry((from, owner))
                    .or_default()
                    .push(channel.clone());
            }
        }
        for ((from, to), channels) in moves {
            self.send(&from, Order::Release(channels.clone()));
            self.send(&to, Order::Adopt(channels));
        }
        let mut adopted: HashMap<Node, Vec<String>> = HashMap::new();
        for channel in std::mem::take(&mut self.orphans) {
            match self.map.master_of(&channel) {
                Some(node) => {
                    self.placed.insert(channel.clone(), node.clone());
                    adopted.entry(node).or_default().push(channel);
                }
                None => self.orphans.push(channel),
            }
        }
        for (node, channels) in adopted {
            self.send(&node, Order::Adopt(channels));
        }
        for request in std::mem::take(&mut self.waiting) {
            self.place(request);
        }
    }

    fn give_up_waiting(&mut self) {
        let now = Instant::now();
        let (expired, kept) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|request| request.wait_until <= now);
        self.waiting = kept;
        for request in expired {
            let err = StoreError::new(
                ErrorCode::Connection,
                format!(
                    "no master serves slot {} of shard channel {:?} within connectTimeout ({} ms)",
                    cluster::slot(request.key.as_bytes()),
                    request.key,
                    self.timeouts.connect.as_millis()
                ),
            );
            self.outbox.complete(request.id, Reply::Error(err));
        }
    }

    /// Gives `order` to the subscriber of `node`, made if it is the first.
    fn send(&mut self, node: &Node, order: Order) {
        let queue = self.masters.entry(node.clone()).or_insert_with(|| {
            let (queue, orders) = unbounded_channel();
            let (dropped, dropped_channels) = unbounded_channel();
            let connector = Arc::new(self.map.template.to_node(&node.0, node.1));
            let sink = Sink {
                outbox: self.outbox.clone(),
                refused: None,
                dropped: Some(dropped),
            };
            let link = Link::new(connector, self.timeouts, Mode::Subscriber, sink);
            let shard = Shard {
                node: node.clone(),
                handback: self.handback.clone(),
                dropped: dropped_channels,
            };
            tokio::spawn(subscriber::serve(
                link,
                Some(shard),
                None,
                orders,
                self.outbox.clone(),
            ));
            queue
        });
        let _ = queue.send(order);
    }
}
