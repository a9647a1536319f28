//! `rejected/`: where what cannot be sent is set aside for a person, each beside a `.reason.txt` saying why
//! (docs/FEEDS.md). A file that cannot be read keeps its name (`beds.csv`, then `beds.csv.1`: never overwritten);
//! a report the aggregator refuses is written as `<file>.<provider>-<period>-r<revision>.json`. Everything is
//! written durably, and a failure is returned: the caller keeps the report (in the spool, or the file in the drop
//! folder) rather than lose it.
//!
//! The folder is the drop folder's `rejected/` when watching, else the spool's.

use std::path::{Path, PathBuf};

use sitrep_core::Timestamp;

use crate::spool::{fsync_dir, write_durably};

/// Where a file that cannot be read is now.
pub enum Original<'a> {
    /// In a folder: it is moved.
    At(&'a Path),
    /// Read from standard input: these bytes are all there is, and are written.
    Read(&'a [u8]),
}

pub struct Rejected {
    dir: PathBuf,
}

impl Rejected {
    pub fn new(dir: PathBuf) -> Rejected {
        Rejected { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether anything has been set aside here (by this run or an earlier one).
    pub fn is_empty(&self) -> bool {
        std::fs::read_dir(&self.dir).map_or(true, |mut d| d.next().is_none())
    }

    /// Sets aside a file named `name` (one path component: the file's own name) that cannot be read, under a name not yet taken, beside its reason; returns
    /// where it went.
    pub fn file(&self, name: &str, original: Original<'_>, why: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let mut target = self.dir.join(name);
        let mut n = 1;
        while target.exists() {
            target = self.dir.join(format!("{name}.{n}"));
            n += 1;
        }
        let target_name = target.file_name().unwrap_or_default().to_string_lossy().into_owned();
        write_durably(&self.dir.join(format!("{target_name}.reason.txt")), format!("{why}\n").as_bytes())?;
        match original {
            Original::At(path) => {
                std::fs::rename(path, &target)?;
                fsync_dir(&self.dir)?;
                if let Some(dir) = path.parent() {
                    fsync_dir(dir)?;
                }
            }
            Original::Read(bytes) => write_durably(&target, bytes)?,
        }
        Ok(target)
    }

    /// Writes a report the aggregator refused (`text`, in sitrep's JSON form) and why, named by its source,
    /// provider, period and revision; returns the report's path.
    pub fn report(&self, refused: &Refused<'_>, text: &str, why: &str) -> std::io::Result<PathBuf> {
        // The provider code comes from the file: keep it from naming a path outside rejected/.
        let stem = safe_name(&format!(
            "{}.{}-{}-r{}",
            refused.source,
            refused.provider,
            refused.period.millis(),
            refused.revision
        ));
        self.write(&stem, text, why)
    }

    /// Writes a spool entry's report that is not one report (a damaged spool), and why.
    pub fn damaged(&self, source: &str, text: &str, why: &str) -> std::io::Result<PathBuf> {
        self.write(&safe_name(&format!("{source}.damaged-spool-entry")), text, why)
    }

    /// `rejected/<stem>.reason.txt`, then `rejected/<stem>.json`.
    fn write(&self, stem: &str, text: &str, why: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        write_durably(&self.dir.join(format!("{stem}.reason.txt")), why.as_bytes())?;
        let path = self.dir.join(format!("{stem}.json"));
        write_durably(&path, text.as_bytes())?;
        Ok(path)
    }
}

/// Which report was refused: what names it in `rejected/`.
pub struct Refused<'a> {
    pub source: &'a str,
    pub provider: &'a str,
    pub period: Timestamp,
    pub revision: u32,
}

/// A file name made only of letters, digits, `.`, `-` and `_` (anything else becomes `_`), never `.` or `..`.
fn safe_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    if cleaned.chars().all(|c| c == '.') { format!("_{cleaned}") } else { cleaned }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp::temp_dir;

    #[test]
    fn rejected_names_stay_in_their_folder() {
        assert_eq!(safe_name("beds.csv.../../etc/x-1-r2"), "beds.csv..._.._etc_x-1-r2");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name("a b/c"), "a_b_c");
    }

    #[test]
    fn refused_reports_and_unreadable_files_go_where_the_docs_say() {
        let dir = temp_dir("rejected");
        let rejected = Rejected::new(dir.path().join("drop/rejected"));
        assert!(rejected.is_empty());
        let period = Timestamp::from_millis(1_700_000_000_000);
        let refused = Refused { source: "beds.csv", provider: "RJ7", period, revision: 3 };
        let path =
            rejected.report(&refused, "{\"provider\":\"RJ7\"}", "beds.cc_adult.open (range): too many\n").unwrap();
        assert_eq!(path, dir.path().join("drop/rejected/beds.csv.RJ7-1700000000000-r3.json"));
        let reason = std::fs::read_to_string(dir.path().join("drop/rejected/beds.csv.RJ7-1700000000000-r3.reason.txt"));
        assert_eq!(reason.unwrap(), "beds.cc_adult.open (range): too many\n");

        // A file that cannot be read moves, and a second of the same name does not overwrite the first.
        for _ in 0..2 {
            std::fs::write(dir.path().join("bad.csv"), b"nonsense").unwrap();
            rejected.file("bad.csv", Original::At(&dir.path().join("bad.csv")), "bad.csv:1: no header").unwrap();
            assert!(!dir.path().join("bad.csv").exists());
        }
        rejected.file("stdin", Original::Read(b"[]"), "no reports").unwrap();
        let mut names: Vec<String> = std::fs::read_dir(rejected.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "bad.csv",
                "bad.csv.1",
                "bad.csv.1.reason.txt",
                "bad.csv.reason.txt",
                "beds.csv.RJ7-1700000000000-r3.json",
                "beds.csv.RJ7-1700000000000-r3.reason.txt",
                "stdin",
                "stdin.reason.txt"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(rejected.dir().join("bad.csv.1.reason.txt")).unwrap(),
            "bad.csv:1: no header\n"
        );
    }

    #[test]
    fn a_report_that_cannot_be_written_is_an_error_not_a_loss() {
        let dir = temp_dir("rejected-blocked");
        // A file where the folder should be: nothing can be written under it.
        std::fs::write(dir.path().join("rejected"), b"").unwrap();
        let rejected = Rejected::new(dir.path().join("rejected"));
        let refused = Refused { source: "a.json", provider: "RJ7", period: Timestamp::from_millis(0), revision: 1 };
        assert!(rejected.report(&refused, "{}", "why").is_err());
    }
}
