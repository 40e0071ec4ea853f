//! Redis Cluster: which node serves a key. Keys hash to one of 16,384 slots (CRC16 of the key,
//! or of its `{hash tag}`), and the slot map (`CLUSTER SLOTS`) says which master serves each;
//! it is read from whichever known node answers first, within one `connectTimeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use super::connect::{ask_by, Connector, Endpoint};
use super::resp::{self, Frame};
use super::Request;
use crate::error::{ErrorCode, Redirect, StoreError};

pub const SLOTS: usize = 16384;
/// Redirections a call follows before it fails.
pub const MAX_REDIRECTS: u8 = 16;

/// The slot of `key`: CRC16 (XMODEM) of the key, or of the part between the first `{` and the
/// first `}` after it when that part is not empty, modulo 16,384.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Which master serves each slot, as one node told it.
#[derive(Clone)]
pub struct SlotMap {
    /// Masters as `host:port`, in the order first seen.
    pub nodes: Vec<(String, u16)>,
    /// For each slot, the index in `nodes` of its master, if any serves it.
    owners: Box<[Option<u16>]>,
    /// Each node's id, where `CLUSTER SLOTS` gave it (a scan's cursor names the node by it).
    ids: Vec<Option<String>>,
}

impl SlotMap {
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.owners[slot as usize].map(usize::from)
    }

    /// The masters that serve slots now.
    pub fn serving(&self) -> Vec<(String, u16)> {
        (0..self.nodes.len())
            .filter(|node| self.serves(*node))
            .map(|node| self.nodes[node].clone())
            .collect()
    }

    /// Whether `endpoint` is a master this map knew that serves no slot now (failed over).
    pub fn no_longer_serves(&self, endpoint: &Endpoint) -> bool {
        self.nodes
            .iter()
            .position(|(host, port)| endpoint.is_at(host, *port))
            .is_some_and(|node| !self.serves(node))
    }

    /// Whether the node at index `node` serves any slot now.
    pub fn serves(&self, node: usize) -> bool {
        self.owners.contains(&Some(node as u16))
    }

    /// The index of the node at `host:port`, added if new.
    pub fn node_index(&mut self, host: &str, port: u16) -> usize {
        match self.nodes.iter().position(|(h, p)| h == host && *p == port) {
            Some(i) => i,
            None => {
                self.nodes.push((host.to_owned(), port));
                self.ids.push(None);
                self.nodes.len() - 1
            }
        }
    }

    /// The masters that serve slots now, in the order of their ids: the order a scan walks
    /// them in.
    pub fn scan_order(&self) -> Vec<(usize, &str)> {
        let mut serving: Vec<(usize, &str)> = (0..self.nodes.len())
            .filter(|node| self.serves(*node))
            .filter_map(|node| Some((node, self.ids.get(node)?.as_deref()?)))
            .collect();
        serving.sort_by(|a, b| a.1.cmp(b.1));
        serving
    }

    /// A MOVED reply: this slot is now served by that node. Whether that changed the map.
    pub fn moved(&mut self, slot: u16, host: &str, port: u16) -> bool {
        let node = Some(self.node_index(host, port) as u16);
        let changed = self.owners[slot as usize] != node;
        self.owners[slot as usize] = node;
        changed
    }

    /// Takes the owners of a map read afresh, keeping the index of every node known (links
    /// are kept by it), and adding the new ones. Whether any slot changed master.
    pub fn adopt(&mut self, fresh: SlotMap) -> bool {
        let indexes: Vec<u16> = fresh
            .nodes
            .iter()
            .map(|(host, port)| self.node_index(host, *port) as u16)
            .collect();
        let mut changed = false;
        for (owner, fresh) in self.owners.iter_mut().zip(fresh.owners.iter()) {
            let fresh = fresh.map(|node| indexes[usize::from(node)]);
            changed |= *owner != fresh;
            *owner = fresh;
        }
        for (i, id) in fresh.ids.into_iter().enumerate() {
            if let (Some(id), Some(&node)) = (id, indexes.get(i)) {
                self.ids[usize::from(node)] = Some(id);
            }
        }
        changed
    }

    /// Reads `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`. A
    /// node that announces no host (`""`, or `?` for an unknown endpoint) is the one asked.
    fn from_reply(items: &[Frame], bytes: &[u8], asked: (&str, u16)) -> Option<SlotMap> {
        let mut map = SlotMap {
            nodes: Vec::new(),
            owners: vec![None; SLOTS].into_boxed_slice(),
            ids: Vec::new(),
        };
        for range in items {
            let Frame::Array(parts) = range else {
                return None;
            };
            let [Frame::Integer(start), Frame::Integer(end), Frame::Array(master), ..] =
                parts.as_slice()
            else {
                return None;
            };
            let [Frame::Bulk(host), Frame::Integer(port), ..] = master.as_slice() else {
                return None;
            };
            let host = match resp::text(bytes, host) {
                host if host.is_empty() || host == "?" => asked.0.to_owned(),
                host => host,
            };
            let port = u16::try_from(*port).ok()?;
            let node = map.node_index(&host, port) as u16;
            if let Some(Frame::Bulk(id)) = master.get(2) {
                map.ids[usize::from(node)] = Some(resp::text(bytes, id));
            }
            let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
            for owner in map.owners.get_mut(start..=end)? {
                *owner = Some(node);
            }
        }
        Some(map)
    }
}

