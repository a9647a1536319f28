//! The drop folder: `<watch>/` takes files (names starting with `.` or ending in `.tmp` or `.part` are left alone,
//! so writers can write then rename, and a file modified within the last second waits for a later look). Each is
//! read and spooled, then moved to `<watch>/processed/`; one that cannot be read goes to `<watch>/rejected/`
//! beside its reason. A file the spool cannot take now (a full disk) stays, and is tried again at the next look.
//!
//! A file leaves the folder only after its reports are durable in the spool, so a crash in between finds it again;
//! the spool recognises it (its content and modification time) and it is moved on without being spooled twice.
//!
//! Each look is blocking file work, done on a blocking thread; between looks the watcher waits for the poll
//! interval or the cancellation token.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sitrep_core::input;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, IngestError};
use crate::error::Error;
use crate::rejected::Original;

pub(crate) struct Watcher {
    dir: PathBuf,
    agent: Arc<Agent>,
    /// Problems already logged (a file that cannot be moved is met at every look: say so once).
    said: BTreeSet<String>,
}

impl Watcher {
    /// Watches `dir`, creating its `processed/` folder.
    pub fn new(dir: PathBuf, agent: Arc<Agent>) -> Result<Watcher, Error> {
        let processed = dir.join("processed");
        std::fs::create_dir_all(&processed).map_err(Error::io("cannot use", &dir))?;
        Ok(Watcher { dir, agent, said: BTreeSet::new() })
    }

