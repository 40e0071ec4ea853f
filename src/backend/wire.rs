//! The command connection's own wire: RESP2 requests written straight into one buffer per
//! batch, and replies parsed straight into what JS receives. The redis crate's multiplexed
//! connection put a channel, a task wake, a `Value` tree and an allocation per argument
//! between the queue and the socket; on this path those were most of the I/O thread's work.

use std::ops::Range;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use super::Op;
use crate::error::{from_server_reply, ErrorCode, StoreError};
use crate::options::RedisOptions;

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Appends one command to `out` in RESP's array-of-bulk-strings form.
pub fn encode(out: &mut Vec<u8>, op: &Op, key: &str, payload: &str) {
    let mut ttl_digits = itoa::Buffer::new();
    match op {
        Op::Get => command(out, &[b"GET", key.as_bytes()]),
        Op::Set { ttl: None } => command(out, &[b"SET", key.as_bytes(), payload.as_bytes()]),
        Op::Set { ttl: Some(ttl) } => {
            let ms = ttl_digits.format(ttl.as_millis() as u64).as_bytes();
            command(
                out,
                &[b"SET", key.as_bytes(), payload.as_bytes(), b"PX", ms],
            )
        }
        Op::Delete => command(out, &[b"DEL", key.as_bytes()]),
        Op::Has => command(out, &[b"EXISTS", key.as_bytes()]),
        Op::Increment => command(out, &[b"INCR", key.as_bytes()]),
        Op::Expire { ttl } => {
            let ms = ttl_digits.format(ttl.as_millis() as u64).as_bytes();
            command(out, &[b"PEXPIRE", key.as_bytes(), ms])
        }
        // Subscriptions travel on their own connection; they never reach this one.
        Op::Publish | Op::Subscribe | Op::Unsubscribe => {
            command(out, &[b"PUBLISH", key.as_bytes(), payload.as_bytes()])
        }
    }
}

pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let mut digits = itoa::Buffer::new();
    out.push(b'*');
    out.extend_from_slice(digits.format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(digits.format(arg.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// One RESP2 reply, pointing into the read buffer where it carries bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Status(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Range<usize>),
    Nil,
    /// What a Pub/Sub connection receives: messages and confirmations.
    Array(Vec<Frame>),
}

pub enum Parsed {
    /// A whole reply and the bytes it took.
    Frame(Frame, usize),
    /// More bytes are needed; at least this many in all, where the header says so.
    Incomplete(usize),
}

/// The most a length header may announce: Redis's own ceiling for a bulk string
/// (`proto-max-bulk-len` is 512 MB by default), and far more elements than any reply these
/// commands get. A header past them is a broken or hostile peer, not a reply to wait for.
const MAX_BULK: i64 = 512 * 1024 * 1024;
const MAX_ELEMENTS: i64 = 1024 * 1024;
/// Status and error lines are short; this bounds the search for a line's end.
const MAX_LINE: usize = 1024 * 1024;
/// Sockets are read in chunks of this much; a buffer that grew past `KEEP_BUFFER` for a big
/// value shrinks back once it is drained (read buffers, and the buffer a batch is encoded in).
const READ_CHUNK: usize = 64 * 1024;
const KEEP_BUFFER: usize = 1024 * 1024;
/// A reply announced as this big or bigger is given room in steps, as its bytes arrive.
const GROW_STEP: usize = 16 * 1024 * 1024;

/// Room to read into: a chunk at least, and more toward a big reply's announced size.
pub fn make_room(buf: &mut Vec<u8>, wanted: usize) {
    let more = wanted.saturating_sub(buf.len()).min(GROW_STEP);
    if buf.capacity() - buf.len() < (READ_CHUNK / 2).max(more) {
        buf.reserve(READ_CHUNK.max(more));
    }
}

/// Drops the first `used` bytes (parsed, or written), and lets go of the room a big value needed.
pub fn consume(buf: &mut Vec<u8>, used: usize) {
    buf.drain(..used);
    if buf.capacity() > KEEP_BUFFER && buf.len() < READ_CHUNK {
        buf.shrink_to(READ_CHUNK);
    }
}

/// The text in `bytes[range]`. Other clients may write bytes that are not UTF-8: they arrive
/// as replacement characters.
pub fn text(bytes: &[u8], range: &Range<usize>) -> String {
    String::from_utf8_lossy(&bytes[range.clone()]).into_owned()
}

/// Hands each whole reply at the start of `buf` to `take`, with the bytes its ranges point
/// into. Returns the bytes they took and what the next, incomplete one needs in all (0 when its
/// header has not arrived), both counted from where the unread part will start.
pub fn parse_each(
    buf: &[u8],
    mut take: impl FnMut(Frame, &[u8]) -> Result<(), StoreError>,
) -> Result<(usize, usize), StoreError> {
    let mut at = 0;
    loop {
        match parse(&buf[at..])? {
            Parsed::Frame(frame, used) => {
                take(frame, &buf[at..])?;
                at += used;
            }
            Parsed::Incomplete(needed) => return Ok((at, needed)),
        }
    }
}

/// Parses the reply at the start of `buf`. Arrays hold plain values only: Pub/Sub pushes are
/// flat, and nothing sent on these connections is answered with a nested array.
pub fn parse(buf: &[u8]) -> Result<Parsed, StoreError> {
    parse_at(buf, 0, true)
}

/// Parses the reply at `at`; ranges and sizes count from the start of `buf`.
fn parse_at(buf: &[u8], at: usize, arrays: bool) -> Result<Parsed, StoreError> {
    let rest = &buf[at..];
    let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
        if rest.len() > MAX_LINE {
            return Err(protocol_error("a line with no end"));
        }
        return Ok(Parsed::Incomplete(0));
    };
    let Some(&kind) = rest.first() else {
        return Ok(Parsed::Incomplete(0));
    };
    let line = at + 1..at + line_end;
    let after_line = at + line_end + 2;
    let frame = match kind {
        b'+' => Frame::Status(line),
        b'-' => Frame::Error(line),
        b':' => Frame::Integer(integer(&buf[line])?),
        b'$' => {
            let len = integer(&buf[line])?;
            if len < 0 {
                return Ok(Parsed::Frame(Frame::Nil, after_line));
            }
            if len > MAX_BULK {
                return Err(protocol_error("a string longer than 512 MB"));
            }
            let end = after_line + len as usize;
            if buf.len() < end + 2 {
                return Ok(Parsed::Incomplete(end + 2));
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(protocol_error("a string of the wrong length"));
            }
            return Ok(Parsed::Frame(Frame::Bulk(after_line..end), end + 2));
        }
        b'*' if arrays => {
            let count = integer(&buf[line])?;
            if count > MAX_ELEMENTS {
                return Err(protocol_error("an array too long for any reply"));
            }
            let mut items = Vec::with_capacity(count.clamp(0, 16) as usize);
            let mut next = after_line;
            for _ in 0..count.max(0) {
                match parse_at(buf, next, false)? {
                    Parsed::Frame(item, end) => {
                        items.push(item);
                        next = end;
                    }
                    incomplete => return Ok(incomplete),
                }
            }
            return Ok(Parsed::Frame(Frame::Array(items), next));
        }
        _ => return Err(protocol_error("a reply of a type these commands never get")),
    };
    Ok(Parsed::Frame(frame, after_line))
}

fn integer(digits: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol_error("a malformed number"))
}

pub fn protocol_error(what: &str) -> StoreError {
    StoreError::new(
        ErrorCode::Connection,
        format!("the server sent {what}; the connection was dropped"),
    )
}

/// Where and how to connect, and what to say first.
pub struct Connector {
    target: Target,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// `AUTH` and `SELECT`, sent before any command, and how many replies they expect.
    hello: Vec<u8>,
    hello_replies: usize,
    /// The first of them is an `AUTH`.
    authenticates: bool,
}

enum Target {
    Tcp(String, u16),
    Unix(String),
}

