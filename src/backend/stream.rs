//! A stream as the memory store keeps it: entries by id, each with its `data` field, and
//! consumer groups that remember what they delivered and to whom, as Redis streams do.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use super::json;
use crate::bridge::Reply;
use crate::error::StoreError;

/// `ms-seq`: milliseconds since the epoch and a sequence within them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// `ms-seq`, or `ms` alone, whose sequence is the lowest or, for the high end of a
    /// range, the highest; `-` and `+` only where `ends` allows them.
    pub fn parse(text: &str, high: bool, ends: bool) -> Option<StreamId> {
        match text {
            "-" if ends => return Some(StreamId::default()),
            "+" if ends => return Some(StreamId::MAX),
            _ => {}
        }
        let (ms, seq) = match text.split_once('-') {
            Some((ms, seq)) => (ms, Some(seq)),
            None => (text, None),
        };
        let number = |digits: &str| {
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten()
        };
        let ms = number(ms)?;
        let seq = match seq {
            Some(seq) => number(seq)?,
            None if high => u64::MAX,
            None => 0,
        };
        Some(StreamId { ms, seq })
    }

    /// `parse`, failing with the invalid argument it is.
    pub fn parse_or_refuse(text: &str, high: bool, ends: bool) -> Result<StreamId, StoreError> {
        StreamId::parse(text, high, ends)
            .ok_or_else(|| StoreError::invalid_argument(format!("invalid stream id {text:?}")))
    }

    pub fn text(self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }
}

struct Group {
    /// The newest entry delivered to the group: a read gets the entries after it.
    last_delivered: StreamId,
    /// Delivered and not yet acknowledged, with the consumer each went to.
    pending: BTreeMap<StreamId, Arc<str>>,
}

#[derive(Default)]
pub struct Stream {
    entries: BTreeMap<StreamId, Arc<str>>,
    last_id: StreamId,
    groups: HashMap<String, Group>,
}

/// An entry: its id and its `data` field.
pub type Entry = (StreamId, Arc<str>);

/// Entries as JS takes them: one JSON text of `{ id, message }` objects (see `json`).
pub fn entries_reply(entries: &[Entry]) -> Reply {
    let mut out =
        String::with_capacity(2 + entries.iter().map(|(_, d)| d.len() + 48).sum::<usize>());
    out.push('[');
    for (i, (id, data)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::push_entry(&mut out, &id.text(), [("data", &**data)].into_iter());
    }
    out.push(']');
    Reply::Text(out)
}

impl Stream {
    /// Appends an entry and trims the oldest past `max_len`; returns the new id.
    pub fn add(&mut self, data: &str, now_ms: u64, max_len: Option<u64>) -> String {
        let id = if now_ms > self.last_id.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else {
            StreamId {
                ms: self.last_id.ms,
                seq: self.last_id.seq.saturating_add(1),
            }
        };
        self.last_id = id;
        self.entries.insert(id, Arc::from(data));
        if let Some(max_len) = max_len {
            while self.entries.len() as u64 > max_len {
                self.entries.pop_first();
            }
        }
        id.text()
    }

    pub fn range(
        &self,
        low: StreamId,
        high: StreamId,
        count: Option<u64>,
        reverse: bool,
    ) -> Vec<Entry> {
        if low > high {
            return Vec::new();
        }
        let within = self
            .entries
            .range(low..=high)
            .map(|(id, data)| (*id, data.clone()));
        let take = count.map_or(usize::MAX, |count| count as usize);
        if reverse {
            within.rev().take(take).collect()
        } else {
            within.take(take).collect()
        }
    }

    /// Creates the group, delivering what comes after `start` (`None`: after the last
    /// entry); a group of that name already there is left as it is.
    pub fn create_group(&mut self, group: &str, start: Option<StreamId>) {
        let last_delivered = start.unwrap_or(self.last_id);
        self.groups.entry(group.to_owned()).or_insert(Group {
            last_delivered,
            pending: BTreeMap::new(),
        });
    }

