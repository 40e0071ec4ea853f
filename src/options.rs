//! Connection settings as the JS layer hands them over, already validated there (the
//! factory must throw synchronously with a coded `TypeError`, which is JS's to make).

use std::time::Duration;

use napi_derive::napi;
use redis::io::tcp::TcpSettings;
use redis::{
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, RedisConnectionInfo,
};

use crate::error::{ErrorCode, StoreError};

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
}

#[napi(object)]
pub struct TlsOptions {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub reject_unauthorized: Option<bool>,
}

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

    pub fn client(&self, protocol: ProtocolVersion) -> Result<redis::Client, StoreError> {
        let addr = match (&self.path, &self.tls) {
            (Some(path), _) => ConnectionAddr::Unix(path.into()),
            (None, None) => ConnectionAddr::Tcp(self.host.clone(), self.port as u16),
            (None, Some(tls)) => ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port as u16,
                insecure: tls.reject_unauthorized == Some(false),
                tls_params: None,
            },
        };
        let mut redis = RedisConnectionInfo::default()
            .set_db(self.db.into())
            .set_protocol(protocol);
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        // Keepalive probes find a peer that vanished without closing (a dropped NAT entry).
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10));
        let info: ConnectionInfo = addr
            .into_connection_info()
            .map_err(invalid)?
            .set_tcp_settings(TcpSettings::default().set_keepalive(keepalive))
            .set_redis_settings(redis);
        match &self.tls {
            Some(tls) if tls.ca.is_some() || tls.cert.is_some() => {
                crate::backend::redis::install_crypto_provider();
                let client_tls = match (&tls.cert, &tls.key) {
                    (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                        client_cert: cert.clone().into_bytes(),
                        client_key: key.clone().into_bytes(),
                    }),
                    _ => None,
                };
                let certs = redis::TlsCertificates {
                    client_tls,
                    root_cert: tls.ca.clone().map(String::into_bytes),
                };
                redis::Client::build_with_tls(info, certs).map_err(invalid)
            }
            Some(_) => {
                crate::backend::redis::install_crypto_provider();
                redis::Client::open(info).map_err(invalid)
            }
            None => redis::Client::open(info).map_err(invalid),
        }
    }
}

fn invalid(err: redis::RedisError) -> StoreError {
    StoreError::new(ErrorCode::InvalidArgument, err.to_string())
}
