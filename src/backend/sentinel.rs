//! Redis Sentinel: which server is the master. Every connection attempt asks all the
//! sentinels at once (`SENTINEL MASTER`) and takes the first answer at the newest
//! configuration epoch seen, so a sentinel that has not yet heard of a failover is not
//! believed over one that has. One sentinel at a time is watched for `+switch-master`, which
//! is announced to every link: connections to the demoted master are let go at once, rather
//! than when the sentinels get round to reconfiguring it (seconds later, having taken writes
//! that replication then discards).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout_at, Instant};

use super::connect::{ask_by, Connector};
use super::connection::lock;
use super::resp::{self, Frame};
use crate::error::{ErrorCode, StoreError};
use crate::options::{SentinelOptions, Timeouts};

/// How often the watched sentinel is pinged, and how long its silence is borne before
/// another is watched.
const PING_EVERY: Duration = Duration::from_secs(1);
const SILENCE: Duration = Duration::from_secs(3);
/// The pause after every sentinel has failed to be watched in turn.
const ROUND_PAUSE: Duration = Duration::from_secs(1);
const WATCHED: [&[u8]; 3] = [b"+switch-master", b"+sdown", b"-sdown"];

/// The master the sentinels announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// `host:port`.
    pub master: String,
    /// The sentinels had found the previous master down: what was sent to it will get no
    /// reply.
    pub previous_down: bool,
    /// Not the first announcement: the master has moved.
    pub moved: bool,
}

/// What a link listens to for the master moving; `None` without Sentinel.
pub type Switches = Option<watch::Receiver<Option<Switch>>>;

/// The next master announced (never, without Sentinel).
pub async fn next_switch(switches: &mut Switches) -> Switch {
    if let Some(receiver) = switches {
        while receiver.changed().await.is_ok() {
            if let Some(switch) = receiver.borrow_and_update().clone() {
                return switch;
            }
        }
    }
    std::future::pending().await
}

pub struct Sentinels {
    master_name: String,
    username: Option<String>,
    password: Option<String>,
    /// The sentinels given, then those they named.
    known: Mutex<Vec<(String, u16)>>,
    /// The newest configuration epoch a sentinel has answered with.
    epoch: AtomicU64,
    announced: watch::Sender<Option<Switch>>,
    timeouts: Timeouts,
    /// What the latest discovery under way has heard so far: a call that gives up waiting
    /// for it says so.
    progress: Mutex<Option<StoreError>>,
}

/// One sentinel's view.
struct Answer {
    host: String,
    port: u16,
    epoch: u64,
    sentinels: Vec<(String, u16)>,
    /// The master's replicas (`host:port`) this sentinel finds down: a master just failed
    /// over is among them.
    down: Vec<String>,
}

impl Sentinels {
    pub fn new(options: &SentinelOptions, timeouts: Timeouts) -> Arc<Self> {
        let known = options
            .sentinels
            .iter()
            .map(|s| (s.host.clone(), s.port as u16))
            .collect();
        Arc::new(Sentinels {
            master_name: options.master_name.clone(),
            username: options.username.clone(),
            password: options.password.clone(),
            known: Mutex::new(known),
            epoch: AtomicU64::new(0),
            announced: watch::Sender::new(None),
            timeouts,
            progress: Mutex::new(None),
        })
    }

    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    pub fn switches(&self) -> watch::Receiver<Option<Switch>> {
        self.announced.subscribe()
    }

