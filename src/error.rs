//! Error codes, defined here once and exported to JS, and the mapping of Redis failures onto
//! them.

use napi_derive::napi;

/// Every error the package makes carries one of these. `lib/errors.js` lists them by hand for
/// its JSDoc and types; a test checks the two lists agree.
#[napi(string_enum)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    #[napi(value = "ERR_STORE_INVALID_ARGUMENT")]
    InvalidArgument,
    /// Made in JS only (JSON.stringify), listed here so the list is whole.
    #[napi(value = "ERR_STORE_SERIALIZE")]
    Serialize,
    #[napi(value = "ERR_STORE_NOT_INTEGER")]
    NotInteger,
    #[napi(value = "ERR_STORE_CONNECTION")]
    Connection,
    #[napi(value = "ERR_STORE_TIMEOUT")]
    Timeout,
    #[napi(value = "ERR_STORE_AUTH")]
    Auth,
    #[napi(value = "ERR_STORE_CLOSED")]
    Closed,
    #[napi(value = "ERR_STORE_REDIS")]
    Redis,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "ERR_STORE_INVALID_ARGUMENT",
            ErrorCode::Serialize => "ERR_STORE_SERIALIZE",
            ErrorCode::NotInteger => "ERR_STORE_NOT_INTEGER",
            ErrorCode::Connection => "ERR_STORE_CONNECTION",
            ErrorCode::Timeout => "ERR_STORE_TIMEOUT",
            ErrorCode::Auth => "ERR_STORE_AUTH",
            ErrorCode::Closed => "ERR_STORE_CLOSED",
            ErrorCode::Redis => "ERR_STORE_REDIS",
        }
    }
}

/// The system-level reason under a connection failure, as Node reports its own socket errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The errno name (`ECONNREFUSED`), or `ETIMEDOUT` for a step that ran out of time.
    pub errno: &'static str,
    pub syscall: &'static str,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub code: ErrorCode,
    pub message: String,
    /// A number out of range: JS raises it as a `RangeError`.
    pub out_of_range: bool,
    /// The server said the command did not run and the condition will pass.
    pub retryable: bool,
    pub cause: Option<Box<Cause>>,
    /// A subscription given up for good: JS forgets the channel before reporting this.
    pub channel: Option<String>,
    /// The server is a replica (READONLY): the command did not run. Under Sentinel the
    /// master has moved, and the call is retried on the new one.
    pub demoted: bool,
    /// A cluster node sent the call elsewhere (MOVED, ASK): it did not run.
    pub redirect: Option<Box<Redirect>>,
}

/// Where a cluster node said a key's slot is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub slot: u16,
    /// Empty when the node does not know its own address: the node that answered.
    pub host: String,
    pub port: u16,
    /// ASK: for this one command, during a migration; MOVED: from now on.
    pub ask: bool,
}

impl StoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        StoreError {
            code,
            message: message.into(),
            out_of_range: false,
            retryable: false,
            cause: None,
            channel: None,
            demoted: false,
            redirect: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        StoreError::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_integer() -> Self {
        StoreError::new(ErrorCode::NotInteger, "value is not an integer")
    }

    pub fn out_of_safe_range() -> Self {
        StoreError {
            out_of_range: true,
            ..StoreError::new(
                ErrorCode::NotInteger,
                "increment result is beyond Number.MAX_SAFE_INTEGER",
            )
        }
    }

    pub fn timeout(after_ms: u64) -> Self {
        StoreError::new(
            ErrorCode::Timeout,
            format!("no reply from the server within {after_ms} ms; the command may have run"),
        )
    }

    pub fn closed() -> Self {
        StoreError::new(ErrorCode::Closed, "the store adapter is closed")
    }
}

/// The server's words for a refusal of the connection itself, whatever command it answers,
/// and whether it passes (a full server) or not (protected mode).
fn refuses_connection(text: &str) -> Option<bool> {
    if text.starts_with("ERR max number of clients reached") {
        Some(true)
    } else if text.starts_with("DENIED ") {
        Some(false)
    } else {
        None
    }
}

/// Replies that say the command did not run and the condition will pass. NOREPLICAS: a
/// master with `min-replicas-to-write` has too few replicas for now, as while a replica is
/// promoted in its place; CLUSTERDOWN: a cluster that lost a master for now.
fn passing_state(code: &str) -> bool {
    matches!(
        code,
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "NOREPLICAS" | "CLUSTERDOWN"
    )
}

