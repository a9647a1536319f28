//! The arguments of the scripts that append to the log (`persist.lua`, `act.lua`), as named records.
//!
//! Redis hands a script its arguments as one flat list, `ARGV`. Read by position, a field added or moved on one side
//! silently shifts every field after it. So each record here lists its fields as `(name, value)` pairs in the order
//! they are sent, and each script declares the same names, in the same order, at its top and reads a record by
//! those names: into a table (`log.lua`'s `named`), or, in `persist.lua`'s loop over plans, in place through the
//! names' offsets (`offsets`), which costs the script no measurable time where a table per plan cost a tenth more
//! (docs/PERFORMANCE.md). The unit test below reads the names out of the scripts' text and checks they agree with
//! these lists: reordering or renaming on one side alone fails it.
//!
//! The names are not sent: a plan's record costs Redis the same eight arguments it always did, with no decoding.

use redis::ScriptInvocation;

/// Pushes a record's values, in the order its names list them.
pub(super) fn push(invocation: &mut ScriptInvocation<'_>, record: &[(&'static str, &[u8])]) {
    for (_, value) in record {
        invocation.arg(*value);
    }
}

/// `persist.lua`'s header (its `HEADER`), sent once per call before the plans.
pub(super) struct PersistHeader<'a> {
    /// The epoch a log with none takes (a new or flushed Redis).
    pub epoch_candidate: &'a str,
    /// The stream's greatest length.
    pub max_len: &'a str,
    /// The greatest age of the stream's entries in milliseconds ('' for none).
    pub max_age_ms: &'a str,
    /// The keys' prefix, for the history hashes the script names itself.
    pub prefix: &'a str,
}

impl PersistHeader<'_> {
    pub(super) fn named(&self) -> [(&'static str, &[u8]); 4] {
        [
            ("epoch_candidate", self.epoch_candidate.as_bytes()),
            ("max_len", self.max_len.as_bytes()),
            ("max_age_ms", self.max_age_ms.as_bytes()),
            ("prefix", self.prefix.as_bytes()),
        ]
    }
}

/// One plan for `persist.lua` (its `PLAN`), encoded.
pub(super) struct PlanArgs {
    pub provider: String,
    /// The provider's version the plan was made from (`0` for none).
    pub expected_version: String,
    /// The report's history field ('' for a clock transition, which writes no history).
    pub history_field: String,
    /// History of periods before this one (in hours) goes ('' for no trimming).
    pub trim_hours: String,
    /// The provider's new state ('' when live state does not change).
    pub state: Vec<u8>,
    pub event: Vec<u8>,
    /// The history entry.
    pub entry: Vec<u8>,
    /// The writer's token, which the writer recognises its own events by when it reads them back.
    pub token: Vec<u8>,
}

impl PlanArgs {
    pub(super) fn named(&self) -> [(&'static str, &[u8]); 8] {
        [
            ("provider", self.provider.as_bytes()),
            ("expected_version", self.expected_version.as_bytes()),
            ("history_field", self.history_field.as_bytes()),
            ("trim_hours", self.trim_hours.as_bytes()),
            ("state", &self.state),
            ("event", &self.event),
            ("entry", &self.entry),
            ("token", &self.token),
        ]
    }
}

/// `act.lua`'s header (its `HEADER`). The book's records follow it, `records` pairs of (field, record), which the
/// script hands to `HSET` as they are (the index of open references' new entries among them); then `ended_refs`
/// pairs (index field, request id) to remove; then the book's event ([`EventArgs`]); then one [`HolderArgs`] per
/// holder.
pub(super) struct ActHeader<'a> {
    pub epoch_candidate: &'a str,
    pub max_len: &'a str,
    pub max_age_ms: &'a str,
    /// The book's version the plan was made from.
    pub expected_version: String,
    /// The book's version after it.
    pub version: String,
    /// How many (field, record) pairs follow.
    pub records: String,
    /// How many (index field, request id) pairs follow those: entries of requests the plan ends.
    pub ended_refs: String,
}