    /// The master's address, from the first sentinel to answer at the newest configuration
    /// epoch, by `deadline`; otherwise an error that says what each sentinel did.
    pub async fn master(self: &Arc<Self>, deadline: Instant) -> Result<(String, u16), StoreError> {
        let known = lock(&self.known).clone();
        let mut asks = JoinSet::new();
        for (i, (host, port)) in known.iter().enumerate() {
            let (sentinels, host) = (self.clone(), host.clone());
            let port = *port;
            asks.spawn(async move { (i, sentinels.ask(&host, port, deadline).await) });
        }
        let mut failures: Vec<Option<StoreError>> = vec![None; known.len()];
        // The newest of the answers older than an epoch seen before.
        let mut older: Option<Answer> = None;
        *lock(&self.progress) = Some(self.listing(&known, &failures, "no answer yet"));
        let mut all_answered = false;
        loop {
            let answer = match timeout_at(deadline, asks.join_next()).await {
                Ok(Some(Ok((i, answer)))) => (i, answer),
                Ok(Some(Err(_))) => continue,
                Ok(None) => {
                    all_answered = true;
                    break;
                }
                Err(_) => break,
            };
            match answer {
                (i, Ok(answer)) => {
                    self.learn(&answer.sentinels);
                    let newest = self.epoch.fetch_max(answer.epoch, Ordering::AcqRel);
                    if answer.epoch >= newest {
                        *lock(&self.progress) = None;
                        return Ok((answer.host, answer.port));
                    }
                    let (host, port) = &known[i];
                    failures[i] = Some(StoreError::new(
                        ErrorCode::Connection,
                        format!(
                            "sentinel {host}:{port}: names {}:{} at configuration epoch {}, older than epoch {newest} seen before",
                            answer.host, answer.port, answer.epoch
                        ),
                    ));
                    if older.as_ref().is_none_or(|o| o.epoch < answer.epoch) {
                        older = Some(answer);
                    }
                }
                (i, Err(err)) => failures[i] = Some(err),
            }
            *lock(&self.progress) = Some(self.listing(&known, &failures, "no answer yet"));
        }
        *lock(&self.progress) = None;
        match older {
            // Every sentinel that could answer names a configuration older than one seen
            // before: they were reset (restarted without their rewritten configuration).
            // Believe them from now on.
            Some(answer) if all_answered => {
                self.epoch.store(answer.epoch, Ordering::Release);
                Ok((answer.host, answer.port))
            }
            _ => {
                let waited = self.timeouts.connect.as_millis();
                let pending = format!("no answer within connectTimeout ({waited} ms)");
                Err(self.listing(&known, &failures, &pending))
            }
        }
    }

    /// What the discovery under way has heard so far, if one is under way.
    pub fn progress(&self) -> Option<StoreError> {
        lock(&self.progress).clone()
    }

    /// What each sentinel did (`pending` for those that have not answered).
    fn listing(
        &self,
        known: &[(String, u16)],
        failures: &[Option<StoreError>],
        pending: &str,
    ) -> StoreError {
        let each: Vec<String> = known
            .iter()
            .zip(failures)
            .map(|((host, port), failure)| match failure {
                Some(err) => err.message.clone(),
                None => format!("sentinel {host}:{port}: {pending}"),
            })
            .collect();
        // Wrong credentials for every sentinel will not pass; anything else may.
        let all_refused_login = failures
            .iter()
            .all(|f| f.as_ref().is_some_and(|err| err.code == ErrorCode::Auth));
        let (code, retryable) = if all_refused_login {
            (ErrorCode::Auth, false)
        } else {
            (ErrorCode::Connection, true)
        };
        StoreError {
            retryable,
            ..StoreError::new(
                code,
                format!(
                    "no sentinel named the master {:?}: {}",
                    self.master_name,
                    each.join("; ")
                ),
            )
        }
    }