/// `MOVED 3999 127.0.0.1:6381` or `ASK ...`.
fn redirect(code: &str, detail: &str) -> Option<Redirect> {
    let ask = match code {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let (slot, address) = detail.split_once(' ')?;
    let (host, port) = address.rsplit_once(':')?;
    Some(Redirect {
        slot: slot.parse().ok()?,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: port.parse().ok()?,
        ask,
    })
}

/// What a command did to make the server refuse it, where that changes the error's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// AUTH: a refusal is a failed login.
    Login,
    /// INCR/INCRBY: refusals of the stored value have their own code.
    Increment,
    Other,
}

/// An error reply ("CODE detail"), keeping the server's text.
pub fn from_server_reply(text: &str, command: Refused) -> StoreError {
    let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
    if let Some(retryable) = refuses_connection(text) {
        return StoreError {
            retryable,
            ..StoreError::new(ErrorCode::Connection, text)
        };
    }
    if let Some(redirect) = redirect(code, detail) {
        return StoreError {
            retryable: true,
            redirect: Some(Box::new(redirect)),
            ..StoreError::new(ErrorCode::Redis, text)
        };
    }
    if code == "READONLY" {
        return StoreError {
            demoted: true,
            ..StoreError::new(ErrorCode::Redis, text)
        };
    }
    if passing_state(code) {
        return StoreError {
            retryable: true,
            ..StoreError::new(ErrorCode::Redis, text)
        };
    }
    match command {
        Refused::Login => StoreError::new(ErrorCode::Auth, text),
        Refused::Increment if detail.contains("would overflow") => StoreError {
            message: format!(
                "{text}: the value is unchanged, and is beyond Number.MAX_SAFE_INTEGER"
            ),
            ..StoreError::out_of_safe_range()
        },
        Refused::Increment if code == "ERR" && detail.contains("not an integer") => {
            StoreError::new(ErrorCode::NotInteger, text)
        }
        _ => StoreError::new(ErrorCode::Redis, text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_codes() {
        let cases = [
            (
                "WRONGPASS invalid username-password pair",
                Refused::Login,
                ErrorCode::Auth,
                false,
            ),
            (
                "ERR max number of clients reached",
                Refused::Login,
                ErrorCode::Connection,
                true,
            ),
            (
                "ERR max number of clients reached",
                Refused::Other,
                ErrorCode::Connection,
                true,
            ),
            (
                "NOAUTH Authentication required.",
                Refused::Other,
                ErrorCode::Redis,
                false,
            ),
            (
                "LOADING Redis is loading the dataset in memory",
                Refused::Other,
                ErrorCode::Redis,
                true,
            ),
            (
                "BUSY Redis is busy running a script.",
                Refused::Increment,
                ErrorCode::Redis,
                true,
            ),
            (
                "MASTERDOWN Link with MASTER is down",
                Refused::Other,
                ErrorCode::Redis,
                true,
            ),
            (
                "NOREPLICAS Not enough good replicas to write.",
                Refused::Other,
                ErrorCode::Redis,
                true,
            ),
            (
                "READONLY You can't write against a read only replica.",
                Refused::Other,
                ErrorCode::Redis,
                false,
            ),
            (
                "TRYAGAIN Multiple keys request during rehashing",
                Refused::Other,
                ErrorCode::Redis,
                true,
            ),
            (
                "ERR value is not an integer or out of range",
                Refused::Increment,
                ErrorCode::NotInteger,
                false,
            ),
            (
                "ERR value is not an integer or out of range",
                Refused::Other,
                ErrorCode::Redis,
                false,
            ),
            (
                "NOPERM this user has no permissions",
                Refused::Other,
                ErrorCode::Redis,
                false,
            ),
        ];
        for (text, command, code, retryable) in cases {
            let err = from_server_reply(text, command);
            assert_eq!((err.code, err.retryable), (code, retryable), "{text}");
            assert!(err.message.starts_with(text), "{text}");
        }
        let moved = from_server_reply("MOVED 3999 127.0.0.1:6381", Refused::Other);
        assert_eq!(
            moved.redirect.as_deref(),
            Some(&Redirect {
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381,
                ask: false
            })
        );
        let ask = from_server_reply("ASK 12 :7000", Refused::Other);
        assert_eq!(
            ask.redirect.map(|r| (r.host, r.port, r.ask)),
            Some((String::new(), 7000, true))
        );
        let overflow = from_server_reply(
            "ERR increment or decrement would overflow",
            Refused::Increment,
        );
        assert_eq!(overflow.code, ErrorCode::NotInteger);
        assert!(overflow.out_of_range);
        assert!(overflow.message.contains("unchanged"));
    }
}