/// What the router learns of the slot map's changes, for whoever else routes by it.
pub type MapUpdates = watch::Sender<Option<Arc<SlotMap>>>;
pub type MapReceiver = watch::Receiver<Option<Arc<SlotMap>>>;

/// What the router is told by whoever else routes by the map: a slot `MOVED` (`Some`), or a
/// node that could not be reached (`None`).
pub type StaleNotices = UnboundedSender<Option<Redirect>>;

/// The slot map as the router last read it, for the blocking reads' pool and the shard
/// subscribers, which route by it and tell the router what they find out of date.
#[derive(Clone)]
pub struct MapView {
    /// Connects to any node, with the adapter's TLS and credentials.
    pub template: Arc<Connector>,
    updates: MapReceiver,
    current: Option<Arc<SlotMap>>,
    stale: StaleNotices,
}

impl MapView {
    pub fn new(template: Arc<Connector>, updates: MapReceiver, stale: StaleNotices) -> Self {
        MapView {
            template,
            updates,
            current: None,
            stale,
        }
    }

    /// The node `request` goes to: the one an ASK named, or its key's master; `None` until
    /// the map is read, or while no master serves the slot.
    pub fn node_for(&mut self, request: &Request) -> Option<(String, u16)> {
        match request.ask.as_deref() {
            Some(asked) => Some(asked.clone()),
            None => self.master_of(&request.key),
        }
    }

    /// The master serving the slot of `key` (or of a shard channel), if the map says.
    pub fn master_of(&mut self, key: &str) -> Option<(String, u16)> {
        if self.updates.has_changed().unwrap_or(false) {
            self.current = self.updates.borrow_and_update().clone();
        }
        let map = self.current.as_deref()?;
        let node = map.owner(slot(key.as_bytes()))?;
        map.nodes.get(node).cloned()
    }

    /// Whether the node `endpoint` reaches serves slots now, as far as the map says.
    pub fn serves(&self, endpoint: &Endpoint) -> bool {
        self.current.as_deref().is_none_or(|map| {
            map.serving()
                .iter()
                .any(|(host, port)| endpoint.is_at(host, *port))
        })
    }

    /// Why a call for `key` found no node within `waited`.
    pub fn unrouted(&self, key: &str, waited: Duration) -> StoreError {
        StoreError::new(
            ErrorCode::Connection,
            match &self.current {
                Some(_) => format!(
                    "no master serves slot {} (the cluster is down there, or resharding) within connectTimeout ({} ms)",
                    slot(key.as_bytes()),
                    waited.as_millis()
                ),
                None => format!(
                    "no connection within connectTimeout ({} ms): the slot map could not be read yet",
                    waited.as_millis()
                ),
            },
        )
    }

    /// A redirection of one of its reads: MOVED changes the slot's master here at once and
    /// tells the router; ASK sends that read there once.
    pub fn redirected(&mut self, request: &mut Request, redirect: &Redirect) {
        if redirect.ask {
            request.ask = Some(Box::new((redirect.host.clone(), redirect.port)));
            return;
        }
        request.ask = None;
        self.moved(redirect);
    }

    /// MOVED: the slot's master changes here at once, and the router is told.
    pub fn moved(&mut self, redirect: &Redirect) {
        if let Some(map) = self.current.as_mut() {
            Arc::make_mut(map).moved(redirect.slot, &redirect.host, redirect.port);
        }
        let _ = self.stale.send(Some(redirect.clone()));
    }

    /// A node could not be reached: the router reads the map again.
    pub fn unreachable(&self) {
        let _ = self.stale.send(None);
    }