    /// Asks one sentinel for the master and for the other sentinels it knows.
    async fn ask(&self, host: &str, port: u16, deadline: Instant) -> Result<Answer, StoreError> {
        let connector = Connector::to_sentinel(
            host,
            port,
            self.username.as_deref(),
            self.password.as_deref(),
        );
        let limit = deadline.saturating_duration_since(Instant::now());
        let mut stream = connector.connect_fixed(limit).await?;
        let name = self.master_name.as_bytes();
        let mut commands = Vec::new();
        resp::command(&mut commands, &[b"SENTINEL", b"MASTER", name]);
        resp::command(&mut commands, &[b"SENTINEL", b"SENTINELS", name]);
        resp::command(&mut commands, &[b"SENTINEL", b"REPLICAS", name]);
        let mut master = None;
        let mut sentinels = Vec::new();
        let mut down = Vec::new();
        let server = format!("sentinel {host}:{port}");
        ask_by(
            &mut stream,
            &commands,
            3,
            deadline,
            &server,
            |i, frame, bytes| {
                let nodes = |items: &[Frame]| -> Vec<Node> {
                    let each = items.iter().filter_map(|item| match item {
                        Frame::Array(fields) => Node::from(fields, bytes),
                        _ => None,
                    });
                    each.collect()
                };
                match (i, frame) {
                    (_, Frame::Error(text)) => {
                        let text = resp::text(bytes, &text);
                        // Sentinels that want a password when none was given: a login refused.
                        let code = if text.starts_with("NOAUTH") {
                            ErrorCode::Auth
                        } else {
                            ErrorCode::Connection
                        };
                        return Err(StoreError::new(
                            code,
                            format!("sentinel {host}:{port}: refused: {text}"),
                        ));
                    }
                    (0, Frame::Array(fields)) => master = Node::from(&fields, bytes),
                    (1, Frame::Array(items)) => sentinels = nodes(&items),
                    (_, Frame::Array(items)) => {
                        let replicas = nodes(&items).into_iter().filter(|node| node.down);
                        down = replicas.map(|node| node.address()).collect();
                    }
                    _ => {}
                }
                Ok(())
            },
        )
        .await?;
        let Some(master) = master else {
            return Err(StoreError::new(
                ErrorCode::Connection,
                format!("{server}: SENTINEL MASTER gave no address"),
            ));
        };
        Ok(Answer {
            host: master.host,
            port: master.port,
            epoch: master.epoch,
            sentinels: sentinels.into_iter().map(|s| (s.host, s.port)).collect(),
            down,
        })
    }

    /// Adds the sentinels named that are not known yet.
    fn learn(&self, named: &[(String, u16)]) {
        let mut known = lock(&self.known);
        for sentinel in named {
            if !known.contains(sentinel) {
                known.push(sentinel.clone());
            }
        }
    }

    /// Watches one sentinel after another for the master moving, until no link listens.
    pub async fn watch(self: Arc<Self>) {
        let mut turn = 0;
        let mut failures = 0;
        loop {
            let known = lock(&self.known).clone();
            let (host, port) = known[turn % known.len()].clone();
            let began = Instant::now();
            let served = tokio::select! {
                _ = self.announced.closed() => return,
                served = self.listen(&host, port) => served,
            };
            turn += 1;
            // One that drops the subscription at once counts as failing: no tight loop.
            failures = if served && began.elapsed() > SILENCE {
                0
            } else {
                failures + 1
            };
            // Every sentinel has failed in turn: wait before the next round.
            if failures >= known.len() {
                tokio::select! {
                    _ = self.announced.closed() => return,
                    _ = sleep(ROUND_PAUSE) => {}
                }
            }
        }
    }