    /// Entries the group has not delivered yet, now delivered to `consumer`; `None` when the
    /// group does not exist.
    pub fn read_group(
        &mut self,
        group: &str,
        consumer: &str,
        count: Option<u64>,
    ) -> Option<Vec<Entry>> {
        let group = self.groups.get_mut(group)?;
        let take = count.map_or(usize::MAX, |count| count as usize);
        let consumer: Arc<str> = Arc::from(consumer);
        let after = (Bound::Excluded(group.last_delivered), Bound::Unbounded);
        let mut delivered = Vec::new();
        for (id, data) in self.entries.range(after).take(take) {
            group.pending.insert(*id, consumer.clone());
            group.last_delivered = *id;
            delivered.push((*id, data.clone()));
        }
        Some(delivered)
    }

    /// Whether entries were added since the group's last delivery, even if trimmed away since
    /// (Redis then answers a waiting read, with nothing if nothing is left); `None` when the
    /// group does not exist.
    pub fn appended_since(&self, group: &str) -> Option<bool> {
        self.groups
            .get(group)
            .map(|group| self.last_id > group.last_delivered)
    }

    pub fn ack(&mut self, group: &str, ids: impl Iterator<Item = StreamId>) {
        if let Some(group) = self.groups.get_mut(group) {
            for id in ids {
                group.pending.remove(&id);
            }
        }
    }

    /// Entries delivered to the group and not acknowledged.
    #[cfg(test)]
    fn pending(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |g| g.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(|(id, _)| id.text()).collect()
    }

    #[test]
    fn ids_parse_as_redis_reads_them() {
        assert_eq!(
            StreamId::parse("5", false, true),
            Some(StreamId { ms: 5, seq: 0 })
        );
        assert_eq!(
            StreamId::parse("5", true, true),
            Some(StreamId {
                ms: 5,
                seq: u64::MAX
            })
        );
        assert_eq!(
            StreamId::parse("5-3", true, true),
            Some(StreamId { ms: 5, seq: 3 })
        );
        assert_eq!(StreamId::parse("-", false, true), Some(StreamId::default()));
        assert_eq!(StreamId::parse("+", false, false), None);
        for bad in [
            "",
            "a",
            "5-",
            "-5",
            "5-3-1",
            "(5",
            "18446744073709551616",
            "5-x",
        ] {
            assert_eq!(StreamId::parse(bad, false, true), None, "{bad}");
        }
    }

    #[test]
    fn entries_go_to_one_consumer_of_a_group_and_trim_keeps_the_newest() {
        let mut stream = Stream::default();
        let first = stream.add("1", 10, None);
        stream.add("2", 10, None);
        stream.add("3", 9, Some(3));
        assert_eq!(first, "10-0");
        assert_eq!(
            ids(&stream.range(StreamId::default(), StreamId::MAX, None, false)),
            ["10-0", "10-1", "10-2"]
        );
        stream.add("4", 11, Some(2));
        assert_eq!(
            ids(&stream.range(StreamId::default(), StreamId::MAX, None, true)),
            ["11-0", "10-2"]
        );

        stream.create_group("g", Some(StreamId::default()));
        let a = stream.read_group("g", "a", Some(1)).unwrap_or_default();
        let b = stream.read_group("g", "b", None).unwrap_or_default();
        assert_eq!(ids(&a), ["10-2"]);
        assert_eq!(ids(&b), ["11-0"]);
        assert!(stream
            .read_group("g", "a", None)
            .is_some_and(|rest| rest.is_empty()));
        assert!(stream.read_group("missing", "a", None).is_none());
        assert_eq!(stream.pending("g"), 2);
        stream.ack("g", [StreamId { ms: 10, seq: 2 }].into_iter());
        assert_eq!(stream.pending("g"), 1);

        stream.create_group("late", None);
        stream.add("5", 12, None);
        let late = stream.read_group("late", "c", None).unwrap_or_default();
        assert_eq!(ids(&late), ["12-0"]);
    }
}
