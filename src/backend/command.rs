//! What each operation sends to Redis, and which replies it accepts.

use super::json;
use super::resp::{self, Frame};
use super::{Op, Request, MAX_SAFE_INTEGER};
use crate::bridge::Reply;
use crate::error::{from_server_reply, Refused, StoreError};

/// Appends the request's command to `out`.
pub fn encode(out: &mut Vec<u8>, request: &Request) {
    // Asked to by a node migrating the slot: its reply is read and dropped.
    if request.ask.is_some() {
        resp::command(out, &[b"ASKING"]);
    }
    let mut first_digits = itoa::Buffer::new();
    let mut second_digits = itoa::Buffer::new();
    let key = request.key.as_bytes();
    let payload = request.payload.as_bytes();
    let arg = |i: usize| request.args.get(i).map_or(&b""[..], |a| a.as_bytes());
    match request.op {
        Op::Get => resp::command(out, &[b"GET", key]),
        Op::Set { ttl: None } => resp::command(out, &[b"SET", key, payload]),
        Op::Set { ttl: Some(ttl) } => {
            let ms = first_digits.format(ttl.as_millis() as u64).as_bytes();
            resp::command(out, &[b"SET", key, payload, b"PX", ms])
        }
        Op::SetIfAbsent { ttl: None } => resp::command(out, &[b"SET", key, payload, b"NX"]),
        Op::SetIfAbsent { ttl: Some(ttl) } => {
            let ms = first_digits.format(ttl.as_millis() as u64).as_bytes();
            resp::command(out, &[b"SET", key, payload, b"NX", b"PX", ms])
        }
        Op::Delete => resp::command(out, &[b"DEL", key]),
        Op::Has => resp::command(out, &[b"EXISTS", key]),
        Op::Increment { by: 1 } => resp::command(out, &[b"INCR", key]),
        Op::Increment { by } => {
            resp::command(out, &[b"INCRBY", key, first_digits.format(by).as_bytes()])
        }
        Op::Expire { ttl } => {
            let ms = first_digits.format(ttl.as_millis() as u64).as_bytes();
            resp::command(out, &[b"PEXPIRE", key, ms])
        }
        Op::GetMany => {
            let mut args: Vec<&[u8]> = Vec::with_capacity(request.args.len() + 1);
            args.push(b"MGET");
            args.extend(request.args.iter().map(|k| k.as_bytes()));
            resp::command(out, &args)
        }
        // Entries with a TTL are sent as SETs of their own (see `RedisBackend::submit`).
        Op::SetMany => {
            let mut args: Vec<&[u8]> = Vec::with_capacity(request.args.len() / 3 * 2 + 1);
            args.push(b"MSET");
            for entry in request.args.chunks(3) {
                args.extend(entry.iter().take(2).map(|s| s.as_bytes()));
            }
            resp::command(out, &args)
        }
        Op::Scan { count, .. } => {
            let count = first_digits.format(count).as_bytes();
            resp::command(out, &[b"SCAN", payload, b"MATCH", key, b"COUNT", count])
        }
        // Plain `MAXLEN n` trims exactly on every server version (`=` needs Redis 6.2).
        Op::StreamAdd {
            max_len: Some(max_len),
            approximate,
        } => {
            let max_len = first_digits.format(max_len).as_bytes();
            if approximate {
                resp::command(
                    out,
                    &[
                        b"XADD", key, b"MAXLEN", b"~", max_len, b"*", b"data", payload,
                    ],
                )
            } else {
                resp::command(
                    out,
                    &[b"XADD", key, b"MAXLEN", max_len, b"*", b"data", payload],
                )
            }
        }
        Op::StreamAdd { max_len: None, .. } => {
            resp::command(out, &[b"XADD", key, b"*", b"data", payload])
        }
        Op::GroupCreate => resp::command(
            out,
            &[b"XGROUP", b"CREATE", key, payload, arg(0), b"MKSTREAM"],
        ),
        Op::GroupRead { count, block } => {
            let mut args: Vec<&[u8]> = vec![b"XREADGROUP", b"GROUP", payload, arg(0)];
            if let Some(count) = count {
                args.extend([&b"COUNT"[..], first_digits.format(count).as_bytes()]);
            }
            if let Some(block) = block {
                let ms = second_digits.format(block.as_millis() as u64).as_bytes();
                args.extend([&b"BLOCK"[..], ms]);
            }
            args.extend([&b"STREAMS"[..], key, b">"]);
            resp::command(out, &args)
        }
        Op::Range { count, reverse } => {
            let (name, from, to): (&[u8], _, _) = if reverse {
                (b"XREVRANGE", arg(1), arg(0))
            } else {
                (b"XRANGE", arg(0), arg(1))
            };
            match count {
                Some(count) => resp::command(
                    out,
                    &[
                        name,
                        key,
                        from,
                        to,
                        b"COUNT",
                        first_digits.format(count).as_bytes(),
                    ],
                ),
                None => resp::command(out, &[name, key, from, to]),
            }
        }
        Op::Ack => {
            let mut args: Vec<&[u8]> = Vec::with_capacity(request.args.len() + 3);
            args.extend([&b"XACK"[..], key, payload]);
            args.extend(request.args.iter().map(|id| id.as_bytes()));
            resp::command(out, &args)
        }
        Op::Publish => resp::command(out, &[b"PUBLISH", key, payload]),
        Op::ShardPublish => resp::command(out, &[b"SPUBLISH", key, payload]),
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

pub fn outcome(request: &Request, frame: Frame, bytes: &[u8]) -> Outcome {
    let op = &request.op;
    let reply = match (op, frame) {
        (Op::GroupCreate, Frame::Error(message))
            if bytes[message.clone()].starts_with(b"BUSYGROUP") =>
        {
            Reply::Null
        }
        (op, Frame::Error(message)) => {
            let command = match op {
                Op::Increment { .. } => Refused::Increment,
                _ => Refused::Other,
            };
            let err = from_server_reply(&resp::text(bytes, &message), command);
            if err.retryable || err.demoted {
                return Outcome::Refused(err);
            }
            Reply::Error(err)
        }
        (Op::Get, Frame::Nil) => Reply::Null,
        (Op::Get, Frame::Bulk(value)) => Reply::Text(resp::text(bytes, &value)),
        (Op::Has, Frame::Integer(n)) => Reply::Bool(n > 0),
        // Redis holds 64-bit integers: the increment has run, and says what it made.
        (Op::Increment { .. }, Frame::Integer(n))
            if !(-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&n) =>
        {
            Reply::Error(StoreError {
                message: format!(
                    "the increment ran and the value is now {n}, beyond Number.MAX_SAFE_INTEGER: \
                     a JS number cannot hold it exactly"
                ),
                ..StoreError::out_of_safe_range()
            })
        }
        (Op::Increment { .. }, Frame::Integer(n)) => Reply::Number(n as f64),
        (Op::Set { .. } | Op::SetMany | Op::GroupCreate, Frame::Status(_)) => Reply::Null,
        (Op::SetIfAbsent { .. }, Frame::Status(_)) => Reply::Bool(true),
        (Op::SetIfAbsent { .. }, Frame::Nil) => Reply::Bool(false),
        (
            Op::Delete | Op::Expire { .. } | Op::Publish | Op::ShardPublish | Op::Ack,
            Frame::Integer(_),
        ) => Reply::Null,
        // A part of an `mget` split by slot: each value's JSON, which the joint puts in place.
        (Op::GetMany, Frame::Array(values)) if request.joint.is_some() => {
            let mut list = Vec::with_capacity(values.len());
            for value in values {
                let mut json = String::new();
                match value {
                    Frame::Bulk(value) => {
                        json::push_value(&mut json, Some(&resp::text(bytes, &value)))
                    }
                    Frame::Nil => json::push_value(&mut json, None),
                    _ => return Outcome::Mismatch,
                }
                list.push(Reply::Text(json));
            }
            Reply::List(list)
        }
        // One JSON text of the values (see `json`).
        (Op::GetMany, Frame::Array(values)) => {
            let mut out = String::with_capacity(2 + values.iter().map(frame_len).sum::<usize>());
            out.push('[');
            for (i, value) in values.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match value {
                    Frame::Bulk(value) => {
                        json::push_value(&mut out, Some(&resp::text(bytes, &value)))
                    }
                    Frame::Nil => json::push_value(&mut out, None),
                    _ => return Outcome::Mismatch,
                }
            }
            out.push(']');
            Reply::Text(out)
        }
        (Op::Scan { strip, .. }, Frame::Array(page)) => match <[Frame; 2]>::try_from(page) {
            Ok([Frame::Bulk(cursor), Frame::Array(keys)]) => {
                let keys = keys.into_iter().map(|key| match key {
                    Frame::Bulk(key) => Some(Reply::Text(resp::text(
                        bytes,
                        &(key.start + (*strip).min(key.len())..key.end),
                    ))),
                    _ => None,
                });
                // In a cluster: the cursor names the master, and past its last page, the
                // next master's first (or the end, after the last master).
                let cursor = resp::text(bytes, &cursor);
                let cursor = match (request.scan_hop.as_deref(), cursor.as_str()) {
                    (None, _) => cursor,
                    (Some((_, Some(next))), "0") => format!("{next}:0"),
                    (Some((_, None)), "0") => cursor,
                    (Some((id, _)), _) => format!("{id}:{cursor}"),
                };
                match keys.collect() {
                    Some(keys) => Reply::List(vec![Reply::Text(cursor), Reply::List(keys)]),
                    None => return Outcome::Mismatch,
                }
            }
            _ => return Outcome::Mismatch,
        },
        (Op::StreamAdd { .. }, Frame::Bulk(id)) => Reply::Text(resp::text(bytes, &id)),
        // Nothing new (or nothing came while it blocked).
        (Op::GroupRead { .. }, Frame::Nil) => Reply::Text("[]".into()),
        (Op::GroupRead { .. }, Frame::Array(streams)) => {
            // One stream asked for: `[[name, entries]]`.
            let entries = streams.into_iter().next().and_then(|stream| match stream {
                Frame::Array(pair) => match <[Frame; 2]>::try_from(pair) {
                    Ok([Frame::Bulk(_), entries]) => Some(entries),
                    _ => None,
                },
                _ => None,
            });
            match entries.and_then(|entries| stream_entries(entries, bytes)) {
                Some(entries) => entries,
                None => return Outcome::Mismatch,
            }
        }
        (Op::Range { .. }, entries @ Frame::Array(_)) => match stream_entries(entries, bytes) {
            Some(entries) => entries,
            None => return Outcome::Mismatch,
        },
        _ => return Outcome::Mismatch,
    };
    Outcome::Settled(reply)
}

fn frame_len(frame: &Frame) -> usize {
    match frame {
        Frame::Bulk(range) => range.len() + 8,
        _ => 8,
    }
}

/// Stream entries (`[[id, [field, value, ...]], ...]`) as JS takes them: one JSON text of
/// `{ id, message }` objects (see `json::push_entry`). An entry deleted since it was
/// delivered has no fields.
fn stream_entries(entries: Frame, bytes: &[u8]) -> Option<Reply> {
    let Frame::Array(entries) = entries else {
        return None;
    };
    let mut out = String::with_capacity(2 + entries.len() * 160);
    out.push('[');
    for (i, entry) in entries.into_iter().enumerate() {
        let Frame::Array(entry) = entry else {
            return None;
        };
        let [Frame::Bulk(id), fields] = <[Frame; 2]>::try_from(entry).ok()? else {
            return None;
        };
        let fields = match fields {
            Frame::Nil => Vec::new(),
            Frame::Array(fields) => fields,
            _ => return None,
        };
        let mut texts = Vec::with_capacity(fields.len());
        for field in fields {
            let Frame::Bulk(text) = field else {
                return None;
            };
            texts.push(resp::text(bytes, &text));
        }
        if i > 0 {
            out.push(',');
        }
        let pairs = texts
            .chunks_exact(2)
            .map(|pair| (pair[0].as_str(), pair[1].as_str()));
        json::push_entry(&mut out, &resp::text(bytes, &id), pairs);
    }
    out.push(']');
    Some(Reply::Text(out))
}
