//! The audit log: one JSON line per plan, apply, refusal, rollback and
//! automatic rollback, appended to `<state dir>/audit.log` (0600). Lines are
//! written whole with one `write` on a file opened with O_APPEND, so
//! concurrent readers (`tail -f`, a log shipper) never see half a line.
//!
//! It rotates by size: a line that would take `audit.log` past
//! `Rotation::max_bytes` goes into a fresh file, after `audit.log.K-1` was
//! renamed to `audit.log.K` (the oldest, `audit.log.<keep>`, is replaced),
//! ..., `audit.log` to `audit.log.1`, and the directory fsynced. Every line
//! is fsynced before `record` returns and renames are atomic, so a line is
//! in exactly one file, whole, whatever crashes when (`tail -F` and log
//! shippers follow the rename). What rotation drops is the oldest file,
//! beyond `keep`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts_unix_seconds: f64,
    /// `plan`, `apply`, `refused`, `failed`, `rollback`, `automatic_rollback`.
    pub event: String,
    pub user: String,
    /// The revision made (apply, rollbacks) or planned against (plan).
    pub revision: Option<u64>,
    pub file: Option<String>,
    pub config_hash: Option<String>,
    /// The `-m` message, the refusal, or the rollback's reason.
    pub detail: Option<String>,
}

/// When the audit log rotates, and how many old files it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for Rotation {
    /// 16 MiB a file, 5 old files: about 100 MiB of history, some 200,000
    /// events.
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            keep: 5,
        }
    }
}

pub struct AuditLog {
    path: PathBuf,
    file: File,
    /// Bytes in `file`.
    size: u64,
    rotation: Rotation,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl AuditLog {
    /// Open (create) `path` with the default rotation.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        Self::open_with(path, Rotation::default())
    }

    pub fn open_with(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
        })
    }

    /// `audit.log.N`.
    pub fn rotated_path(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Shift the old files up by one (the oldest is replaced), rename the
    /// current file to `.1` and open a fresh one. On an error the current
    /// file (under whichever name it has) keeps taking lines.
    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.rotation.keep;
        if keep == 0 {
            // No old file kept: start the file again.
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..keep).rev() {
            let from = self.rotated_path(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated_path(n + 1))?;
            }
        }
        self.file.sync_all()?;
        std::fs::rename(&self.path, self.rotated_path(1))?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Append one line (rotating first when it would not fit). A failure
    /// is logged, not returned: the change it records has happened (or
    /// been refused) either way.
    pub fn record(&mut self, event: &Event) {
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        if self.size > 0
            && self.size + line.len() as u64 > self.rotation.max_bytes
            && let Err(e) = self.rotate()
        {
            log::error!("audit log {}: rotating: {e}", self.path.display());
        }
        match self
            .file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
        {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => log::error!("audit log {}: {e}", self.path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_whole_and_parse() {
        let dir = std::env::temp_dir().join(format!("xlb-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let event = |n: u64| Event {
            ts_unix_seconds: n as f64,
            event: "apply".into(),
            user: "ops".into(),
            revision: Some(n),
            file: Some("x.toml".into()),
            config_hash: Some("ab".into()),
            detail: Some("line\nbreak".into()),
        };
        AuditLog::open(&path).unwrap().record(&event(1));
        // Reopened: appends, keeps what was there.
        AuditLog::open(&path).unwrap().record(&event(2));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, vec![event(1), event(2)]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn event(n: u64) -> Event {
        Event {
            ts_unix_seconds: n as f64,
            event: "apply".into(),
            user: "ops".into(),
            revision: Some(n),
            file: Some("x.toml".into()),
            config_hash: Some("ab".into()),
            detail: Some(format!("event {n}")),
        }
    }

    /// The revisions of the events in `path` (every line must parse).
    fn lines_of(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().revision.unwrap())
            .collect()
    }

    #[test]
    fn it_rotates_by_size_and_every_line_is_in_exactly_one_file() {
        let dir = std::env::temp_dir().join(format!("xlb-audit-rot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let rotation = Rotation {
            max_bytes: 4096,
            keep: 3,
        };
        let line = serde_json::to_vec(&event(100)).unwrap().len() as u64 + 1;
        // Past the size twice over, short of what four files hold: nothing
        // is dropped yet.
        let count = (2 * rotation.max_bytes / line + 5).min(3 * rotation.max_bytes / line);
        let mut log = AuditLog::open_with(&path, rotation).unwrap();
        for n in 100..100 + count {
            log.record(&event(n));
            // A reopen (a restart) in the middle keeps counting the size.
            if n == 120 {
                log = AuditLog::open_with(&path, rotation).unwrap();
            }
        }
        let files = [
            log.rotated_path(3),
            log.rotated_path(2),
            log.rotated_path(1),
            path.clone(),
        ];
        let mut all = Vec::new();
        for f in &files {
            if f.exists() {
                let len = std::fs::metadata(f).unwrap().len();
                assert!(len <= rotation.max_bytes, "{} is {len} bytes", f.display());
            }
            all.extend(lines_of(f));
        }
        assert!(log.rotated_path(2).exists(), "it did not rotate twice");
        // Oldest file first: every line, once, in order.
        assert_eq!(all, (100..100 + count).collect::<Vec<_>>());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Far past `keep` files: the oldest go, whole files; what is left
        // is every line since some point, each once.
        for n in 100 + count..100 + 10 * count {
            log.record(&event(n));
        }
        assert!(!log.rotated_path(4).exists());
        let mut all = Vec::new();
        for f in &files {
            all.extend(lines_of(f));
        }
        let first = all[0];
        assert_eq!(all, (first..100 + 10 * count).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
