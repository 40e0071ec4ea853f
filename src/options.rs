//! Connection settings as the JS layer hands them over, already validated there (the
//! factory must throw synchronously with a coded `TypeError`, which is JS's to make).

use std::time::Duration;

use napi_derive::napi;

/// No `Debug`: it holds the password.
#[napi(object)]
pub struct RedisOptions {
    pub host: String,
    pub port: u32,
    /// A unix socket path; `host` and `port` are then unused.
    pub path: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    pub tls: Option<TlsOptions>,
    pub connect_timeout_ms: u32,
    pub command_timeout_ms: u32,
    /// Connections blocking stream reads may hold at once.
    pub max_blocking_connections: u32,
    /// The server as errors name it: a URL without the password.
    pub target: String,
    /// No URL, host or port was given, so `target` is the default.
    pub target_is_default: bool,
    /// The master is found through these sentinels; `host`, `port` and `path` are then unused.
    pub sentinel: Option<SentinelOptions>,
    /// A cluster's seed nodes; `host`, `port` and `path` are then unused.
    pub cluster: Option<Vec<NodeAddress>>,
    /// A cluster's nodes as they announce themselves, mapped to where they can be reached.
    pub nat_map: Option<Vec<NatEntry>>,
    /// A cluster's Pub/Sub on shard channels (SSUBSCRIBE, SPUBLISH).
    pub sharded_pubsub: bool,
}

/// `natMap`: the node announced as `from` (`host:port`) is reached at `host:port`.
#[napi(object)]
pub struct NatEntry {
    pub from: String,
    pub host: String,
    pub port: u32,
}

/// No `Debug`: it holds the sentinels' password.
#[napi(object)]
pub struct SentinelOptions {
    pub sentinels: Vec<NodeAddress>,
    pub master_name: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[napi(object)]
#[derive(Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub host: String,
    pub port: u32,
}

#[napi(object)]
pub struct TlsOptions {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// The name the server's certificate must carry, when it is not `host`.
    pub servername: Option<String>,
    pub reject_unauthorized: Option<bool>,
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
}

impl RedisOptions {
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms.into()),
            command: Duration::from_millis(self.command_timeout_ms.into()),
        }
    }
}
