//! What each operation sends to Redis, and which replies it accepts.

use super::resp::{self, Frame};
use super::{Op, MAX_SAFE_INTEGER};
use crate::bridge::Reply;
use crate::error::{from_server_reply, Refused, StoreError};

/// Appends the operation's command to `out`.
pub fn encode(out: &mut Vec<u8>, op: &Op, key: &str, payload: &str) {
    let mut ttl_digits = itoa::Buffer::new();
    let (key, payload) = (key.as_bytes(), payload.as_bytes());
    match op {
        Op::Get => resp::command(out, &[b"GET", key]),
        Op::Set { ttl: None } => resp::command(out, &[b"SET", key, payload]),
        Op::Set { ttl: Some(ttl) } => {
            let ms = ttl_digits.format(ttl.as_millis() as u64).as_bytes();
            resp::command(out, &[b"SET", key, payload, b"PX", ms])
        }
        Op::Delete => resp::command(out, &[b"DEL", key]),
        Op::Has => resp::command(out, &[b"EXISTS", key]),
        Op::Increment => resp::command(out, &[b"INCR", key]),
        Op::Expire { ttl } => {
            let ms = ttl_digits.format(ttl.as_millis() as u64).as_bytes();
            resp::command(out, &[b"PEXPIRE", key, ms])
        }
        Op::Publish => resp::command(out, &[b"PUBLISH", key, payload]),
        // The subscriber sends these itself, never through a command batch.
        Op::Subscribe => resp::command(out, &[b"SUBSCRIBE", key]),
        Op::Unsubscribe => resp::command(out, &[b"UNSUBSCRIBE", key]),
    }
}

/// What a reply means for the call that gets it.
pub enum Outcome {
    /// The call is settled with this.
    Settled(Reply),
    /// The server said the command did not run, and the condition will pass.
    Refused(StoreError),
    /// Not a reply this command can get: the replies are out of step with the commands.
    Mismatch,
}

pub fn outcome(op: &Op, frame: Frame, bytes: &[u8]) -> Outcome {
    let reply = match (op, frame) {
        (op, Frame::Error(message)) => {
            let command = match op {
                Op::Increment => Refused::Increment,
                _ => Refused::Other,
            };
            let err = from_server_reply(&resp::text(bytes, &message), command);
            if err.retryable {
                return Outcome::Refused(err);
            }
            Reply::Error(err)
        }
        (Op::Get, Frame::Nil) => Reply::Null,
        (Op::Get, Frame::Bulk(value)) => Reply::Text(resp::text(bytes, &value)),
        (Op::Has, Frame::Integer(n)) => Reply::Bool(n > 0),
        (Op::Increment, Frame::Integer(n))
            if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&n) =>
        {
            Reply::Error(StoreError::out_of_safe_range())
        }
        (Op::Increment, Frame::Integer(n)) => Reply::Number(n as f64),
        (Op::Set { .. }, Frame::Status(_)) => Reply::Null,
        (Op::Delete | Op::Expire { .. } | Op::Publish, Frame::Integer(_)) => Reply::Null,
        _ => return Outcome::Mismatch,
    };
    Outcome::Settled(reply)
}