    /// Listens to one sentinel until it goes away, falls silent, or turns out unable to say
    /// where the master is (it does not monitor it, or names an older configuration, or
    /// refuses the subscription); whether it served.
    async fn listen(self: &Arc<Self>, host: &str, port: u16) -> bool {
        let connector = Connector::to_sentinel(
            host,
            port,
            self.username.as_deref(),
            self.password.as_deref(),
        );
        let Ok(mut stream) = connector.connect_fixed(self.timeouts.connect).await else {
            return false;
        };
        let mut subscribe = Vec::new();
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(WATCHED);
        resp::command(&mut subscribe, &args);
        let mut ping = Vec::new();
        resp::command(&mut ping, &[b"PING"]);
        if stream.write_all(&subscribe).await.is_err() {
            return false;
        }
        let mut confirmed = 0;
        // Masters this sentinel finds down.
        let mut down: HashSet<String> = HashSet::new();
        let mut buf = Vec::new();
        let mut wanted = 0;
        let mut heard = Instant::now();
        let subscribed_by = Instant::now() + SILENCE;
        let mut pings = tokio::time::interval(PING_EVERY);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            resp::make_room(&mut buf, wanted);
            tokio::select! {
                read = stream.read_buf(&mut buf) => match read {
                    Ok(n) if n > 0 => heard = Instant::now(),
                    _ => return confirmed == WATCHED.len(),
                },
                _ = pings.tick() => {
                    let unconfirmed = confirmed < WATCHED.len() && Instant::now() > subscribed_by;
                    if unconfirmed || heard.elapsed() > SILENCE || stream.write_all(&ping).await.is_err() {
                        return confirmed == WATCHED.len();
                    }
                    continue;
                }
            }
            let mut heard_of = Vec::new();
            let parsed = resp::parse_each(&buf, |frame, bytes| {
                heard_of.push(Heard::from(frame, bytes));
                Ok(())
            });
            let Ok((used, needed)) = parsed else {
                return false;
            };
            resp::consume(&mut buf, used);
            wanted = needed;
            for heard in heard_of {
                match heard {
                    Heard::Subscribed => {
                        confirmed += 1;
                        // A switch may have passed while no sentinel was watched.
                        if confirmed == WATCHED.len() && !self.check(host, port, None, &down).await
                        {
                            return false;
                        }
                    }
                    // A refused SUBSCRIBE (an ACL): nothing will be heard here.
                    Heard::Refused => return false,
                    Heard::Down { kind, words } => {
                        let [_, name, ip, master_port, ..] = words.as_slice() else {
                            continue;
                        };
                        if name == &self.master_name {
                            let address = format!("{ip}:{master_port}");
                            match kind {
                                Down::Gone => down.insert(address),
                                Down::Back => down.remove(&address),
                            };
                        }
                    }
                    Heard::Switched(words) => {
                        let [name, _, _, ip, new_port, ..] = words.as_slice() else {
                            continue;
                        };
                        if name == &self.master_name {
                            let master = format!("{ip}:{new_port}");
                            self.check(host, port, Some(master), &down).await;
                        }
                    }
                    Heard::Other => {}
                }
            }
        }
    }

    /// Announces the master the sentinel at `host:port` names (`switched_to`, when it has
    /// just said so), first learning its configuration epoch, so that discovery believes no
    /// sentinel still naming the old one, and whether the master being left is down (by this
    /// sentinel's events, `down`, or its list of replicas). Whether this sentinel can say
    /// where the master is.
    async fn check(
        self: &Arc<Self>,
        host: &str,
        port: u16,
        switched_to: Option<String>,
        down: &HashSet<String>,
    ) -> bool {
        let deadline = Instant::now() + self.timeouts.connect;
        let answer = self.ask(host, port, deadline).await.ok();
        if let Some(answer) = &answer {
            let newest = self.epoch.fetch_max(answer.epoch, Ordering::AcqRel);
            // A sentinel behind the newest configuration seen would announce an old master
            // (even as a late `+switch-master`): watch another, unless every sentinel is behind
            // it, having been reset, which discovery then believes.
            if answer.epoch < newest {
                let _ = self.master(deadline).await;
                if answer.epoch < self.epoch.load(Ordering::Acquire) {
                    return false;
                }
            }
        }
        let named = answer.as_ref().map(|a| format!("{}:{}", a.host, a.port));
        let Some(master) = switched_to.or(named) else {
            return false;
        };
        let found_down = |old: &String| {
            down.contains(old) || answer.as_ref().is_some_and(|a| a.down.contains(old))
        };
        self.announced.send_if_modified(|announced| {
            let (moved, previous_down) = match announced {
                Some(current) if current.master == master => return false,
                Some(current) => (true, found_down(&current.master)),
                None => (false, false),
            };
            *announced = Some(Switch {
                master,
                previous_down,
                moved,
            });
            true
        });
        true
    }
}

/// A server as a sentinel describes it: a flat list of field names and values.
struct Node {
    host: String,
    port: u16,
    /// `config-epoch`, for a master.
    epoch: u64,
    /// Its flags say it is down, or not connected.
    down: bool,
}