impl Connector {
    pub fn new(options: &RedisOptions) -> Result<Self, StoreError> {
        let target = match &options.path {
            Some(path) => Target::Unix(path.clone()),
            None => Target::Tcp(options.host.clone(), options.port as u16),
        };
        let tls = match &options.tls {
            Some(tls) if options.path.is_none() => {
                let config = tls_config(tls)?;
                let name = tls
                    .servername
                    .clone()
                    .unwrap_or_else(|| options.host.clone());
                let name = ServerName::try_from(name)
                    .map_err(|e| invalid(format!("not a valid TLS server name: {e}")))?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        let mut hello = Vec::new();
        let mut hello_replies = 0;
        if let Some(password) = &options.password {
            match &options.username {
                Some(user) => command(&mut hello, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => command(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
            hello_replies += 1;
        }
        if options.db != 0 {
            let mut digits = itoa::Buffer::new();
            command(
                &mut hello,
                &[b"SELECT", digits.format(options.db).as_bytes()],
            );
            hello_replies += 1;
        }
        Ok(Connector {
            target,
            tls,
            hello,
            hello_replies,
            authenticates: options.password.is_some(),
        })
    }

    /// A connection that has authenticated and selected its database.
    pub async fn connect(&self) -> Result<Box<dyn Stream>, StoreError> {
        let mut stream: Box<dyn Stream> = match &self.target {
            Target::Tcp(host, port) => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| connection_error("could not connect", &e))?;
                tune(&tcp);
                match &self.tls {
                    Some((connector, name)) => Box::new(
                        connector
                            .connect(name.clone(), tcp)
                            .await
                            .map_err(|e| connection_error("TLS handshake failed", &e))?,
                    ),
                    None => Box::new(tcp),
                }
            }
            Target::Unix(path) => Box::new(
                UnixStream::connect(path)
                    .await
                    .map_err(|e| connection_error("could not connect", &e))?,
            ),
        };
        if self.hello_replies > 0 {
            stream
                .write_all(&self.hello)
                .await
                .map_err(|e| connection_error("connection lost", &e))?;
            self.read_hello_replies(&mut stream).await?;
        }
        Ok(stream)
    }

    async fn read_hello_replies(&self, stream: &mut Box<dyn Stream>) -> Result<(), StoreError> {
        let mut buf = Vec::with_capacity(256);
        let mut replies = 0;
        while replies < self.hello_replies {
            match parse(&buf)? {
                Parsed::Frame(frame, used) => {
                    if let Frame::Error(text) = &frame {
                        let refusal = from_server_reply(&self::text(&buf, text), false);
                        // A refused AUTH is a failed login whatever words the server version
                        // uses ("WRONGPASS", "ERR invalid password", no password configured).
                        let login_refused = replies == 0 && self.authenticates;
                        return Err(if login_refused {
                            StoreError::new(ErrorCode::Auth, refusal.message)
                        } else {
                            refusal
                        });
                    }
                    buf.drain(..used);
                    replies += 1;
                }
                Parsed::Incomplete(_) => {
                    let read = stream
                        .read_buf(&mut buf)
                        .await
                        .map_err(|e| connection_error("connection lost", &e))?;
                    if read == 0 {
                        return Err(StoreError::new(
                            ErrorCode::Connection,
                            "the server closed the connection while it was being set up",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// No Nagle delay on pipelined batches; keepalive probes find a peer that vanished without
/// closing (a dropped NAT entry).
fn tune(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(30))
        .with_interval(std::time::Duration::from_secs(10));
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
}

fn connection_error(what: &str, err: &std::io::Error) -> StoreError {
    StoreError::new(ErrorCode::Connection, format!("{what}: {err}"))
}

fn invalid(message: String) -> StoreError {
    StoreError::new(ErrorCode::InvalidArgument, message)
}

/// Connects with a deadline; a connection not ready in time is a connection error.
pub async fn connect_within(
    connector: &Connector,
    limit: std::time::Duration,
) -> Result<Box<dyn Stream>, StoreError> {
    timeout(limit, connector.connect())
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::new(
                ErrorCode::Connection,
                "could not connect within connectTimeout",
            ))
        })
}

fn tls_config(tls: &crate::options::TlsOptions) -> Result<ClientConfig, StoreError> {
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
