//! The audit log: one JSON line per plan, apply, refusal, rollback and
//! automatic rollback, appended to `<state dir>/audit.log` (0600). Lines are
//! written whole with one `write` on a file opened with O_APPEND, so
//! concurrent readers (`tail -f`, a log shipper) never see half a line.

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

pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Append one line. A failure is logged, not returned: the change it
    /// records has happened (or been refused) either way.
    pub fn record(&mut self, event: &Event) {
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        if let Err(e) = self
            .file
            .write_all(&line)
            .and_then(|_| self.file.sync_data())
        {
            log::error!("audit log {}: {e}", self.path.display());
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
}
