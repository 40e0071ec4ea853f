//! Making a connection: TCP or a unix socket, TLS, then AUTH and SELECT, each step named in
//! the error when it fails; and the plain request/response exchange used for those first
//! commands (and for discovery commands, which need no pipeline).

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_rustls::TlsConnector;

use super::cluster::MapReceiver;
use super::connection::lock;
use super::resp::{self, Frame, Parsed};
use super::sentinel::{Sentinels, Switches};
use crate::error::{from_server_reply, Cause, ErrorCode, Refused, StoreError};
use crate::options::{RedisOptions, TlsOptions};

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A connection made, and the server it is to.
pub type Connected = (Box<dyn Stream>, Arc<Endpoint>);

/// The steps of making a connection, named in its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Tcp,
    Tls,
    Auth,
    Select,
    Role,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Tcp => "TCP connect",
            Step::Tls => "TLS handshake",
            Step::Auth => "AUTH",
            Step::Select => "SELECT",
            Step::Role => "ROLE",
        }
    }
}

/// Where and how to connect, and what to say first.
pub struct Connector {
    route: Route,
    /// The TLS client, and the name the server's certificate must carry when it is not the
    /// host connected to.
    tls: Option<(TlsConnector, Option<ServerName<'static>>)>,
    /// A cluster's nodes as they announce themselves (`host:port`) mapped to where they can
    /// be reached.
    nat: Arc<NatMap>,
    /// `AUTH`, `SELECT` and, under Sentinel, `ROLE`, sent before any command.
    hello: Vec<u8>,
    hello_steps: Vec<Step>,
}

enum Route {
    /// One server, always the same.
    Fixed(Target, Arc<Endpoint>),
    /// Any node of a cluster that can be reached, for classic Pub/Sub: the masters of the
    /// router's slot map once it is read, and the seeds; the node the last attempt reached
    /// last, since it may be the one just lost.
    AnyNode {
        seeds: Vec<(String, u16)>,
        map: Option<MapReceiver>,
        /// The node the last attempt reached.
        last: Mutex<Option<(String, u16)>>,
    },
    /// The master the sentinels name at each attempt.
    Sentinel(Arc<Sentinels>),
}

#[derive(Clone)]
enum Target {
    Tcp(String, u16),
    Unix(String),
    /// A cluster node as it announces itself, reached where the natMap function says at each
    /// connection.
    Announced(String, u16),
}

/// `natMap`: where a cluster node that announces itself as `host:port` is reached.
pub enum NatMap {
    Table(HashMap<String, (String, u16)>),
    /// ioredis's function form, called on the JS thread: `{ host, port }`, or nothing for the
    /// address as announced.
    Function(Box<dyn NatFunction>),
}

/// ioredis's natMap function, as the bridge to JS calls it: where the node announced as
/// `host:port` is reached (`None`: as announced), or why that could not be said.
pub trait NatFunction: Send + Sync {
    fn reach(&self, announced: String) -> NatAnswer<'_>;
}

pub type NatAnswer<'a> =
    Pin<Box<dyn Future<Output = Result<Option<(String, u16)>, String>> + Send + 'a>>;

/// The server a connection is made to, as its errors name it (never with the password).
pub struct Endpoint {
    describe: String,
    address: Option<String>,
    port: Option<u16>,
    /// A cluster node as it announces itself (and as the slot map names it).
    node: Option<(String, u16)>,
    /// Under Sentinel, the master as the sentinels named it (`host:port`).
    pub master: Option<String>,
}

impl Connector {
    pub fn new(
        options: &RedisOptions,
        nat_function: Option<Box<dyn NatFunction>>,
    ) -> Result<Self, StoreError> {
        let tls = match &options.tls {
            Some(tls) if options.path.is_none() || options.sentinel.is_some() => {
                let config = tls_config(tls)?;
                let name = match &tls.servername {
                    Some(name) => Some(
                        ServerName::try_from(name.clone())
                            .map_err(|e| invalid(format!("not a valid TLS server name: {e}")))?,
                    ),
                    None => None,
                };
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        let (mut hello, mut hello_steps) =
            login(options.username.as_deref(), options.password.as_deref());
        if options.db != 0 {
            let mut digits = itoa::Buffer::new();
            resp::command(
                &mut hello,
                &[b"SELECT", digits.format(options.db).as_bytes()],
            );
            hello_steps.push(Step::Select);
        }
        let route = match (&options.sentinel, &options.cluster) {
            (_, Some(nodes)) => Route::AnyNode {
                seeds: nodes
                    .iter()
                    .map(|node| (node.host.clone(), node.port as u16))
                    .collect(),
                map: None,
                last: Mutex::new(None),
            },
            (Some(sentinel), None) => {
                // A server the sentinels name is served only once it says it is the master.
                resp::command(&mut hello, &[b"ROLE"]);
                hello_steps.push(Step::Role);
                Route::Sentinel(Sentinels::new(sentinel, options.timeouts()))
            }
            (None, None) => {
                let target = match &options.path {
                    Some(path) => Target::Unix(path.clone()),
                    None => Target::Tcp(options.host.clone(), options.port as u16),
                };
                let describe = if options.target_is_default {
                    format!("{} (the default: no URL or host was given)", options.target)
                } else {
                    options.target.clone()
                };
                let endpoint = Endpoint::new(describe, &target, None);
                Route::Fixed(target, Arc::new(endpoint))
            }
        };
        let nat = match nat_function {
            Some(function) => NatMap::Function(function),
            None => NatMap::Table(
                options
                    .nat_map
                    .iter()
                    .flatten()
                    .map(|entry| (entry.from.clone(), (entry.host.clone(), entry.port as u16)))
                    .collect(),
            ),
        };
        Ok(Connector {
            route,
            tls,
            nat: Arc::new(nat),
            hello,
            hello_steps,
        })
    }

    /// A connection to one server over TCP, logging in as given: how the sentinels
    /// themselves are reached.
    pub fn to_sentinel(
        host: &str,
        port: u16,
        username: Option<&str>,
        password: Option<&str>,
    ) -> Self {
        let target = Target::Tcp(host.to_owned(), port);
        let endpoint = Endpoint::new(format!("sentinel {host}:{port}"), &target, None);
        let (hello, hello_steps) = login(username, password);
        Connector {
            route: Route::Fixed(target, Arc::new(endpoint)),
            tls: None,
            nat: Arc::new(NatMap::Table(HashMap::new())),
            hello,
            hello_steps,
        }
    }

    /// A connection to one node, with this connector's TLS and credentials: a cluster's
    /// nodes.
    pub fn to_node(&self, host: &str, port: u16) -> Connector {
        let (target, endpoint) = self.node(host, port, false);
        self.with_route(Route::Fixed(target, endpoint))
    }

    /// Classic Pub/Sub in a cluster: connections to any node, the masters of the slot map
    /// `map` first.
    pub fn to_any_node(&self, map: MapReceiver) -> Connector {
        let seeds = match &self.route {
            Route::AnyNode { seeds, .. } => seeds.clone(),
            Route::Fixed(..) | Route::Sentinel(_) => Vec::new(),
        };
        self.with_route(Route::AnyNode {
            seeds,
            map: Some(map),
            last: Mutex::new(None),
        })
    }

    fn with_route(&self, route: Route) -> Connector {
        Connector {
            route,
            tls: self.tls.clone(),
            nat: self.nat.clone(),
            hello: self.hello.clone(),
            hello_steps: self.hello_steps.clone(),
        }
    }

    /// A seed node, connected to as given (as ioredis treats its startup nodes): no natMap.
    pub fn to_seed(&self, host: &str, port: u16) -> Connector {
        let (target, endpoint) = self.node(host, port, true);
        self.with_route(Route::Fixed(target, endpoint))
    }

    /// A cluster node as it announces itself, reached where `natMap` says (`as_given`: a seed
    /// node the slot map does not name, connected to as given).
    fn node(&self, host: &str, port: u16, as_given: bool) -> (Target, Arc<Endpoint>) {
        let announced = format!("{host}:{port}");
        let (target, describe) = match &*self.nat {
            _ if as_given => (
                Target::Tcp(host.to_owned(), port),
                format!("redis://{announced}"),
            ),
            NatMap::Table(table) => match table.get(&announced) {
                Some((reached_host, reached_port)) => (
                    Target::Tcp(reached_host.clone(), *reached_port),
                    format!(
                        "redis://{announced} (reached at {reached_host}:{reached_port} by natMap)"
                    ),
                ),
                None => (
                    Target::Tcp(host.to_owned(), port),
                    format!("redis://{announced}"),
                ),
            },
            NatMap::Function(_) => (
                Target::Announced(host.to_owned(), port),
                format!("redis://{announced} (reached where natMap says)"),
            ),
        };
        let mut endpoint = Endpoint::new(describe, &target, None);
        endpoint.node = Some((host.to_owned(), port));
        (target, Arc::new(endpoint))
    }

    /// Under Sentinel, the masters the sentinels announce as they fail over.
    pub fn switches(&self) -> Switches {
        match &self.route {
            Route::Sentinel(sentinels) => Some(sentinels.switches()),
            Route::Fixed(..) | Route::AnyNode { .. } => None,
        }
    }

    /// The sentinels that name the master, under Sentinel.
    pub fn sentinels(&self) -> Option<Arc<Sentinels>> {
        match &self.route {
            Route::Sentinel(sentinels) => Some(sentinels.clone()),
            Route::Fixed(..) | Route::AnyNode { .. } => None,
        }
    }

    /// What the attempt under way has found so far, where it has something to say (which
    /// sentinels have failed to name the master).
    pub fn progress(&self) -> Option<StoreError> {
        self.sentinels()?.progress()
    }

    /// A connection that has authenticated and selected its database, within `limit`; under
    /// Sentinel, to the master the sentinels name, asked within the same `limit`.
    pub async fn connect_within(&self, limit: Duration) -> Result<Connected, StoreError> {
        let deadline = Instant::now() + limit;
        let (target, endpoint) = match &self.route {
            Route::Fixed(target, endpoint) => (target.clone(), endpoint.clone()),
            Route::AnyNode { seeds, map, last } => {
                // The map's masters, then the seeds it does not name (connected to as given).
                let mut nodes: Vec<((String, u16), bool)> = map
                    .as_ref()
                    .and_then(|map| map.borrow().as_ref().map(|map| map.serving()))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|node| (node, false))
                    .collect();
                for seed in seeds {
                    if !nodes.iter().any(|(node, _)| node == seed) {
                        nodes.push((seed.clone(), true));
                    }
                }
                // The node reached last goes last: it may be the one just lost.
                let reached = lock(last).clone();
                if let Some(at) = nodes
                    .iter()
                    .position(|(node, _)| Some(node) == reached.as_ref())
                {
                    nodes.rotate_left(at + 1);
                }
                let (at, connected) = self.connect_to_any(&nodes, deadline, limit).await?;
                *lock(last) = nodes.get(at).map(|(node, _)| node.clone());
                return Ok(connected);
            }
            Route::Sentinel(sentinels) => {
                let (host, port) = sentinels.master(deadline).await?;
                let address = format!("{host}:{port}");
                let describe = format!(
                    "redis://{address} (master {:?} as the sentinels name it)",
                    sentinels.master_name()
                );
                let target = Target::Tcp(host, port);
                let endpoint = Endpoint::new(describe, &target, Some(address));
                (target, Arc::new(endpoint))
            }
        };
        match self.connect_by(&target, &endpoint, deadline, limit).await {
            Ok(stream) => Ok((stream, endpoint)),
            // A master that cannot be reached, or is not master yet, is a failover under way:
            // the sentinels will name another.
            Err(err)
                if matches!(self.route, Route::Sentinel(_))
                    && err.code == ErrorCode::Connection =>
            {
                Err(StoreError {
                    retryable: true,
                    ..err
                })
            }
            Err(err) => Err(err),
        }
    }

    /// A connection to the first of `nodes` that answers. Attempts start one after another,
    /// a share of the budget apart (at once when the one before fails), and each may run to
    /// the deadline: a hung node does not hold up the others, nor a slow one lose its chance.
    async fn connect_to_any(
        &self,
        nodes: &[((String, u16), bool)],
        deadline: Instant,
        limit: Duration,
    ) -> Result<(usize, Connected), StoreError> {
        type Attempt<'a> = Pin<
            Box<
                dyn Future<Output = (usize, Result<Box<dyn Stream>, StoreError>, Arc<Endpoint>)>
                    + Send
                    + 'a,
            >,
        >;
        let stagger = limit / nodes.len().max(1) as u32;
        let mut attempts: Vec<Attempt<'_>> = Vec::new();
        let mut started = 0;
        let mut next_start = Instant::now();
        let mut failures = Vec::new();
        let mut last_error = None;
        loop {
            if started < nodes.len() && Instant::now() >= next_start {
                let ((host, port), as_given) = &nodes[started];
                let (target, endpoint) = self.node(host, *port, *as_given);
                let at = started;
                attempts.push(Box::pin(async move {
                    let outcome = self.connect_by(&target, &endpoint, deadline, limit).await;
                    (at, outcome, endpoint)
                }));
                started += 1;
                next_start += stagger;
                continue;
            }
            if attempts.is_empty() {
                break;
            }
            let done = poll_fn(|cx| {
                for i in 0..attempts.len() {
                    if let Poll::Ready(done) = attempts[i].as_mut().poll(cx) {
                        drop(attempts.swap_remove(i));
                        return Poll::Ready(done);
                    }
                }
                Poll::Pending
            });
            let more = started < nodes.len();
            tokio::select! {
                (at, outcome, endpoint) = done => match outcome {
                    Ok(stream) => return Ok((at, (stream, endpoint))),
                    Err(err) => {
                        failures.push(err.message.clone());
                        last_error = Some(err);
                        next_start = Instant::now();
                    }
                },
                _ = sleep_until(next_start), if more => {}
            }
        }
        let err = last_error
            .unwrap_or_else(|| StoreError::new(ErrorCode::Connection, "no node to connect to"));
        Err(StoreError {
            message: format!("no cluster node could be reached: {}", failures.join("; ")),
            ..err
        })
    }

    /// A connection to the one server this connector goes to (a sentinel's), within `limit`.
    pub async fn connect_fixed(&self, limit: Duration) -> Result<Box<dyn Stream>, StoreError> {
        let Route::Fixed(target, endpoint) = &self.route else {
            return Err(StoreError::new(
                ErrorCode::Connection,
                "no fixed server to connect to",
            ));
        };
        let deadline = Instant::now() + limit;
        self.connect_by(target, endpoint, deadline, limit).await
    }

    async fn connect_by(
        &self,
        target: &Target,
        endpoint: &Endpoint,
        deadline: Instant,
        limit: Duration,
    ) -> Result<Box<dyn Stream>, StoreError> {
        let mut step = Step::Tcp;
        let attempt = timeout_at(deadline, self.connect(target, endpoint, &mut step)).await;
        attempt.unwrap_or_else(|_| Err(endpoint.timed_out(step, limit)))
    }

    /// Where the natMap function says the node announced as `host:port` is reached (where it
    /// says nothing: there). It runs on the JS thread; the attempt's deadline bounds the wait.
    async fn nat_function(
        &self,
        host: &str,
        port: u16,
        endpoint: &Endpoint,
    ) -> Result<Target, StoreError> {
        let NatMap::Function(function) = &*self.nat else {
            return Ok(Target::Tcp(host.to_owned(), port));
        };
        match function.reach(format!("{host}:{port}")).await {
            Ok(Some((host, port))) => Ok(Target::Tcp(host, port)),
            Ok(None) => Ok(Target::Tcp(host.to_owned(), port)),
            Err(reason) => Err(StoreError::new(
                ErrorCode::Connection,
                format!("{}: natMap failed: {reason}", endpoint.describe),
            )),
        }
    }

    async fn connect(
        &self,
        target: &Target,
        endpoint: &Endpoint,
        step: &mut Step,
    ) -> Result<Box<dyn Stream>, StoreError> {
        *step = Step::Tcp;
        let reached;
        let target = match target {
            Target::Announced(host, port) => {
                reached = self.nat_function(host, *port, endpoint).await?;
                &reached
            }
            target => target,
        };
        let mut stream: Box<dyn Stream> = match target {
            Target::Tcp(host, port) | Target::Announced(host, port) => {
                let tcp = endpoint.tcp(host, *port).await?;
                match &self.tls {
                    Some((connector, name)) => {
                        *step = Step::Tls;
                        let name = match name {
                            Some(name) => name.clone(),
                            None => ServerName::try_from(host.clone()).map_err(|e| {
                                invalid(format!("not a valid TLS server name: {e}"))
                            })?,
                        };
                        let tls = connector
                            .connect(name, tcp)
                            .await
                            .map_err(|e| endpoint.failed(Step::Tls, &e, "read"))?;
                        Box::new(tls)
                    }
                    None => Box::new(tcp),
                }
            }
            Target::Unix(path) => Box::new(
                UnixStream::connect(path)
                    .await
                    .map_err(|e| endpoint.failed(Step::Tcp, &e, "connect"))?,
            ),
        };
        if let Some(&first) = self.hello_steps.first() {
            *step = first;
            let steps = &self.hello_steps;
            exchange(&mut stream, &self.hello, steps.len(), |i, frame, bytes| {
                *step = steps[i];
                match (steps[i], frame) {
                    // A user without ROLE (it is in @admin): the sentinels' word is taken.
                    (Step::Role, Frame::Error(text)) if bytes[text.clone()].starts_with(b"NOPERM") => {
                        Ok(())
                    }
                    (_, Frame::Error(text)) => {
                        let refused = if steps[i] == Step::Auth {
                            Refused::Login
                        } else {
                            Refused::Other
                        };
                        let err = from_server_reply(&resp::text(bytes, &text), refused);
                        Err(StoreError {
                            message: format!(
                                "{}: {} refused: {}",
                                endpoint.describe,
                                steps[i].name(),
                                err.message
                            ),
                            ..err
                        })
                    }
                    (Step::Role, Frame::Array(items)) => match items.first() {
                        Some(Frame::Bulk(role)) if &bytes[role.clone()] == b"master" => Ok(()),
                        Some(Frame::Bulk(role)) => Err(StoreError::new(
                            ErrorCode::Connection,
                            format!(
                                "{}: named master by the sentinels, but its ROLE is {}: a failover is under way",
                                endpoint.describe,
                                resp::text(bytes, role)
                            ),
                        )),
                        _ => Err(resp::protocol_error("a ROLE reply without a role")),
                    },
                    (Step::Role, _) => Err(resp::protocol_error("a ROLE reply that is not a list")),
                    _ => Ok(()),
                }
            })
            .await
            .map_err(|err| match err {
                Exchange::Io(e) => endpoint.failed(*step, &e, "read"),
                Exchange::Reply(err) => err,
            })?;
        }
        Ok(stream)
    }
}

impl Endpoint {
    fn new(describe: String, target: &Target, master: Option<String>) -> Self {
        let (address, port) = match target {
            Target::Tcp(host, port) | Target::Announced(host, port) => {
                (Some(host.clone()), Some(*port))
            }
            Target::Unix(path) => (Some(path.clone()), None),
        };
        Endpoint {
            describe,
            address,
            port,
            node: None,
            master,
        }
    }