    /// Once the router has read the map anew (or changed a slot's master).
    pub async fn changed(&mut self) {
        if self.updates.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.current = self.updates.borrow_and_update().clone();
    }
}

/// Asks `nodes` for the slot map: all at once, or the first alone for `first_alone_for` (the
/// rest once it fails or that passes); the first whole answer wins. When none gives one by
/// `deadline`, the error says what each did.
pub async fn discover(
    connector: Arc<Connector>,
    nodes: Vec<((String, u16), bool)>,
    first_alone_for: Duration,
    deadline: Instant,
) -> Result<SlotMap, StoreError> {
    let mut asks = JoinSet::new();
    let ask_node = |asks: &mut JoinSet<_>, i: usize| {
        let ((host, port), as_given) = nodes[i].clone();
        let node = match as_given {
            true => connector.to_seed(&host, port),
            false => connector.to_node(&host, port),
        };
        asks.spawn(async move { (i, ask(node, &host, port, deadline).await) });
    };
    // The first node alone for a while, when asked so; then every node at once.
    let mut asked = if first_alone_for.is_zero() {
        nodes.len()
    } else {
        nodes.len().min(1)
    };
    for i in 0..asked {
        ask_node(&mut asks, i);
    }
    let others_at = Instant::now() + first_alone_for;
    let mut failures: Vec<Option<StoreError>> = vec![None; nodes.len()];
    loop {
        let wait_until = if asked < nodes.len() {
            others_at.min(deadline)
        } else {
            deadline
        };
        match timeout_at(wait_until, asks.join_next()).await {
            Ok(Some(Ok((_, Ok(map))))) => return Ok(map),
            Ok(Some(Ok((i, Err(err))))) => failures[i] = Some(err),
            Ok(Some(Err(_))) => {}
            // Every node asked has answered, or the first stayed silent: ask the rest.
            Ok(None) | Err(_) if asked < nodes.len() && Instant::now() < deadline => {
                for i in asked..nodes.len() {
                    ask_node(&mut asks, i);
                }
                asked = nodes.len();
            }
            Ok(None) | Err(_) => break,
        }
    }
    let each: Vec<String> = nodes
        .iter()
        .zip(&failures)
        .map(|(((host, port), _), failure)| match failure {
            Some(err) => err.message.clone(),
            None => format!("{host}:{port}: no answer within connectTimeout"),
        })
        .collect();
    let message = format!("no cluster node gave the slot map: {}", each.join("; "));
    // Every node refused the same way (the credentials, say): that is the error, with its
    // code and cause; otherwise the cluster could not be reached, for now.
    let all: Option<Vec<StoreError>> = failures.into_iter().collect();
    let shared = all
        .filter(|all| all.windows(2).all(|pair| pair[0].code == pair[1].code))
        .and_then(|all| all.into_iter().next());
    match shared {
        Some(first) => Err(StoreError { message, ..first }),
        None => Err(StoreError {
            retryable: true,
            ..StoreError::new(ErrorCode::Connection, message)
        }),
    }
}

async fn ask(
    node: Connector,
    host: &str,
    port: u16,
    deadline: Instant,
) -> Result<SlotMap, StoreError> {
    let limit = deadline.saturating_duration_since(Instant::now());
    let mut stream = node.connect_fixed(limit).await?;
    let mut command = Vec::new();
    resp::command(&mut command, &[b"CLUSTER", b"SLOTS"]);
    let mut map = None;
    let server = format!("{host}:{port}");
    let failed = |what: &str| StoreError::new(ErrorCode::Connection, format!("{server}: {what}"));
    ask_by(
        &mut stream,
        &command,
        1,
        deadline,
        &server,
        |_, frame, bytes| {
            match frame {
                Frame::Error(text) => {
                    let text = resp::text(bytes, &text);
                    return Err(failed(&format!("CLUSTER SLOTS refused: {text}")));
                }
                Frame::Array(items) => map = SlotMap::from_reply(&items, bytes, (host, port)),
                _ => {}
            }
            Ok(())
        },
    )
    .await?;
    map.ok_or_else(|| failed("CLUSTER SLOTS gave no slot map"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_own() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1}:a"), slot(b"user1"));
        assert_eq!(slot(b"{user1}:a"), slot(b"{user1}:b"));
        // An empty tag hashes the whole key; only the first `{` counts.
        assert_eq!(slot(b"{}x"), crc16(b"{}x") % 16384);
        assert_eq!(slot(b"a{}b{c}"), crc16(b"a{}b{c}") % 16384);
        assert_eq!(slot(b"{{a}}"), crc16(b"{a") % 16384);
    }
}