impl Node {
    fn from(fields: &[Frame], bytes: &[u8]) -> Option<Node> {
        let mut host = None;
        let mut port = None;
        let mut epoch = 0;
        let mut down = false;
        for pair in fields.chunks(2) {
            let [Frame::Bulk(name), Frame::Bulk(value)] = pair else {
                continue;
            };
            let value = resp::text(bytes, value);
            match &bytes[name.clone()] {
                b"ip" => host = Some(value),
                b"port" => port = value.parse().ok(),
                b"config-epoch" => epoch = value.parse().unwrap_or(0),
                b"flags" => {
                    down = value
                        .split(',')
                        .any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"))
                }
                _ => {}
            }
        }
        Some(Node {
            host: host?,
            port: port?,
            epoch,
            down,
        })
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

enum Down {
    Gone,
    Back,
}

/// What the watched sentinel said.
enum Heard {
    Subscribed,
    Refused,
    /// `+sdown`/`-sdown`: `<kind> <name> <ip> <port> ...`.
    Down {
        kind: Down,
        words: Vec<String>,
    },
    /// `+switch-master`: `<name> <old ip> <old port> <new ip> <new port>`.
    Switched(Vec<String>),
    Other,
}

impl Heard {
    fn from(frame: Frame, bytes: &[u8]) -> Heard {
        let items = match frame {
            Frame::Array(items) => items,
            Frame::Error(_) => return Heard::Refused,
            _ => return Heard::Other,
        };
        match items.as_slice() {
            [Frame::Bulk(kind), ..] if &bytes[kind.clone()] == b"subscribe" => Heard::Subscribed,
            [Frame::Bulk(kind), Frame::Bulk(channel), Frame::Bulk(payload)]
                if &bytes[kind.clone()] == b"message" =>
            {
                let words = resp::text(bytes, payload)
                    .split(' ')
                    .map(str::to_owned)
                    .collect();
                match &bytes[channel.clone()] {
                    b"+switch-master" => Heard::Switched(words),
                    b"+sdown" => Heard::Down {
                        kind: Down::Gone,
                        words,
                    },
                    b"-sdown" => Heard::Down {
                        kind: Down::Back,
                        words,
                    },
                    _ => Heard::Other,
                }
            }
            _ => Heard::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Frame {
        match resp::parse(bytes) {
            Ok(resp::Parsed::Frame(frame, _)) => frame,
            other => panic!("not a whole frame: {other:?}"),
        }
    }

    fn bulks(items: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", items.len()).into_bytes();
        for item in items {
            out.extend(format!("${}\r\n{item}\r\n", item.len()).bytes());
        }
        out
    }

    #[test]
    fn a_node_is_read_from_its_fields_and_flags() {
        let bytes = bulks(&[
            "name",
            "mymaster",
            "ip",
            "127.0.0.1",
            "port",
            "6380",
            "flags",
            "slave,s_down",
            "config-epoch",
            "7",
        ]);
        let Frame::Array(fields) = frame(&bytes) else {
            panic!("an array")
        };
        let node = Node::from(&fields, &bytes).expect("a node");
        assert_eq!(
            (node.address(), node.epoch, node.down),
            ("127.0.0.1:6380".to_owned(), 7, true)
        );
        let bytes = bulks(&["ip", "10.0.0.5", "port", "6379", "flags", "master"]);
        let Frame::Array(fields) = frame(&bytes) else {
            panic!("an array")
        };
        let node = Node::from(&fields, &bytes).expect("a node");
        assert_eq!((node.epoch, node.down), (0, false));
        let bytes = bulks(&["ip", "10.0.0.5"]);
        let Frame::Array(fields) = frame(&bytes) else {
            panic!("an array")
        };
        assert!(Node::from(&fields, &bytes).is_none(), "no port, no node");
    }

    #[test]
    fn what_the_watched_sentinel_says_is_told_apart() {
        let switched = bulks(&[
            "message",
            "+switch-master",
            "mymaster 127.0.0.1 6379 127.0.0.1 6380",
        ]);
        match Heard::from(frame(&switched), &switched) {
            Heard::Switched(words) => assert_eq!(words[3..], ["127.0.0.1", "6380"]),
            _ => panic!("a switch"),
        }
        let down = bulks(&["message", "+sdown", "master mymaster 127.0.0.1 6379"]);
        assert!(matches!(
            Heard::from(frame(&down), &down),
            Heard::Down {
                kind: Down::Gone,
                ..
            }
        ));
        let subscribed = b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n";
        assert!(matches!(
            Heard::from(frame(subscribed), subscribed),
            Heard::Subscribed
        ));
        let refused = b"-NOPERM this user has no permissions to access the channel\r\n";
        assert!(matches!(
            Heard::from(frame(refused), refused),
            Heard::Refused
        ));
    }
}