impl ActHeader<'_> {
    pub(super) fn named(&self) -> [(&'static str, &[u8]); 7] {
        [
            ("epoch_candidate", self.epoch_candidate.as_bytes()),
            ("max_len", self.max_len.as_bytes()),
            ("max_age_ms", self.max_age_ms.as_bytes()),
            ("expected_version", self.expected_version.as_bytes()),
            ("version", self.version.as_bytes()),
            ("records", self.records.as_bytes()),
            ("ended_refs", self.ended_refs.as_bytes()),
        ]
    }
}

/// The book's event for `act.lua` (its `BOOK_EVENT`).
pub(super) struct EventArgs {
    pub event: Vec<u8>,
    pub token: Vec<u8>,
}

impl EventArgs {
    pub(super) fn named(&self) -> [(&'static str, &[u8]); 2] {
        [("event", &self.event), ("token", &self.token)]
    }
}

/// A holding provider's part of an aid action for `act.lua` (its `HOLDER`).
pub(super) struct HolderArgs {
    pub provider: String,
    /// The holder's version the plan was made from (`0` for none).
    pub expected_version: String,
    /// Its new state ('' when it does not change).
    pub state: Vec<u8>,
    pub event: Vec<u8>,
    pub token: Vec<u8>,
}

impl HolderArgs {
    pub(super) fn named(&self) -> [(&'static str, &[u8]); 5] {
        [
            ("provider", self.provider.as_bytes()),
            ("expected_version", self.expected_version.as_bytes()),
            ("state", &self.state),
            ("event", &self.event),
            ("token", &self.token),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names a script declares as `local <list> = {'a', 'b', ...}` on one line.
    fn declared(script: &str, list: &str) -> Vec<String> {
        let start = format!("local {list} = {{");
        let line = script
            .lines()
            .find_map(|l| l.trim().strip_prefix(&start))
            .unwrap_or_else(|| panic!("the script declares no {list}"));
        let body = line.strip_suffix('}').unwrap_or_else(|| panic!("{list} is not on one line"));
        body.split(',').map(|n| n.trim().trim_matches('\'').to_owned()).collect()
    }

    fn names(record: &[(&'static str, &[u8])]) -> Vec<String> {
        record.iter().map(|(name, _)| (*name).to_owned()).collect()
    }

    #[test]
    fn persist_lua_reads_the_arguments_rust_sends_in_the_same_order() {
        let script = include_str!("persist.lua");
        let header = PersistHeader { epoch_candidate: "", max_len: "", max_age_ms: "", prefix: "" };
        assert_eq!(declared(script, "HEADER"), names(&header.named()));
        let plan = PlanArgs {
            provider: String::new(),
            expected_version: String::new(),
            history_field: String::new(),
            trim_hours: String::new(),
            state: vec![],
            event: vec![],
            entry: vec![],
            token: vec![],
        };
        assert_eq!(declared(script, "PLAN"), names(&plan.named()));
    }

    #[test]
    fn act_lua_reads_the_arguments_rust_sends_in_the_same_order() {
        let script = include_str!("act.lua");
        let header = ActHeader {
            epoch_candidate: "",
            max_len: "",
            max_age_ms: "",
            expected_version: String::new(),
            version: String::new(),
            records: String::new(),
            ended_refs: String::new(),
        };
        assert_eq!(declared(script, "HEADER"), names(&header.named()));
        let event = EventArgs { event: vec![], token: vec![] };
        assert_eq!(declared(script, "BOOK_EVENT"), names(&event.named()));
        let holder = HolderArgs {
            provider: String::new(),
            expected_version: String::new(),
            state: vec![],
            event: vec![],
            token: vec![],
        };
        assert_eq!(declared(script, "HOLDER"), names(&holder.named()));
    }
}
