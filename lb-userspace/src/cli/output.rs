//! How a command ends: its output format, JSON printing, and a failure
//! with the exit code it maps to (DESIGN.md: 0 ok, 1 refused by a safety
//! check, 2 bad input, 3 changes planned, 4 daemon or kernel failure).

use xlb_core::api::{ApiError, ErrorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
}

/// A failure with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn bad_input(message: impl ToString) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }
    pub(crate) fn internal(message: impl ToString) -> Self {
        Self {
            code: 4,
            message: message.to_string(),
        }
    }
}

impl Failure {
    /// Refused by a safety check (exit code 1).
    pub(crate) fn refused(message: impl ToString) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        match e.kind {
            ErrorKind::BadInput => Failure::bad_input(e.message),
            ErrorKind::Internal => Failure::internal(e.message),
            ErrorKind::Refused | ErrorKind::Forbidden => Failure::refused(e.message),
        }
    }
}

/// Whether a JSON document went to stdout (then a failure adds none: one
/// document per command, which scripts parse whole).
static PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A JSON document was printed already.
pub(crate) fn json_printed() -> bool {
    PRINTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// A JSON document printed as it is (one line), its bytes from the daemon.
/// Written to stdout's descriptor, not through `std::io::stdout()`, whose
/// line buffering looks for the last newline in everything written: at
/// 1,000 VIPs x 64 backends, 35 MB of one line, a sixth of `xlb status -o
/// json`'s CPU.
pub(crate) fn print_json_bytes(json: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::fd::AsFd as _;
    PRINTED.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut stdout = std::io::stdout().lock();
    stdout.flush()?;
    let mut out = std::fs::File::from(stdout.as_fd().try_clone_to_owned()?);
    out.write_all(json)?;
    out.write_all(b"\n")
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    PRINTED.store(true, std::sync::atomic::Ordering::Relaxed);
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}
