//! The scripts' answers as types: each implements redis-rs's [`FromRedisValue`], so a reply is parsed in one place
//! and a caller gets named fields, not a `redis::Value` to take apart.
//!
//! `persist.lua` answers a whole group commit in one bulk string (one reply to parse rather than four per plan; its
//! header gives the format). Parsing it is written out here rather than left to a tuple conversion: its outcomes
//! are length-prefixed text that no derive describes, and the report path parses one per script call, so it walks
//! the bytes once, taking ownership of the reply, and copies only a stored entry or state it must hand on.
//!
//! Not here: the stream entries of `XREAD` and `read.lua` stay `redis::Value`s (`entry` in `mod.rs` reads them).
//! `redis::streams::StreamReadReply` would put each entry's fields into a `HashMap`, an allocation per field on the
//! tail's path, and lose their order, by which sitrep tells its own entries (exactly `p`, `e`, `w`, `d`) from others.

use redis::{FromRedisValue, ParsingError, Value};
use sitrep_core::cursor::Position;

/// A stream id, `<ms>-<seq>`, as a position.
pub(super) fn stream_id(id: &str) -> Result<Position, ParsingError> {
    let wrong = || ParsingError::from(format!("stream id {id:?}"));
    let (ms, seq) = id.split_once('-').ok_or_else(wrong)?;
    Ok(Position(ms.parse().map_err(|_| wrong())?, seq.parse().map_err(|_| wrong())?))
}

fn bulk(v: Value) -> Result<Vec<u8>, ParsingError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        other => Err(format!("expected text, got {other:?}").into()),
    }
}

/// What the script did with one plan (or, for `act.lua`, one event).
pub(super) enum Outcome {
    Accepted {
        pos: Position,
        prev: Position,
    },
    /// The report's key is in history: its stored entry (`<event id>|<entry>`), for the core to tell a duplicate
    /// from a conflict.
    Seen(Vec<u8>),
    /// The provider's current state (empty if it has none).
    Conflict(Vec<u8>),
}

/// `persist.lua`'s answer: the log's epoch, and an outcome per plan in the order sent.
pub(super) struct Committed {
    pub epoch: String,
    pub outcomes: Vec<Outcome>,
}

impl FromRedisValue for Committed {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        parse_committed(&bulk(v)?)
    }
}

fn parse_committed(mut rest: &[u8]) -> Result<Committed, ParsingError> {
    fn line<'a>(rest: &mut &'a [u8]) -> Result<&'a str, ParsingError> {
        let end = rest.iter().position(|b| *b == b'\n').ok_or("persist reply: a line without its end")?;
        let text = std::str::from_utf8(&rest[..end])?;
        *rest = &rest[end + 1..];
        Ok(text)
    }
    let epoch = line(&mut rest)?.to_owned();
    let mut outcomes = Vec::new();
    while let Some((kind, tail)) = rest.split_first() {
        rest = tail;
        let text = line(&mut rest)?;
        outcomes.push(match kind {
            b'a' => {
                let (id, prev) = text.split_once(' ').ok_or("persist outcome: an accepted one without its ids")?;
                Outcome::Accepted { pos: stream_id(id)?, prev: stream_id(prev)? }
            }
            b'd' | b'c' => {
                let len: usize = text.parse().map_err(|_| format!("persist outcome: length {text:?}"))?;
                let stored = rest.get(..len).ok_or("persist outcome: shorter than its length")?.to_vec();
                rest = &rest[len..];
                match kind {
                    b'd' => Outcome::Seen(stored),
                    _ => Outcome::Conflict(stored),
                }
            }
            other => return Err(format!("persist outcome: kind {:?}", char::from(*other)).into()),
        });
    }
    Ok(Committed { epoch, outcomes })
}

/// `act.lua`'s answer.
pub(super) enum ActAnswer {
    /// The book or a holding provider moved since the plan was made; nothing was written.
    Moved,
    /// Written: the outcomes of its events, in log order, as `persist.lua` answers them.
    Done(Committed),
}

impl FromRedisValue for ActAnswer {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let bytes = bulk(v)?;
        match bytes.as_slice() {
            b"m" => Ok(ActAnswer::Moved),
            _ => parse_committed(&bytes).map(ActAnswer::Done),
        }
    }
}

/// `read.lua`'s answer: the log's epoch and head, and the raw entries after the cursor.
pub(super) struct ReadReply {
    pub epoch: String,
    pub head: Position,
    pub entries: Vec<Value>,
}

impl FromRedisValue for ReadReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (epoch, head, entries): (String, String, Vec<Value>) = FromRedisValue::from_redis_value(v)?;
        Ok(ReadReply { epoch, head: stream_id(&head)?, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(text: &[u8]) -> Result<Committed, ParsingError> {
        Committed::from_redis_value(Value::BulkString(text.to_vec()))
    }

    #[test]
    fn a_persist_answer_reads_as_its_outcomes_in_order() {
        let c = committed(b"r1\na5-1 4-0\nd7\n4-0|abcc0\n").expect("parsed");
        assert_eq!(c.epoch, "r1");
        assert!(matches!(
            c.outcomes.as_slice(),
            [Outcome::Accepted { pos: Position(5, 1), prev: Position(4, 0) }, Outcome::Seen(s), Outcome::Conflict(c)]
                if s == b"4-0|abc" && c.is_empty()
        ));
    }

    #[test]
    fn a_damaged_persist_answer_is_refused_not_misread() {
        for damaged in [&b"r1"[..], b"r1\nd9\nshort", b"r1\nx\n", b"r1\na5-1\n", b"r1\naX-1 4-0\n"] {
            assert!(committed(damaged).is_err(), "{:?}", String::from_utf8_lossy(damaged));
        }
    }

    #[test]
    fn an_act_answer_is_moved_or_its_outcomes() {
        assert!(matches!(ActAnswer::from_redis_value(Value::BulkString(b"m".to_vec())), Ok(ActAnswer::Moved)));
        let done = ActAnswer::from_redis_value(Value::BulkString(b"r1\na2-0 1-0\n".to_vec()));
        assert!(matches!(done, Ok(ActAnswer::Done(c)) if c.outcomes.len() == 1));
    }
}
