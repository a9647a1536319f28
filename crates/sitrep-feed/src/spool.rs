//! The spool: the durable, ordered queue of reports waiting for the aggregator's acknowledgement, and the agent's
//! small state file beside it.
//!
//! **Layout.** `<spool>/queue/<number>.json` holds one entry per spooled file (its reports in sitrep's JSON form,
//! revisions assigned, and the file's content hash); `<spool>/state.json` holds the last revision given to each
//! provider and period, the hashes of files already sent, and the last acknowledgement. Numbers only grow (the
//! time in microseconds is a floor), so the queue's order is the order of spooling, across restarts too.
//!
//! **Durability.** Every file is written to a temporary name (starting with `.`), fsync'd, renamed into place, and
//! its directory fsync'd: after a crash a file is there whole or not at all, and a temporary file left by a crash
//! is never read as an entry (it is removed when the spool is next opened). [`Spool::append`] returns only once
//! the entry is durable, so a file may leave the drop folder after it; [`Spool::ack`] deletes an entry only after
//! the state file remembers its hash, so a file found again is not spooled twice.
//!
//! **Index.** The spool keeps in memory what it needs to know about every entry (number, hash, how many reports)
//! and reads an entry's file only to send it ([`Spool::first`]): the queue is read in full once, when opened.
//!
//! Every method does blocking file work; async callers run them on a blocking thread (`spawn_blocking`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use sitrep_core::input::json;
use sitrep_core::{Report, Timestamp};

use crate::Error;

/// How many hashes of sent files the state remembers (the most recent).
const SENT_KEPT: usize = 10_000;

/// One spooled file: its reports (in sitrep's JSON form, revisions assigned) and where they came from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Entry {
    pub source: String,
    /// The file's content hash and identity (see [`file_key`]).
    pub hash: String,
    pub spooled_at: Timestamp,
    pub reports: Vec<String>,
}

/// The last report the aggregator acknowledged (as accepted or a duplicate), for `--status`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LastAck {
    pub at: Timestamp,
    pub outcome: String,
    pub provider: String,
    pub period: String,
    pub revision: u32,
    pub cursor: String,
}

#[derive(Serialize, Deserialize, Default)]
struct State {
    /// The last revision given to each `provider|period`.
    #[serde(default)]
    revisions: BTreeMap<String, u32>,
    /// Content hashes of files whose entries were sent (the most recent ones).
    #[serde(default)]
    sent: Vec<String>,
    #[serde(default)]
    last_ack: Option<LastAck>,
}

/// What the index keeps of an entry: enough to count and to recognise it, without its reports.
struct Indexed {
    hash: String,
    reports: usize,
}

struct Inner {
    state: State,
    /// Queued entries by number, in order.
    index: BTreeMap<u64, Indexed>,
    /// The hashes of queued entries (to recognise a file spooled before without a scan).
    hashes: BTreeSet<String>,
    /// The newest entry's number.
    last: u64,
}

impl Inner {
    fn knows(&self, key: &str) -> bool {
        self.hashes.contains(key) || self.state.sent.iter().any(|h| h == key)
    }
}

/// An entry read from the queue to be sent, with the number that acknowledges it.
pub struct Queued {
    pub number: u64,
    pub entry: Entry,
}

/// What [`Spool::append`] did with a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Its reports are queued, durably: this many.
    Queued(usize),
    /// This very file was spooled before (it is queued, or was sent): nothing was added.
    AlreadySpooled,
}

/// What `--status` shows: the queue's depth, its oldest entry and the last acknowledgement.
#[derive(Debug)]
pub struct Status {
    pub dir: PathBuf,
    pub reports: usize,
    pub entries: usize,
    /// When the oldest waiting entry was spooled, and its source.
    pub oldest: Option<(Timestamp, String)>,
    pub last_ack: Option<LastAck>,
}

pub struct Spool {
    dir: PathBuf,
    /// A sync mutex: every method runs on a blocking thread, and the lock is held across the file work it orders
    /// (an entry's number and its write; the state's save), which must not interleave with another's.
    inner: Mutex<Inner>,
    /// Reports waiting, readable from async code without the lock (for log lines).
    waiting: AtomicUsize,
}

