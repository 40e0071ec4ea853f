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

use super::connect::{exchange, Connector, Exchange};
use super::connection::lock;
use super::link::backoff;
use super::resp::{self, Frame};
use crate::error::{ErrorCode, StoreError};
use crate::options::{SentinelOptions, Timeouts};

/// How often the watched sentinel is pinged, and how long its silence is borne before
/// another is watched.
const PING_EVERY: Duration = Duration::from_secs(1);
const SILENCE: Duration = Duration::from_secs(3);
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
        *lock(&self.progress) = Some(self.listing(&known, &failures, "no answer yet"));
        while let Ok(Some(asked)) = timeout_at(deadline, asks.join_next()).await {
            let Ok((i, answer)) = asked else { continue };
            match answer {
                Ok(answer) => {
                    self.learn(&answer.sentinels);
                    let newest = self.epoch.fetch_max(answer.epoch, Ordering::AcqRel);
                    if answer.epoch >= newest {
                        *lock(&self.progress) = None;
                        return Ok((answer.host, answer.port));
                    }
                    failures[i] = Some(StoreError::new(
                        ErrorCode::Connection,
                        format!(
                            "sentinel {}:{}: names {}:{} at configuration epoch {}, older than epoch {newest} seen before",
                            known[i].0, known[i].1, answer.host, answer.port, answer.epoch
                        ),
                    ));
                }
                Err(err) => failures[i] = Some(err),
            }
            *lock(&self.progress) = Some(self.listing(&known, &failures, "no answer yet"));
        }
        *lock(&self.progress) = None;
        let waited = self.timeouts.connect.as_millis();
        let pending = format!("no answer within connectTimeout ({waited} ms)");
        Err(self.listing(&known, &failures, &pending))
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
        let mut master = None;
        let mut sentinels = Vec::new();
        let refused = |what: String| StoreError::new(ErrorCode::Connection, what);
        let asked = exchange(&mut stream, &commands, 2, |i, frame, bytes| {
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
                (0, Frame::Array(fields)) => master = address(&fields, bytes, true),
                (_, Frame::Array(others)) => {
                    sentinels.extend(others.iter().filter_map(|other| match other {
                        Frame::Array(fields) => address(fields, bytes, false),
                        _ => None,
                    }))
                }
                _ => {}
            }
            Ok(())
        });
        match timeout_at(deadline, asked).await {
            Ok(Ok(())) => {}
            Ok(Err(Exchange::Reply(err))) => return Err(err),
            Ok(Err(Exchange::Io(err))) => {
                return Err(refused(format!(
                    "sentinel {host}:{port}: the connection was lost: {err}"
                )))
            }
            Err(_) => {
                return Err(refused(format!(
                    "sentinel {host}:{port}: no answer in time"
                )))
            }
        }
        let Some((host, port, epoch)) = master else {
            return Err(refused(format!(
                "sentinel {host}:{port}: SENTINEL MASTER gave no address"
            )));
        };
        Ok(Answer {
            host,
            port,
            epoch,
            sentinels: sentinels.into_iter().map(|(h, p, _)| (h, p)).collect(),
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
            let served = tokio::select! {
                _ = self.announced.closed() => return,
                served = self.listen(&host, port) => served,
            };
            turn += 1;
            failures = if served { 0 } else { failures + 1 };
            // Every sentinel has failed in turn: wait before the next round.
            if failures >= known.len() {
                tokio::select! {
                    _ = self.announced.closed() => return,
                    _ = sleep(backoff(failures as u32)) => {}
                }
            }
        }
    }

    /// Listens to one sentinel until it goes away or falls silent; whether it served.
    async fn listen(&self, host: &str, port: u16) -> bool {
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
                    if heard.elapsed() > SILENCE || stream.write_all(&ping).await.is_err() {
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
                        if confirmed == WATCHED.len() {
                            self.check(host, port, None, false).await;
                        }
                    }
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
                        let [name, old_ip, old_port, ip, new_port, ..] = words.as_slice() else {
                            continue;
                        };
                        if name == &self.master_name {
                            let previous_down = down.contains(&format!("{old_ip}:{old_port}"));
                            let master = format!("{ip}:{new_port}");
                            self.check(host, port, Some(master), previous_down).await;
                        }
                    }
                    Heard::Other => {}
                }
            }
        }
    }

    /// Announces the master the sentinel at `host:port` names (`switched_to`, when it has
    /// just said so), first learning its configuration epoch, so that discovery believes no
    /// sentinel still naming the old one.
    async fn check(&self, host: &str, port: u16, switched_to: Option<String>, previous_down: bool) {
        let deadline = Instant::now() + self.timeouts.connect;
        let named = match self.ask(host, port, deadline).await {
            Ok(answer) => {
                self.epoch.fetch_max(answer.epoch, Ordering::AcqRel);
                Some(format!("{}:{}", answer.host, answer.port))
            }
            Err(_) => None,
        };
        let Some(master) = switched_to.or(named) else {
            return;
        };
        self.announced.send_if_modified(|announced| {
            let moved = match announced {
                Some(current) if current.master == master => return false,
                Some(_) => true,
                None => false,
            };
            *announced = Some(Switch {
                master,
                previous_down,
                moved,
            });
            true
        });
    }
}

/// `ip` and `port` (and, for a master, `config-epoch`) out of a flat list of field names
/// and values.
fn address(fields: &[Frame], bytes: &[u8], epoch: bool) -> Option<(String, u16, u64)> {
    let mut host = None;
    let mut port = None;
    let mut config_epoch = 0;
    for pair in fields.chunks(2) {
        let [Frame::Bulk(name), Frame::Bulk(value)] = pair else {
            continue;
        };
        let value = resp::text(bytes, value);
        match &bytes[name.clone()] {
            b"ip" => host = Some(value),
            b"port" => port = value.parse().ok(),
            b"config-epoch" if epoch => config_epoch = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some((host?, port?, config_epoch))
}

enum Down {
    Gone,
    Back,
}

/// What the watched sentinel said.
enum Heard {
    Subscribed,
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
        let Frame::Array(items) = frame else {
            return Heard::Other;
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
