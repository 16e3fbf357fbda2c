//! The checks of `xlb run` that can fail, all run before anything touches
//! the interface or the pins (restart.rs loads and attaches after them):
//! a failed start leaves forwarding exactly as it was, and says why with
//! exit 2 (bad input: the config, an address in use, a directory it cannot
//! write, another daemon) or 4 (the kernel, the pins).
//!
//! In order: the state directory (created 0700), bpffs (mounted when it is
//! the default place and not one yet), the three locks (`crate::lock`: one
//! daemon per state directory, interface and pin directory), the control socket
//! (no daemon answers on it), the interface, the revision store (opens,
//! and a probe file can be written whole), the audit log, the metrics
//! address (bound here; the listener is handed to the HTTP server).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};

use crate::daemon::audit::AuditLog;
use crate::lock::Locks;
use crate::store::Store;
use xlb_dataplane::{HostInterface, PinError};

/// Why `xlb run` did not start (or stopped), with the exit code it maps to.
#[derive(Debug)]
pub enum StartError {
    /// Exit 2: the config, an address in use, a directory that cannot be
    /// written, another daemon holding the interface or state directory.
    BadInput(anyhow::Error),
    /// Exit 4: the kernel, the pins, or the daemon once it runs.
    Failed(anyhow::Error),
}

impl StartError {
    pub fn bad(e: impl Into<anyhow::Error>) -> Self {
        Self::BadInput(e.into())
    }

    pub fn failed(e: impl Into<anyhow::Error>) -> Self {
        Self::Failed(e.into())
    }

    pub fn code(&self) -> u8 {
        match self {
            Self::BadInput(_) => 2,
            Self::Failed(_) => 4,
        }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadInput(e) | Self::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

/// A pin error at start: a config that does not fit the pins is bad input;
/// pins of another layout, or a bpffs that cannot be mounted, are the
/// kernel's side.
pub fn pin_error(e: PinError) -> StartError {
    match e {
        PinError::NotBpffs { .. } | PinError::ConnTableSize { .. } => StartError::bad(e),
        e => StartError::failed(e),
    }
}

/// What the checks are about.
pub struct Checks<'a> {
    pub interface: &'a str,
    pub state_dir: &'a Path,
    pub bpffs: &'a Path,
    /// Where the pins' locks live (`lock::RUN_DIR`).
    pub run_dir: &'a Path,
    pub socket: &'a Path,
    pub metrics_address: SocketAddr,
    pub keep_revisions: usize,
}

/// What the checks opened, for the daemon to use.
pub struct Ready {
    /// Held until the daemon exits.
    pub locks: Locks,
    pub host: HostInterface,
    pub store: Store,
    pub audit: AuditLog,
    /// Bound, non-blocking: for `tokio::net::TcpListener::from_std`.
    pub metrics: std::net::TcpListener,
}

/// The control socket can be bound where it is asked for (it is bound
/// after the first apply, `peer::bind`): no daemon answers there, the path
/// fits a socket address and is a socket if anything, and its directory
/// (or the nearest existing one above it) can be written.
fn socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    let name = path.display();
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(anyhow!(
            "a daemon already answers on the control socket {name}: stop it, or give this one \
             another --socket"
        ));
    }
    nix::sys::socket::UnixAddr::new(path)
        .map_err(|e| anyhow!("--socket {name}: not a socket path: {e}"))?;
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_socket()
    {
        return Err(anyhow!(
            "--socket {name}: there is a file there that is not a socket"
        ));
    }
    let mut dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    while let Some(d) = dir {
        if d.exists() {
            nix::unistd::access(
                d,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .map_err(|e| anyhow!("--socket {name}: cannot create it in {}: {e}", d.display()))?;
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

/// Run every check (see the module docs); nothing is loaded or attached.
pub fn check(c: &Checks) -> Result<Ready, StartError> {
    let dir = c.state_dir;
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("state directory {}: cannot create it", dir.display()))
            .map_err(StartError::BadInput)?;
    }
    xlb_dataplane::ensure_bpffs(c.bpffs).map_err(pin_error)?;
    let locks = crate::lock::lock_daemon(dir, c.run_dir, c.bpffs, c.interface, c.socket)
        .map_err(StartError::bad)?;
    socket(c.socket).map_err(StartError::BadInput)?;
    let host = xlb_dataplane::host::read(c.interface).map_err(StartError::bad)?;
    let revisions: PathBuf = dir.join("revisions");
    let store = Store::open(&revisions, c.keep_revisions)
        .and_then(|s| s.check_writable().map(|()| s))
        .context("the revision store")
        .map_err(StartError::BadInput)?;
    let audit = AuditLog::open(&dir.join("audit.log"))
        .with_context(|| format!("opening the audit log {}", dir.join("audit.log").display()))
        .map_err(StartError::BadInput)?;
    let metrics = std::net::TcpListener::bind(c.metrics_address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| {
            format!(
                "binding the metrics address {} (metrics_address, --metrics-address)",
                c.metrics_address
            )
        })
        .map_err(StartError::BadInput)?;
    Ok(Ready {
        locks,
        host,
        store,
        audit,
        metrics,
    })
}