    /// An attempt that ran out of time in `step`.
    fn timed_out(&self, step: Step, limit: Duration) -> StoreError {
        let message = format!(
            "{}: could not connect within connectTimeout ({} ms): the {} step did not finish",
            self.describe,
            limit.as_millis(),
            step.name()
        );
        StoreError {
            cause: Some(Box::new(Cause {
                errno: "ETIMEDOUT",
                syscall: if step == Step::Tcp { "connect" } else { "read" },
                address: self.address.clone(),
                port: self.port,
                message: format!("{} timed out", step.name()),
            })),
            ..StoreError::new(ErrorCode::Connection, message)
        }
    }

    /// Resolves the host and tries its addresses in turn, as the system lists them.
    async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, StoreError> {
        let addresses = tokio::net::lookup_host((host, port)).await.map_err(|e| {
            let mut err = self.failed(Step::Tcp, &e, "getaddrinfo");
            if let Some(cause) = err.cause.as_mut() {
                cause.errno = "ENOTFOUND";
            }
            err
        })?;
        let mut last = None;
        for address in addresses {
            match TcpStream::connect(address).await {
                Ok(tcp) => {
                    tune(&tcp);
                    return Ok(tcp);
                }
                Err(e) => {
                    let mut err = self.failed(Step::Tcp, &e, "connect");
                    if let Some(cause) = err.cause.as_mut() {
                        cause.address = Some(address.ip().to_string());
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            StoreError::new(
                ErrorCode::Connection,
                format!("{}: {host} resolves to no address", self.describe),
            )
        }))
    }

    /// A step that failed with a system error.
    fn failed(&self, step: Step, err: &io::Error, syscall: &'static str) -> StoreError {
        self.io_error(&format!("{} failed", step.name()), err, syscall)
    }

    /// An established connection that broke (`err`) or that the server closed (none).
    pub fn lost(&self, err: Option<&io::Error>) -> StoreError {
        match err {
            Some(err) => self.io_error("the connection was lost", err, "read"),
            None => StoreError::new(
                ErrorCode::Connection,
                format!("{}: the server closed the connection", self.describe),
            ),
        }
    }

    /// `what` happened because of `err`: the message names the server and the errno, and the
    /// cause carries them as Node's socket errors do.
    fn io_error(&self, what: &str, err: &io::Error, syscall: &'static str) -> StoreError {
        let errno = errno_name(err);
        let detail = match errno {
            Some(errno) => format!("{errno} ({err})"),
            None => err.to_string(),
        };
        StoreError {
            cause: errno.map(|errno| {
                Box::new(Cause {
                    errno,
                    syscall,
                    address: self.address.clone(),
                    port: self.port,
                    message: err.to_string(),
                })
            }),
            ..StoreError::new(
                ErrorCode::Connection,
                format!("{}: {what}: {detail}", self.describe),
            )
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The host (or socket path) connected to.
    pub fn host(&self) -> Option<&str> {
        self.address.as_deref()
    }

    /// The host of the cluster node as it announces itself, else the host connected to.
    pub fn announced_host(&self) -> Option<&str> {
        match &self.node {
            Some((host, _)) => Some(host),
            None => self.host(),
        }
    }

    pub fn is_cluster_node(&self) -> bool {
        self.node.is_some()
    }

    /// Whether this is a connection to the cluster node announced as `host:port`.
    pub fn is_at(&self, host: &str, port: u16) -> bool {
        self.node
            .as_ref()
            .is_some_and(|(h, p)| h == host && *p == port)
    }

    /// Under Sentinel, the master this connection was made to, when it is not `master`.
    pub fn is_not(&self, master: &str) -> bool {
        self.master.as_deref() != Some(master)
    }
}

/// `AUTH` as the credentials say, if they say anything.
fn login(username: Option<&str>, password: Option<&str>) -> (Vec<u8>, Vec<Step>) {
    let mut hello = Vec::new();
    // A user name alone still logs in as that user: a `nopass` user takes any password.
    let auth: Option<Vec<&[u8]>> = match (username, password) {
        (Some(user), password) => Some(vec![
            b"AUTH",
            user.as_bytes(),
            password.unwrap_or("").as_bytes(),
        ]),
        (None, Some(password)) => Some(vec![b"AUTH", password.as_bytes()]),
        (None, None) => None,
    };
    match auth {
        Some(args) => {
            resp::command(&mut hello, &args);
            (hello, vec![Step::Auth])
        }
        None => (hello, Vec::new()),
    }
}

/// How a plain exchange failed: the socket, or a reply the caller refused.
pub enum Exchange {
    Io(io::Error),
    Reply(StoreError),
}

/// Writes `commands` and hands each of the `replies` they get to `take`, in order, with the
/// bytes its ranges point into: one request and its answers, with no pipeline or reader task.
pub async fn exchange(
    stream: &mut Box<dyn Stream>,
    commands: &[u8],
    replies: usize,
    mut take: impl FnMut(usize, Frame, &[u8]) -> Result<(), StoreError>,
) -> Result<(), Exchange> {
    stream.write_all(commands).await.map_err(Exchange::Io)?;
    let mut buf = Vec::with_capacity(256);
    let mut taken = 0;
    while taken < replies {
        match resp::parse(&buf).map_err(Exchange::Reply)? {
            Parsed::Frame(frame, used) => {
                take(taken, frame, &buf).map_err(Exchange::Reply)?;
                buf.drain(..used);
                taken += 1;
            }
            Parsed::Incomplete(wanted) => {
                resp::make_room(&mut buf, wanted);
                if stream.read_buf(&mut buf).await.map_err(Exchange::Io)? == 0 {
                    return Err(Exchange::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
        }
    }
    Ok(())
}

/// `exchange` by `deadline`, for a question to a server that is not the adapter's own (a
/// sentinel, a cluster node asked for its slot map): a lost connection or no answer in time
/// becomes an `ERR_STORE_CONNECTION` naming `server`.
pub async fn ask_by(
    stream: &mut Box<dyn Stream>,
    commands: &[u8],
    replies: usize,
    deadline: tokio::time::Instant,
    server: &str,
    take: impl FnMut(usize, Frame, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let failed = |what: String| StoreError::new(ErrorCode::Connection, format!("{server}: {what}"));
    match timeout_at(deadline, exchange(stream, commands, replies, take)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(Exchange::Reply(err))) => Err(err),
        Ok(Err(Exchange::Io(err))) => Err(failed(format!("the connection was lost: {err}"))),
        Err(_) => Err(failed("no answer in time".into())),
    }
}

/// The errno name Node would give this error, where the kind tells it.
fn errno_name(err: &io::Error) -> Option<&'static str> {
    use io::ErrorKind::*;
    Some(match err.kind() {
        ConnectionRefused => "ECONNREFUSED",
        ConnectionReset => "ECONNRESET",
        ConnectionAborted => "ECONNABORTED",
        NotConnected => "ENOTCONN",
        BrokenPipe => "EPIPE",
        // The peer closed the socket in the middle of a step.
        UnexpectedEof => "ECONNRESET",
        TimedOut => "ETIMEDOUT",
        HostUnreachable => "EHOSTUNREACH",
        NetworkUnreachable => "ENETUNREACH",
        AddrNotAvailable => "EADDRNOTAVAIL",
        NotFound => "ENOENT",
        PermissionDenied => "EACCES",
        _ => return None,
    })
}

/// No Nagle delay on pipelined batches; keepalive probes find a peer that vanished without
/// closing (a dropped NAT entry).
fn tune(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
}

fn invalid(message: String) -> StoreError {
    StoreError::new(ErrorCode::InvalidArgument, message)
}

fn tls_config(tls: &TlsOptions) -> Result<ClientConfig, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(format!("TLS setup failed: {e}")))?;
    let builder = if tls.reject_unauthorized == Some(false) {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &tls.ca {
            Some(ca) => {
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    let cert = cert.map_err(|e| invalid(format!("tls.ca: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid(format!("tls.ca: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(invalid("tls.ca holds no PEM certificate".into()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    };
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("tls.cert: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| invalid(format!("tls.key: {e}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("tls.cert/tls.key: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `rejectUnauthorized: false`: the server's certificate is not checked against any root,
/// but the handshake's signatures still are.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(port: u16, password: Option<&str>) -> RedisOptions {
        RedisOptions {
            host: "127.0.0.1".into(),
            port: port.into(),
            path: None,
            username: None,
            password: password.map(str::to_owned),
            db: 0,
            tls: None,
            connect_timeout_ms: 1000,
            command_timeout_ms: 1000,
            max_blocking_connections: 1,
            target: format!("redis://127.0.0.1:{port}/0"),
            target_is_default: true,
            sentinel: None,
            cluster: None,
            nat_map: None,
            sharded_pubsub: false,
        }
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    }

    #[tokio::test]
    async fn a_refused_connection_names_target_step_and_errno() {
        let port = closed_port();
        let connector = Connector::new(&options(port, Some("hunter2")), None).expect("options");
        let err = match connector.connect_within(Duration::from_secs(1)).await {
            Err(err) => err,
            Ok(_) => panic!("connected to a closed port"),
        };
        assert_eq!(err.code, ErrorCode::Connection);
        let expected = format!(
            "redis://127.0.0.1:{port}/0 (the default: no URL or host was given): TCP connect failed: ECONNREFUSED"
        );
        assert!(err.message.starts_with(&expected), "{}", err.message);
        assert!(!err.message.contains("hunter2"));
        let cause = err.cause.expect("a cause");
        assert_eq!((cause.errno, cause.syscall), ("ECONNREFUSED", "connect"));
        assert_eq!(
            (cause.address.as_deref(), cause.port),
            (Some("127.0.0.1"), Some(port))
        );
    }
}