    /// Looks every `poll` until `cancel`.
    pub async fn run(mut self, poll: Duration, cancel: &CancellationToken) {
        loop {
            self = match tokio::task::spawn_blocking(move || {
                self.look();
                self
            })
            .await
            {
                Ok(watcher) => watcher,
                Err(e) => {
                    tracing::error!(error = %e, "the drop folder's watcher stopped");
                    return;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One look at the folder: every file ready is spooled and moved on, or set aside. Returns how many reports
    /// were spooled.
    pub fn look(&mut self) -> usize {
        let files = match ready_files(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!("cannot list {}: {e}", self.dir.display());
                return 0;
            }
        };
        let mut spooled = 0;
        for (path, modified) in files {
            spooled += self.take(&path, modified);
        }
        spooled
    }

    /// Reads, spools and moves one file (modified at `modified`, in nanoseconds).
    fn take(&mut self, path: &Path, modified: u128) -> usize {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        // Too large to read: set aside unread, the cap named.
        if let Ok(meta) = std::fs::metadata(path)
            && let Err(e) = input::check_size(&name, usize::try_from(meta.len()).unwrap_or(usize::MAX))
        {
            self.reject(&name, path, &e.to_string());
            return 0;
        }
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                self.say_once(name.clone(), format!("cannot read {name} yet: {e}"));
                return 0;
            }
        };
        match self.agent.ingest(&name, &format!("{name}/{modified}"), &bytes) {
            Ok(n) => {
                if n > 0 {
                    tracing::info!("{name}: {n} report(s) spooled; {} waiting", self.agent.spool.waiting());
                }
                let processed = self.dir.join("processed");
                let mut to = processed.join(&name);
                let mut k = 1;
                while to.exists() {
                    to = processed.join(format!("{name}.{k}"));
                    k += 1;
                }
                if let Err(e) = std::fs::rename(path, &to) {
                    self.say_once(format!("move {name}"), format!("cannot move {name} to processed/: {e}"));
                }
                n
            }
            Err(IngestError::Invalid(why)) => {
                self.reject(&name, path, &why);
                0
            }
            // The spool cannot take it now: the file stays, and is tried again.
            Err(IngestError::Spool(e)) => {
                self.say_once(
                    format!("spool {name}"),
                    format!("cannot spool {name} ({e}); leaving it in place and retrying"),
                );
                0
            }
        }
    }

    fn reject(&mut self, name: &str, path: &Path, why: &str) {
        match self.agent.rejected.file(name, Original::At(path), why) {
            Ok(target) => tracing::warn!("rejected {name}: {why} (moved to {})", target.display()),
            Err(e) => {
                self.say_once(format!("reject {name}"), format!("cannot set {name} aside ({e}); leaving it in place"))
            }
        }
    }

    fn say_once(&mut self, key: String, line: String) {
        if self.said.insert(key) {
            tracing::warn!("{line}");
        }
    }
}

/// Files in the drop folder ready to read, oldest first (then by name), with their modification times in
/// nanoseconds. A file modified within the last second may still be being written, so it waits for a later look.
fn ready_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, u128)>> {
    let settled = SystemTime::now() - Duration::from_secs(1);
    let mut files: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            !name.starts_with('.') && !name.ends_with(".tmp") && !name.ends_with(".part")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(modified, _)| *modified <= settled)
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|(m, p)| (p, m.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejected::Rejected;
    use crate::spool::Spool;
    use crate::temp::temp_dir;

    fn drop_file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        // Settled: written two seconds ago, as a finished export is.
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(2)).unwrap();
        path
    }

    fn watcher(dir: &Path) -> Watcher {
        let drop = dir.join("drop");
        std::fs::create_dir_all(&drop).unwrap();
        let spool = Spool::open(&dir.join("spool")).unwrap();
        let agent = Agent::new(spool, Rejected::new(drop.join("rejected")), Default::default(), None);
        Watcher::new(drop, Arc::new(agent)).unwrap()
    }

    #[test]
    fn a_dropped_file_is_spooled_once_and_moved_on() {
        let dir = temp_dir("watcher-once");
        let mut w = watcher(dir.path());
        let beds = r#"[{"provider":"RJ7","values":{"beds.cc_adult.open":9}},{"provider":"RVR","values":{}}]"#;
        let path = drop_file(&w.dir, "beds.json", beds);
        // Left alone: being written (a temporary name), or written just now.
        std::fs::write(w.dir.join("next.json.part"), "[").unwrap();
        std::fs::write(w.dir.join("fresh.json"), beds).unwrap();

        assert_eq!(w.look(), 2);
        assert_eq!(w.agent.spool.waiting(), 2);
        assert!(!path.exists() && w.dir.join("processed/beds.json").exists());
        assert_eq!(w.look(), 0, "nothing new");
        assert!(w.dir.join("next.json.part").exists() && w.dir.join("fresh.json").exists());

        // The agent stopped between spooling the file and moving it: found again, it is not spooled twice.
        std::fs::rename(w.dir.join("processed/beds.json"), &path).unwrap();
        assert_eq!(w.look(), 0);
        assert_eq!(w.agent.spool.waiting(), 2);
        assert!(!path.exists() && w.dir.join("processed/beds.json").exists(), "moved on");

        // The same name with new content (a later export) is spooled, and does not overwrite the first in processed/.
        drop_file(&w.dir, "beds.json", r#"{"provider":"RJ7","values":{"beds.cc_adult.open":8}}"#);
        assert_eq!(w.look(), 1);
        assert!(w.dir.join("processed/beds.json.1").exists());
    }

    #[test]
    fn an_unreadable_file_is_set_aside_with_its_reason() {
        let dir = temp_dir("watcher-bad");
        let mut w = watcher(dir.path());
        drop_file(&w.dir, "bad.csv", "provider,beds.cc_adult.open\nRJ7,lots\n");
        assert_eq!(w.look(), 0);
        assert_eq!(w.agent.spool.waiting(), 0);
        let reason = std::fs::read_to_string(w.dir.join("rejected/bad.csv.reason.txt")).unwrap();
        assert!(reason.starts_with("bad.csv:2:") && reason.contains("lots"), "{reason}");
        assert!(w.dir.join("rejected/bad.csv").exists() && !w.dir.join("bad.csv").exists());
    }
}