impl Spool {
    /// Opens (creating) the spool at `dir`: removes temporary files a crash left, reads the state, and reads every
    /// queued entry once to build the index.
    pub fn open(dir: &Path) -> Result<Spool, Error> {
        let queue = dir.join("queue");
        std::fs::create_dir_all(&queue).map_err(Error::io("cannot create the spool", dir))?;
        for folder in [dir, queue.as_path()] {
            for path in list(folder)? {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    // Half written when the agent stopped: never renamed into place, so never acknowledged.
                    std::fs::remove_file(&path).map_err(Error::io("cannot remove", &path))?;
                }
            }
        }
        let state_path = dir.join("state.json");
        let state = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| Error::Damaged { path: state_path, error })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(Error::io("cannot read", state_path)(e)),
        };
        let mut inner = Inner { state, index: BTreeMap::new(), hashes: BTreeSet::new(), last: 0 };
        let mut waiting = 0;
        for (number, path) in entry_paths(&queue)? {
            let entry = read_entry(&path)?;
            waiting += entry.reports.len();
            inner.hashes.insert(entry.hash.clone());
            inner.index.insert(number, Indexed { hash: entry.hash, reports: entry.reports.len() });
            inner.last = inner.last.max(number);
        }
        Ok(Spool { dir: dir.to_owned(), inner: Mutex::new(inner), waiting: AtomicUsize::new(waiting) })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many reports wait to be acknowledged.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Whether the file whose [`file_key`] is `key` is queued or was sent.
    pub fn knows(&self, key: &str) -> bool {
        self.inner().knows(key)
    }

    /// Queues `reports` from `source` (a file whose [`file_key`] is `key`) as one entry, giving revisions to those
    /// without one, and returns once the entry is durable. A file with the same key queued or sent before is not
    /// queued again.
    pub fn append(&self, source: &str, key: &str, mut reports: Vec<Report>) -> Result<Appended, Error> {
        let mut inner = self.inner();
        if inner.knows(key) {
            return Ok(Appended::AlreadySpooled);
        }
        assign_revisions(&mut inner.state, &mut reports, Timestamp::now());
        // Saved before the entry: a revision is never given twice, even if the entry's write then fails.
        self.save_state(&inner.state)?;
        let entry = Entry {
            source: source.to_owned(),
            hash: key.to_owned(),
            spooled_at: Timestamp::now(),
            reports: reports.iter().map(json::write).collect(),
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let number = (inner.last + 1).max(now.as_micros() as u64);
        let path = self.entry_path(number);
        write_durably(&path, &serde_json::to_vec(&entry).expect("entries serialise"))
            .map_err(Error::io("cannot write to the spool", &path))?;
        inner.last = number;
        inner.hashes.insert(entry.hash.clone());
        inner.index.insert(number, Indexed { hash: entry.hash, reports: reports.len() });
        self.waiting.fetch_add(reports.len(), Ordering::Relaxed);
        Ok(Appended::Queued(reports.len()))
    }

    /// The oldest queued entry, read from its file, or None when the queue is empty.
    pub fn first(&self) -> Result<Option<Queued>, Error> {
        let Some(number) = self.inner().index.keys().next().copied() else { return Ok(None) };
        let entry = read_entry(&self.entry_path(number))?;
        Ok(Some(Queued { number, entry }))
    }

    /// Every report of entry `number` is acknowledged (`last`: the last accepted or duplicate one, if any):
    /// remembers its file as sent, then deletes the entry.
    pub fn ack(&self, number: u64, last: Option<LastAck>) -> Result<(), Error> {
        let mut inner = self.inner();
        if last.is_some() {
            inner.state.last_ack = last;
        }
        let Some(indexed) = inner.index.get(&number) else { return Ok(()) };
        let (hash, reports) = (indexed.hash.clone(), indexed.reports);
        inner.state.sent.push(hash.clone());
        let excess = inner.state.sent.len().saturating_sub(SENT_KEPT);
        inner.state.sent.drain(..excess);
        self.save_state(&inner.state)?;
        let path = self.entry_path(number);
        std::fs::remove_file(&path).map_err(Error::io("cannot remove", &path))?;
        // Once the state remembers the file, a lost deletion only means a duplicate the aggregator recognises.
        if let Err(e) = fsync_dir(&self.dir.join("queue")) {
            tracing::warn!(path = %path.display(), error = %e, "cannot sync the spool's queue after a removal");
        }
        inner.index.remove(&number);
        inner.hashes.remove(&hash);
        self.waiting.fetch_sub(reports, Ordering::Relaxed);
        Ok(())
    }

    /// The queue's depth, its oldest entry, and the last acknowledgement.
    pub fn status(&self) -> Result<Status, Error> {
        let oldest = self.first()?.map(|q| (q.entry.spooled_at, q.entry.source));
        let inner = self.inner();
        Ok(Status {
            dir: self.dir.clone(),
            reports: self.waiting(),
            entries: inner.index.len(),
            oldest,
            last_ack: inner.state.last_ack.clone(),
        })
    }

    fn entry_path(&self, number: u64) -> PathBuf {
        self.dir.join("queue").join(format!("{number:020}.json"))
    }

    fn save_state(&self, state: &State) -> Result<(), Error> {
        let path = self.dir.join("state.json");
        write_durably(&path, &serde_json::to_vec(state).expect("the state serialises"))
            .map_err(Error::io("cannot save the spool's state", path))
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "spool {}: {} report(s) waiting in {} file(s)", self.dir.display(), self.reports, self.entries)?;
        if let Some((at, source)) = &self.oldest {
            writeln!(f, "  oldest waiting since {at} (from {source})")?;
        }
        match &self.last_ack {
            Some(a) => write!(
                f,
                "  last acknowledged: {} {} {} r{} at {} (cursor {})",
                a.outcome,
                a.provider,
                a.period,
                a.revision,
                a.at,
                if a.cursor.is_empty() { "-" } else { &a.cursor }
            ),
            None => write!(f, "  nothing acknowledged yet"),
        }
    }
}

