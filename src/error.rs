//! Error codes of SPEC section 4, and the mapping from Redis failures onto them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotInteger,
    Connection,
    Timeout,
    Auth,
    Closed,
    Redis,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "ERR_STORE_INVALID_ARGUMENT",
            ErrorCode::NotInteger => "ERR_STORE_NOT_INTEGER",
            ErrorCode::Connection => "ERR_STORE_CONNECTION",
            ErrorCode::Timeout => "ERR_STORE_TIMEOUT",
            ErrorCode::Auth => "ERR_STORE_AUTH",
            ErrorCode::Closed => "ERR_STORE_CLOSED",
            ErrorCode::Redis => "ERR_STORE_REDIS",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub code: ErrorCode,
    pub message: String,
    /// A number out of range: JS raises it as a `RangeError`.
    pub out_of_range: bool,
}

impl StoreError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        StoreError {
            code,
            message: message.into(),
            out_of_range: false,
        }
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
            format!("no reply from the server within {after_ms} ms"),
        )
    }

    pub fn closed() -> Self {
        StoreError::new(ErrorCode::Closed, "the store adapter is closed")
    }
}

fn is_auth_reply(code: Option<&str>) -> bool {
    matches!(code, Some("NOAUTH" | "WRONGPASS"))
}

/// An error reply to one command of a pipeline ("CODE detail"), keeping the server's text.
/// `to_increment`: the command was INCR, whose refusals of the stored value have their own code.
pub fn from_server_reply(text: &str, to_increment: bool) -> StoreError {
    let (code, detail) = text.split_once(' ').unwrap_or((text, ""));
    let code = if is_auth_reply(Some(code)) {
        ErrorCode::Auth
    } else if to_increment && detail.contains("would overflow") {
        return StoreError::out_of_safe_range();
    } else if to_increment && code == "ERR" && detail.contains("not an integer") {
        ErrorCode::NotInteger
    } else {
        ErrorCode::Redis
    };
    StoreError::new(code, text)
}