/// Gives each report without a revision one: the current Unix time in seconds, or one more than the last given to
/// its provider and period if that is higher, so a later correction always wins and no two reports share a key.
fn assign_revisions(state: &mut State, reports: &mut [Report], now: Timestamp) {
    let seconds = now.millis() / 1000;
    for r in reports {
        let key = format!("{}|{}", r.provider, r.period.map(|p| p.millis()).unwrap_or_default());
        let last = state.revisions.get(&key).copied().unwrap_or(0);
        if r.revision == 0 {
            r.revision = (seconds.clamp(1, i64::from(u32::MAX)) as u32).max(last.saturating_add(1));
        }
        // Revisions a file gives count too, so one assigned later still comes after them.
        state.revisions.insert(key, last.max(r.revision));
    }
    // Keep the map small: periods older than the history the aggregator keeps no longer matter.
    let horizon = now.add_hours(-24 * 40).millis();
    state
        .revisions
        .retain(|k, _| k.rsplit('|').next().and_then(|p| p.parse::<i64>().ok()).is_none_or(|p| p >= horizon));
}

/// What tells a file from every other: its content hash, then `identity` (its name and modification time), so
/// that an identical export an hour later is sent, while the same file found again after a crash is not.
pub fn file_key(bytes: &[u8], identity: &str) -> String {
    format!("{}/{identity}", hash(bytes))
}

/// FNV-1a, 64 bits: a stable content hash with no dependency (not for security; to recognise a file seen before).
fn hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}-{}", bytes.len())
}

fn read_entry(path: &Path) -> Result<Entry, Error> {
    let bytes = std::fs::read(path).map_err(Error::io("cannot read", path))?;
    serde_json::from_slice(&bytes).map_err(|error| Error::Damaged { path: path.to_owned(), error })
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let read = std::fs::read_dir(dir).map_err(Error::io("cannot list", dir))?;
    Ok(read.flatten().map(|e| e.path()).collect())
}

/// The queue's entries by number (files named `<number>.json`; anything else is not an entry).
fn entry_paths(queue: &Path) -> Result<BTreeMap<u64, PathBuf>, Error> {
    Ok(list(queue)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.file_stem()?.to_str()?.parse::<u64>().ok()?, p)))
        .collect())
}

pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` so that after a crash it is either there whole or not at all.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("spool paths have a parent");
    let tmp = dir.join(format!(".{}.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp::temp_dir;

    fn report(provider: &str, revision: u32) -> Report {
        let text = format!(r#"{{"provider":"{provider}","revision":{revision},"values":{{"beds.cc_adult.open":3}}}}"#);
        let mapping = sitrep_core::input::Mapping::default();
        json::parse("test", &text, &mapping, Timestamp::now()).unwrap().remove(0)
    }

    fn sources(spool: &Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(q) = spool.first().unwrap() {
            out.push(q.entry.source.clone());
            spool.ack(q.number, None).unwrap();
        }
        out
    }

    #[test]
    fn entries_come_back_in_order_and_survive_a_reopen_until_acknowledged() {
        let dir = temp_dir("spool-order");
        let spool = Spool::open(dir.path()).unwrap();
        for (i, name) in ["a.csv", "b.csv", "c.csv"].iter().enumerate() {
            let got = spool.append(name, &file_key(name.as_bytes(), "x"), vec![report("RJ7", 0); i + 1]).unwrap();
            assert_eq!(got, Appended::Queued(i + 1));
        }
        assert_eq!(spool.waiting(), 6);
        let first = spool.first().unwrap().unwrap();
        assert_eq!(first.entry.source, "a.csv");
        spool.ack(first.number, None).unwrap();
        drop(spool);

        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.waiting(), 5, "the acknowledged entry is gone, the rest are kept");
        let b = spool.first().unwrap().unwrap();
        assert_eq!((b.entry.source.as_str(), b.entry.reports.len()), ("b.csv", 2));
        // Revisions given on spooling are kept, and grow for one provider and period.
        let revisions: Vec<u32> = b
            .entry
            .reports
            .iter()
            .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap()["revision"].as_u64().unwrap() as u32)
            .collect();
        assert!(revisions[0] > 0 && revisions[1] > revisions[0], "{revisions:?}");
        assert_eq!(sources(&spool), ["b.csv", "c.csv"]);
        assert_eq!(spool.waiting(), 0);
        let status = Spool::open(dir.path()).unwrap().status().unwrap();
        assert_eq!((status.reports, status.entries), (0, 0));
    }

    #[test]
    fn a_file_spooled_or_sent_before_is_not_spooled_again() {
        let dir = temp_dir("spool-once");
        let spool = Spool::open(dir.path()).unwrap();
        let key = file_key(b"same", "beds.csv/1");
        assert_eq!(spool.append("beds.csv", &key, vec![report("RJ7", 4)]).unwrap(), Appended::Queued(1));
        assert_eq!(spool.append("beds.csv", &key, vec![report("RJ7", 4)]).unwrap(), Appended::AlreadySpooled);
        let q = spool.first().unwrap().unwrap();
        spool.ack(q.number, None).unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.append("beds.csv", &key, vec![report("RJ7", 4)]).unwrap(), Appended::AlreadySpooled);
        // The same content at another time is another file.
        let later = file_key(b"same", "beds.csv/2");
        assert_eq!(spool.append("beds.csv", &later, vec![report("RJ7", 5)]).unwrap(), Appended::Queued(1));
    }

    #[test]
    fn a_crash_between_write_and_rename_leaves_no_half_entry() {
        let dir = temp_dir("spool-crash");
        let spool = Spool::open(dir.path()).unwrap();
        spool.append("whole.csv", "k1", vec![report("RJ7", 1)]).unwrap();
        drop(spool);
        // What `write_durably` leaves when the agent dies before its rename: a temporary file, cut short.
        let queue = dir.path().join("queue");
        let half = queue.join(format!(".{:020}.json.tmp", u64::MAX - 1));
        std::fs::write(&half, br#"{"source":"half.csv","hash":"k2","reports":["{\"prov"#).unwrap();
        std::fs::write(dir.path().join(".state.json.tmp"), b"{\"revis").unwrap();

        let spool = Spool::open(dir.path()).unwrap();
        assert_eq!(spool.waiting(), 1);
        assert_eq!(sources(&spool), ["whole.csv"]);
        assert!(!half.exists(), "the half entry is cleared away");
        assert!(!dir.path().join(".state.json.tmp").exists());
    }

    #[test]
    fn a_damaged_entry_is_named() {
        let dir = temp_dir("spool-damaged");
        Spool::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("queue/00000000000000000001.json"), b"{").unwrap();
        let err = Spool::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("00000000000000000001.json is damaged"), "{err}");
    }

    #[test]
    fn hashes_are_stable_and_tell_content_apart() {
        assert_eq!(hash(b"provider,period\n"), hash(b"provider,period\n"));
        assert_ne!(hash(b"a"), hash(b"b"));
        assert_eq!(hash(b""), "cbf29ce484222325-0");
    }
}
