//! The daemon's revision store: every configuration the daemon applied (or
//! tried to), numbered and immutable, so `xlb history` can list them and a
//! rollback can re-apply an old one as a new revision (kubectl rollout undo).
//!
//! # On disk
//!
//! A store is one directory (the daemon's state directory, e.g.
//! `/var/lib/xlb/<ifname>/revisions`, mode 0700) holding:
//!
//! - `NNNNNNNNNN.json` (the number, zero-padded to 10 digits): one
//!   [`Revision`] each, mode 0600 (revisions hold configs), in format 3: a
//!   header, one line of JSON (`{"format":3,"body_bytes":N,"body_hash":H,
//!   "summary":{...}}`: the revision's [`Summary`], what `xlb history`
//!   shows), then the body: N bytes of zstd, whose xxh64 is H, holding one
//!   line of JSON `{"plan":...}` (the plan as recorded: `Plan::recorded`,
//!   only the changed VIPs) and after its newline the config text as it
//!   was applied, to the end (raw: escaping 6 MB of TOML into JSON took
//!   longer than the rest of an apply of one VIP). Opening the store reads
//!   the headers only (and checks each file's length), so listing the
//!   revisions costs the same whatever the size of the configs. Format 2
//!   (the same header; a body of the JSON object
//!   `{"config_text":...,"plan":...}`, written until 2026-12-07) reads as
//!   it is; format 1 (pretty JSON of the whole [`Revision`], written before
//!   2026-12) reads, and a writable open rewrites such files in format 3
//!   (the migration, once).
//! - `next`: the high-water mark, the decimal number the next revision gets.
//! - `NNNNNNNNNN.json.corrupt[.K]`: files that failed to parse when the store
//!   was opened, set aside for a human; never deleted by the store.
//!
//! # Crash safety
//!
//! Every file is written whole by [`write_atomic`]: into `.<name>.tmp-<pid>`
//! in the same directory, `write_all`, `fsync` the file, `rename` it over the
//! final name, `fsync` the directory. `rename` within a directory is atomic,
//! so the final name always points at either the old complete file or the new
//! complete (and already fsynced) file: a reader never sees a torn revision.
//! A crash before the rename leaves only a temp file, which [`Store::open`]
//! removes (with a warning); the final name is then untouched. A crash after
//! the rename but before the directory fsync may lose the rename (old state)
//! or keep it (new state), both complete. Pruning is `unlink` of whole files,
//! oldest first, so a crash mid-prune only leaves extra old revisions, pruned
//! at the next [`Store::record`].
//!
//! # Numbers are never reused
//!
//! [`Store::next_number`] is the maximum of: the `next` file, and 1 + the
//! highest number found among revision file names and set-aside
//! `.json.corrupt` names. `record` writes the revision file first, then
//! `next`, then prunes; pruning never deletes the newest revision. So if a
//! crash falls between the two writes the highest file name still carries the
//! mark, and once pruned files are gone the `next` file does. The `next` file
//! also covers files an operator deleted by hand.
//!
//! The store has a single writer: the daemon, which holds its state
//! directory's lock (`crate::lock`) while it runs. Readers beside it (`xlb
//! plan --revision`) use [`Store::open_read_only`], which changes nothing.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use xlb_core::revision::{
    Kind, Outcome, RecordedPlan, Revision, SCHEMA_VERSION, Summary, text_hash,
};

const NEXT_FILE: &str = "next";
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// What went wrong, naming the file and the operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// e.g. "writing /var/lib/xlb/eth0/revisions/0000000007.json: No space
    /// left on device".
    #[error("{op} {}: {}", .path.display(), describe_io(.error))]
    Io {
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("parsing {}: {error}", .path.display())]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
    /// The file's header parses but its body is not the one it describes
    /// (torn, truncated, or changed by hand).
    #[error("reading {}: {reason}", .path.display())]
    BadBody { path: PathBuf, reason: String },
    /// The file is readable but not what its name says, or is in the way.
    #[error("{}: {reason}", .path.display())]
    Inconsistent { path: PathBuf, reason: String },
    #[error("the number of revisions to keep must be at least 1")]
    InvalidKeep,
    #[error("cannot record revision {got}: the next revision number is {expected}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("invalid revision {number}: {reason}")]
    Invalid { number: u64, reason: String },
    #[error("revision {0} is not in the store")]
    NotFound(u64),
    /// A store opened with [`Store::open_read_only`] is never written.
    #[error("the revision store {} is open read-only", .0.display())]
    ReadOnly(PathBuf),
    #[error("revision {number} is {from}, which is final; refusing to change it to {to}")]
    FinalOutcome {
        number: u64,
        from: &'static str,
        to: &'static str,
    },
}

/// An OS error's description without Rust's " (os error N)" suffix.
fn describe_io(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |error| StoreError::Io {
        op,
        path: path.to_path_buf(),
        error,
    }
}

/// The steps of [`write_atomic`], after which a test can simulate a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The temp file exists, empty.
    TempCreated,
    /// Half the bytes are in the temp file, not fsynced.
    HalfWritten,
    /// All the bytes are written, not fsynced.
    Written,
    /// The temp file is fsynced and closed: just before the rename.
    Synced,
    /// Renamed over the final name; the directory is not fsynced yet.
    Renamed,
}

fn crash_at(crash: Option<Step>, step: Step) {
    if crash == Some(step) {
        // Tests catch this unwind and drop the store without running any of
        // the code after this point, as a crash would.
        panic!("injected crash after step {step:?}");
    }
}

/// Replace `dir/name` with `bytes`, crash-safely (see the module docs). On a
/// real error before the rename, the temp file is removed; errors name the
/// final path.
fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    crash: Option<Step>,
) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written: Result<(), StoreError> = (|| {
        // A leftover from an earlier process with our pid.
        remove_if_exists(&tmp).map_err(io_err("removing", &tmp))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io_err("writing", &path))?;
        // Exactly 0600 whatever the umask.
        file.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io_err("writing", &path))?;
        crash_at(crash, Step::TempCreated);
        if crash == Some(Step::HalfWritten) {
            file.write_all(&bytes[..bytes.len() / 2])
                .map_err(io_err("writing", &path))?;
            crash_at(crash, Step::HalfWritten);
        }
        file.write_all(bytes).map_err(io_err("writing", &path))?;
        crash_at(crash, Step::Written);
        file.sync_all().map_err(io_err("syncing", &path))?;
        drop(file);
        crash_at(crash, Step::Synced);
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(error) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::Io {
            op: "renaming a temporary file to",
            path,
            error,
        });
    }
    crash_at(crash, Step::Renamed);
    sync_dir(dir)
}

/// Replace the small file `path` crash-safely (as a revision is written):
/// after this returns, the file is there whole, also after a power loss.
pub fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file path with a UTF-8 name");
    write_atomic(dir, name, bytes, None)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

fn file_name(number: u64) -> String {
    format!("{number:010}.json")
}

/// The number of a revision file name (`0000000007.json`); `None` for
/// anything else, including non-canonical spellings.
fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".json")?;
    if stem.len() < 10 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: u64 = stem.parse().ok()?;
    (format!("{number:010}") == stem).then_some(number)
}

/// The number of a set-aside file (`0000000007.json.corrupt[.K]`).
fn parse_corrupt_name(name: &str) -> Option<u64> {
    let i = name.find(".json.corrupt")?;
    parse_file_name(&name[..i + ".json".len()])
}

/// `.<name>.tmp-<pid>`, as written by [`write_atomic`].
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".tmp-")
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// The format of the revision files this code writes (the module docs).
const FORMAT: u32 = 3;
/// The earlier format with the same header, still read (the module docs).
const FORMAT_2: u32 = 2;
/// zstd's level for the bodies: 5.8 MB of generated TOML (1,000 VIPs x 64
/// backends) compress to 7.4 KB at level 1 in a quarter of level 3's time
/// (7.0 KB): on such repetitive text higher levels gain little, and the
/// compression is on the path of every apply.
const ZSTD_LEVEL: i32 = 1;
/// A header line longer than this is not one (a format-1 file, or junk).
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The first line of a format-2 or format-3 revision file.
#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    /// The length of the zstd body after the header line.
    body_bytes: u64,
    /// xxh64 (seed 0) of the body's bytes, 16 hex digits.
    body_hash: String,
    summary: Summary,
}

/// A revision's body, decompressed.
#[derive(Deserialize)]
struct Body {
    config_text: String,
    plan: Option<RecordedPlan>,
}

/// A format-3 body's first line (the config text follows it).
#[derive(Serialize, Deserialize)]
struct PlanLine<P> {
    plan: Option<P>,
}

fn body_hash(body: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh64::xxh64(body, 0))
}

/// A header line (with its newline) followed by `body`, a body of
/// `format`.
fn header_then(format: u32, summary: Summary, body: &[u8]) -> Result<Vec<u8>, StoreError> {
    let number = summary.number;
    let header = Header {
        format,
        body_bytes: body.len() as u64,
        body_hash: body_hash(body),
        summary,
    };
    let mut bytes = serde_json::to_vec(&header).map_err(|e| StoreError::Invalid {
        number,
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    bytes.extend_from_slice(body);
    Ok(bytes)
}

fn to_bytes(rev: &Revision) -> Result<Vec<u8>, StoreError> {
    let packed = pack(rev.number, rev.plan.as_ref(), &rev.config_text)?;
    header_then(FORMAT, rev.summary(), &packed.body)
}

/// A format-3 revision's body (its plan's line and its config text, zstd):
/// revision `number`'s as [`Store::record_packed`] takes it: its
/// recorded `plan` and its config `text`, compressed. Made apart from the
/// record so that it can be made while the tables are written (at 1,000
/// VIPs x 64 backends ~5 ms, beside a table swap's ~10 ms wait for the
/// kernel).
pub fn pack(
    number: u64,
    plan: Option<&RecordedPlan>,
    text: &str,
) -> Result<PackedText, StoreError> {
    let invalid = |reason: String| StoreError::Invalid { number, reason };
    let compressing = |e: io::Error| invalid(format!("compressing: {e}"));
    let mut body = zstd::stream::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(compressing)?;
    serde_json::to_writer(&mut body, &PlanLine { plan }).map_err(|e| invalid(e.to_string()))?;
    body.write_all(b"\n").map_err(compressing)?;
    body.write_all(text.as_bytes()).map_err(compressing)?;
    Ok(PackedText {
        number,
        body: body.finish().map_err(compressing)?,
    })
}

/// A recorded revision's config text as the store keeps it: its
/// compressed body (at 1,000 VIPs x 64 backends 8 KB for a 5.8 MB text),
/// for a daemon to hold the revision an automatic rollback returns to
/// without holding its text ([`Store::record`], [`Store::packed`]).
#[derive(Clone, Debug)]
pub struct PackedText {
    number: u64,
    body: Vec<u8>,
}

impl PackedText {
    /// The config text, decompressed.
    pub fn text(&self) -> Result<String, StoreError> {
        let bad = |reason: String| StoreError::Invalid {
            number: self.number,
            reason,
        };
        let json = zstd::decode_all(self.body.as_slice())
            .map_err(|e| bad(format!("decompressing: {e}")))?;
        let end = json
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("no newline after the plan's line".to_string()))?;
        String::from_utf8(json[end + 1..].to_vec())
            .map_err(|_| bad("the config text is not UTF-8".to_string()))
    }

    /// The revision's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The bytes held.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    io_err("reading", path)
}

/// Read a file whole; `Ok(None)` if it does not exist.
fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(read_error(path)(error)),
    }
}

/// A format-2 or -3 file's header and the offset of its body; `None` when
/// the first line is no such header (a format-1 file, or junk: the caller
/// parses it whole and says which).
fn split_header(bytes: &[u8]) -> Option<(Header, usize)> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    let header: Header = serde_json::from_slice(&bytes[..end]).ok()?;
    headed(header.format).then_some((header, end + 1))
}

/// Whether a file of this format begins with a `Header` line.
fn headed(format: u32) -> bool {
    format == FORMAT || format == FORMAT_2
}

fn parse_error(path: &Path) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |error| StoreError::Parse {
        path: path.to_path_buf(),
        error,
    }
}

/// A format-2 or -3 body checked against its header and decompressed.
fn read_body(path: &Path, header: &Header, body: &[u8]) -> Result<Body, StoreError> {
    let bad = |reason: String| StoreError::BadBody {
        path: path.to_path_buf(),
        reason,
    };
    if body.len() as u64 != header.body_bytes {
        return Err(bad(format!(
            "the body is {} bytes, its header says {}",
            body.len(),
            header.body_bytes
        )));
    }
    if body_hash(body) != header.body_hash {
        return Err(bad(format!(
            "the body's hash is not its header's {}",
            header.body_hash
        )));
    }
    let json = zstd::decode_all(body).map_err(|e| bad(format!("decompressing: {e}")))?;
    if header.format == FORMAT_2 {
        return serde_json::from_slice(&json).map_err(parse_error(path));
    }
    let end = json
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| bad("no newline after the plan's line".to_string()))?;
    let line: PlanLine<RecordedPlan> =
        serde_json::from_slice(&json[..end]).map_err(parse_error(path))?;
    let mut text = json;
    text.drain(..=end);
    let config_text =
        String::from_utf8(text).map_err(|_| bad("the config text is not UTF-8".to_string()))?;
    Ok(Body {
        config_text,
        plan: line.plan,
    })
}

/// Read and parse a revision file (either format); `Ok(None)` if it does
/// not exist. A parse error is [`StoreError::Parse`], a body that is not
/// its header's [`StoreError::BadBody`]; I/O errors are
/// [`StoreError::Io`].
fn read_revision(path: &Path) -> Result<Option<Revision>, StoreError> {
    let Some(bytes) = read_bytes(path)? else {
        return Ok(None);
    };
    match split_header(&bytes) {
        Some((header, at)) => {
            let body = read_body(path, &header, &bytes[at..])?;
            Ok(Some(Revision::from_summary(
                header.summary,
                body.config_text,
                body.plan,
            )))
        }
        None => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(parse_error(path)),
    }
}

/// What a revision file's summary read found.
struct Found {
    summary: Summary,
    /// A format-1 file (read whole), to migrate.
    format_1: bool,
}

/// Read a revision file's summary: for format 2 its header line only, and
/// its length checked against the header (a torn or truncated body is
/// [`StoreError::BadBody`]); a format-1 file is read whole.
fn read_summary(path: &Path) -> Result<Option<Found>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(read_error(path)(error)),
    };
    let length = file.metadata().map_err(read_error(path))?.len();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(read_error(path))?;
    if line.ends_with(b"\n")
        && let Ok(header) = serde_json::from_slice::<Header>(&line[..line.len() - 1])
        && headed(header.format)
    {
        let expected = line.len() as u64 + header.body_bytes;
        if length != expected {
            return Err(StoreError::BadBody {
                path: path.to_path_buf(),
                reason: format!(
                    "the file is {length} bytes, its header says {expected} (torn or truncated)"
                ),
            });
        }
        return Ok(Some(Found {
            summary: header.summary,
            format_1: false,
        }));
    }
    // Format 1: the whole file is the revision.
    let mut rest = line;
    reader.read_to_end(&mut rest).map_err(read_error(path))?;
    let rev: Revision = serde_json::from_slice(&rest).map_err(parse_error(path))?;
    Ok(Some(Found {
        summary: rev.summary(),
        format_1: true,
    }))
}

fn check_finite(number: u64, what: &str, value: f64) -> Result<(), StoreError> {
    if value.is_finite() {
        Ok(())
    } else {
        // serde_json would write it as null and fail to read it back.
        Err(StoreError::Invalid {
            number,
            reason: format!("{what} is {value}"),
        })
    }
}

fn check_outcome(number: u64, outcome: &Outcome) -> Result<(), StoreError> {
    if let Outcome::RolledBack {
        at_unix_seconds,
        by,
        ..
    } = outcome
    {
        check_finite(number, "rolled_back.at_unix_seconds", *at_unix_seconds)?;
        if *by <= number {
            return Err(StoreError::Invalid {
                number,
                reason: format!("rolled back by revision {by}, which is not newer"),
            });
        }
    }
    Ok(())
}

fn check_revision(rev: &Revision) -> Result<(), StoreError> {
    let invalid = |reason: String| StoreError::Invalid {
        number: rev.number,
        reason,
    };
    if rev.schema_version != SCHEMA_VERSION {
        return Err(invalid(format!(
            "schema_version is {}, this store writes {SCHEMA_VERSION}",
            rev.schema_version
        )));
    }
    let hash = text_hash(&rev.config_text);
    if rev.config_hash != hash {
        return Err(invalid(format!(
            "config_hash is {:?} but the config text hashes to {hash}",
            rev.config_hash
        )));
    }
    check_finite(
        rev.number,
        "created_at_unix_seconds",
        rev.created_at_unix_seconds,
    )?;
    if let Kind::Rollback { to } | Kind::AutomaticRollback { to, .. } = rev.kind
        && to >= rev.number
    {
        return Err(invalid(format!(
            "a rollback to revision {to}, which is not older"
        )));
    }
    check_outcome(rev.number, &rev.outcome)
}

/// Create `dir` (and missing parents) mode 0700, or check the existing one.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                warn!(
                    "revision store {} is mode {mode:o}; it holds configs and should be 700",
                    dir.display()
                );
            }
            Ok(())
        }
        Ok(_) => Err(StoreError::Io {
            op: "opening",
            path: dir.to_path_buf(),
            error: io::Error::from_raw_os_error(libc::ENOTDIR),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(io_err("creating directory", dir))?;
            fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
                .map_err(io_err("creating directory", dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(error) => Err(StoreError::Io {
            op: "opening",
            path: dir.to_path_buf(),
            error,
        }),
    }
}

/// Rename `path` to `path.corrupt` (or `.corrupt.K` if taken).
fn set_aside(path: &Path, why: &str) -> Result<(), StoreError> {
    let base = path.as_os_str().to_owned();
    let mut k = 0;
    let dest = loop {
        let mut dest = base.clone();
        dest.push(".corrupt");
        if k > 0 {
            dest.push(format!(".{k}"));
        }
        let dest = PathBuf::from(dest);
        if !exists(&dest) {
            break dest;
        }
        k += 1;
    };
    warn!(
        "setting aside {} as {}: {why}",
        path.display(),
        dest.display()
    );
    fs::rename(path, &dest).map_err(io_err("setting aside", path))
}

/// Rewrite the format-1 file `path` (revision `number`) in format 2,
/// crash-safely (a crash leaves the old file whole, read again next time).
fn migrate(dir: &Path, number: u64, path: &Path) -> Result<(), StoreError> {
    let was = fs::metadata(path).map_or(0, |m| m.len());
    let rev = read_revision(path)?.ok_or(StoreError::NotFound(number))?;
    let bytes = to_bytes(&rev)?;
    write_atomic(dir, &file_name(number), &bytes, None)?;
    info!(
        "revision {number}: rewritten in format {FORMAT} ({} bytes, was {was})",
        bytes.len()
    );
    Ok(())
}

/// The revision store. See the module docs.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    keep: usize,
    /// Opened by [`Store::open_read_only`]: nothing is written, renamed or
    /// removed.
    read_only: bool,
    /// The revision files present and their summaries (the index: what
    /// `xlb history` lists, kept in memory; the store is its files' only
    /// writer).
    index: BTreeMap<u64, Summary>,
    next: u64,
    /// Tests: crash at this step of the n-th `write_atomic` (counting from 0).
    #[cfg(test)]
    crash: Option<(usize, Step)>,
    #[cfg(test)]
    writes: usize,
}

impl Store {
    /// Open (creating it mode 0700 if missing) the store in `dir`, keeping
    /// the newest `keep` revisions (plus the live one, see [`Store::record`]).
    ///
    /// Stray temp files from interrupted writes are removed; revision files
    /// that fail to parse, or hold another number than their name, are
    /// renamed to `<name>.corrupt` (never deleted); both with a warning.
    /// Existing files beyond `keep` are pruned at the next `record`, not here.
    pub fn open(dir: &Path, keep: usize) -> Result<Store, StoreError> {
        Self::open_as(dir, keep, false)
    }

    /// Open an existing store to read it (`xlb plan --revision`, beside a
    /// running daemon): nothing in the directory is created, removed or
    /// renamed. Temp files are ignored (they may be a running daemon's
    /// writes in progress); files that fail to parse are left where they
    /// are and are not listed; `record` and `update_outcome` are refused.
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        Self::open_as(dir, usize::MAX, true)
    }

    fn open_as(dir: &Path, keep: usize, read_only: bool) -> Result<Store, StoreError> {
        if keep == 0 {
            return Err(StoreError::InvalidKeep);
        }
        if read_only {
            if !fs::metadata(dir).map_err(io_err("opening", dir))?.is_dir() {
                return Err(StoreError::Io {
                    op: "opening",
                    path: dir.to_path_buf(),
                    error: io::Error::from_raw_os_error(libc::ENOTDIR),
                });
            }
        } else {
            ensure_dir(dir)?;
        }
        // What open does to a file it cannot use: set it aside, or (read
        // only) leave it and say so.
        let set_aside = |path: &Path, why: &str| -> Result<(), StoreError> {
            if read_only {
                warn!("ignoring {}: {why}", path.display());
                Ok(())
            } else {
                set_aside(path, why)
            }
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
            names.push(entry.map_err(io_err("listing", dir))?.file_name());
        }
        names.sort();

        let mut index = BTreeMap::new();
        let mut highest = 0;
        let mut next_file = None;
        let mut changed = false;
        for name in names {
            let path = dir.join(&name);
            let Some(name) = name.to_str() else {
                debug!("ignoring {} in the revision store", path.display());
                continue;
            };
            if is_temp_name(name) && read_only {
                debug!(
                    "ignoring {} (a write in progress, or interrupted)",
                    path.display()
                );
            } else if is_temp_name(name) {
                warn!("removing {}, left by an interrupted write", path.display());
                remove_if_exists(&path).map_err(io_err("removing", &path))?;
                changed = true;
            } else if let Some(number) = parse_file_name(name) {
                highest = highest.max(number);
                match read_summary(&path) {
                    Ok(Some(found)) if found.summary.number == number => {
                        let summary = found.summary;
                        if summary.schema_version > SCHEMA_VERSION {
                            warn!(
                                "{} has schema_version {}, newer than this daemon's {SCHEMA_VERSION}",
                                path.display(),
                                summary.schema_version
                            );
                        }
                        if found.format_1 && !read_only {
                            migrate(dir, number, &path)?;
                            changed = true;
                        }
                        index.insert(number, summary);
                    }
                    Ok(Some(found)) => {
                        set_aside(
                            &path,
                            &format!("it holds revision {}", found.summary.number),
                        )?;
                        changed = true;
                    }
                    Ok(None) => {}
                    Err(e @ (StoreError::Parse { .. } | StoreError::BadBody { .. })) => {
                        set_aside(&path, &e.to_string())?;
                        changed = true;
                    }
                    Err(e) => return Err(e),
                }
            } else if let Some(number) = parse_corrupt_name(name) {
                highest = highest.max(number);
            } else if name == NEXT_FILE {
                let text = fs::read(&path).map_err(io_err("reading", &path))?;
                match std::str::from_utf8(&text)
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                {
                    Some(n) => next_file = Some(n),
                    None => {
                        set_aside(&path, "not a number")?;
                        changed = true;
                    }
                }
            } else {
                debug!("ignoring {} in the revision store", path.display());
            }
        }
        if changed && !read_only {
            sync_dir(dir)?;
        }
        let next = next_file.unwrap_or(1).max(highest.saturating_add(1)).max(1);
        Ok(Store {
            dir: dir.to_path_buf(),
            keep,
            read_only,
            index,
            next,
            #[cfg(test)]
            crash: None,
            #[cfg(test)]
            writes: 0,
        })
    }

    /// Check that the store can be written, before a daemon relies on it:
    /// a probe file is written whole (as a revision would be) and removed.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly(self.dir.clone()));
        }
        let name = "writable-probe";
        write_atomic(&self.dir, name, b"probe\n", None)?;
        let path = self.dir.join(name);
        fs::remove_file(&path).map_err(io_err("removing", &path))?;
        sync_dir(&self.dir)
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number the next recorded revision must have: 1 + the highest
    /// ever recorded, even if since pruned.
    pub fn next_number(&self) -> u64 {
        self.next
    }

    #[cfg(test)]
    fn crash_for_next_write(&mut self) -> Option<Step> {
        let n = self.writes;
        self.writes += 1;
        self.crash.filter(|(at, _)| *at == n).map(|(_, step)| step)
    }

    #[cfg(not(test))]
    fn crash_for_next_write(&mut self) -> Option<Step> {
        None
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(file_name(number))
    }

    /// Record a new revision, numbered [`Store::next_number`], crash-safely;
    /// then prune the oldest revisions beyond `keep`, except the live one
    /// (the newest applied/baking/baked, which the daemon restores on start).
    ///
    /// Returns the revision's text as recorded (compressed), or an error
    /// only if the revision is not recorded, or if only the
    /// final directory fsync failed (then it is visible, its number is used,
    /// but it may not survive a power loss). Failures to update `next` or to
    /// prune are logged: the revision is recorded, and the high-water mark is
    /// still carried by its file name.
    pub fn record(&mut self, rev: &Revision) -> Result<PackedText, StoreError> {
        let packed = pack(rev.number, rev.plan.as_ref(), &rev.config_text)?;
        self.record_packed(rev, packed)
    }

    /// [`Store::record`], with the body made beforehand: `packed` must be
    /// [`pack`] of `rev`'s number, plan and text.
    pub fn record_packed(
        &mut self,
        rev: &Revision,
        packed: PackedText,
    ) -> Result<PackedText, StoreError> {
        if packed.number != rev.number {
            return Err(StoreError::Invalid {
                number: rev.number,
                reason: format!("its body is revision {}'s", packed.number),
            });
        }
        if self.read_only {
            return Err(StoreError::ReadOnly(self.dir.clone()));
        }
        if rev.number != self.next {
            return Err(StoreError::OutOfOrder {
                expected: self.next,
                got: rev.number,
            });
        }
        check_revision(rev)?;
        let number = rev.number;
        let after = number.checked_add(1).ok_or_else(|| StoreError::Invalid {
            number,
            reason: "revision numbers are exhausted".to_string(),
        })?;
        let path = self.path(number);
        if exists(&path) {
            return Err(StoreError::Inconsistent {
                path,
                reason: "already exists, and revisions are immutable".to_string(),
            });
        }
        let body = packed.body;
        let bytes = header_then(FORMAT, rev.summary(), &body)?;
        let crash = self.crash_for_next_write();
        let written = write_atomic(&self.dir, &file_name(number), &bytes, crash);
        // If the rename happened, the number is taken, whatever went wrong.
        if written.is_ok() || exists(&path) {
            self.index.insert(number, rev.summary());
            self.next = after;
        }
        written?;

        let crash = self.crash_for_next_write();
        let next = format!("{}\n", self.next);
        if let Err(e) = write_atomic(&self.dir, NEXT_FILE, next.as_bytes(), crash) {
            warn!("revision {number} is recorded, but the high-water mark is not: {e}");
        }
        self.prune();
        Ok(PackedText { number, body })
    }

    /// Revision `number`'s config text as recorded, compressed (read, its
    /// hash checked, not decompressed); None when the store does not hold
    /// it or holds it in an older format.
    pub fn packed(&self, number: u64) -> Result<Option<PackedText>, StoreError> {
        if !self.index.contains_key(&number) {
            return Ok(None);
        }
        let path = self.path(number);
        let Some(bytes) = read_bytes(&path)? else {
            return Ok(None);
        };
        let Some((header, at)) = split_header(&bytes).filter(|(h, _)| h.format == FORMAT) else {
            return Ok(None);
        };
        let body = &bytes[at..];
        if header.summary.number != number
            || body.len() as u64 != header.body_bytes
            || body_hash(body) != header.body_hash
        {
            // Read whole, it names what is wrong.
            read_revision(&path)?;
            return Ok(None);
        }
        Ok(Some(PackedText {
            number,
            body: body.to_vec(),
        }))
    }

    fn prune(&mut self) {
        if self.index.len() <= self.keep {
            return;
        }
        let live = self.latest_applied_number();
        let window: BTreeSet<u64> = self.index.keys().rev().take(self.keep).copied().collect();
        let victims: Vec<u64> = self
            .index
            .keys()
            .copied()
            .filter(|n| !window.contains(n) && Some(*n) != live)
            .collect();
        for number in victims {
            let path = self.path(number);
            match remove_if_exists(&path) {
                Ok(()) => {
                    debug!("pruned revision {number}");
                    self.index.remove(&number);
                }
                Err(error) => {
                    let e = StoreError::Io {
                        op: "removing",
                        path,
                        error,
                    };
                    warn!("pruning revisions: {e}");
                }
            }
        }
        if let Err(e) = sync_dir(&self.dir) {
            warn!("pruning revisions: {e}");
        }
    }

    /// Change the outcome of a recorded revision (baking -> baked, or ->
    /// rolled_back), rewriting its file whole, crash-safely. Failed and
    /// rolled-back outcomes are final; setting the current outcome again is a
    /// no-op.
    pub fn update_outcome(&mut self, number: u64, outcome: Outcome) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly(self.dir.clone()));
        }
        let current = self
            .index
            .get(&number)
            .ok_or(StoreError::NotFound(number))?;
        if current.outcome == outcome {
            return Ok(());
        }
        if current.outcome.is_final() {
            return Err(StoreError::FinalOutcome {
                number,
                from: current.outcome.name(),
                to: outcome.name(),
            });
        }
        check_outcome(number, &outcome)?;
        // The header rewritten, the body copied as it is (checked, not
        // decompressed).
        let path = self.path(number);
        let old = read_bytes(&path)?.ok_or(StoreError::NotFound(number))?;
        let (summary, bytes) = match split_header(&old) {
            Some((header, at)) => {
                let body = &old[at..];
                if body.len() as u64 != header.body_bytes || body_hash(body) != header.body_hash {
                    // Read whole, it names what is wrong.
                    read_revision(&path)?;
                }
                let mut summary = header.summary;
                if summary.number != number {
                    return Err(StoreError::Inconsistent {
                        path,
                        reason: format!("holds revision {}", summary.number),
                    });
                }
                summary.outcome = outcome;
                (summary.clone(), header_then(header.format, summary, body)?)
            }
            None => {
                let mut rev: Revision = serde_json::from_slice(&old).map_err(parse_error(&path))?;
                rev.outcome = outcome;
                (rev.summary(), to_bytes(&rev)?)
            }
        };
        let crash = self.crash_for_next_write();
        write_atomic(&self.dir, &file_name(number), &bytes, crash)?;
        self.index.insert(number, summary);
        Ok(())
    }

    /// The revision numbered `number`, if the store holds it.
    pub fn get(&self, number: u64) -> Result<Option<Revision>, StoreError> {
        if !self.index.contains_key(&number) {
            return Ok(None);
        }
        let path = self.path(number);
        match read_revision(&path)? {
            Some(rev) if rev.number != number => Err(StoreError::Inconsistent {
                path,
                reason: format!("holds revision {}", rev.number),
            }),
            rev => Ok(rev),
        }
    }

    /// All the revisions held, oldest first, each read whole (texts and
    /// plans): for a few, prefer [`Store::summaries`] and [`Store::get`].
    pub fn list(&self) -> Result<Vec<Revision>, StoreError> {
        let mut revs = Vec::with_capacity(self.index.len());
        for &number in self.index.keys() {
            revs.extend(self.get(number)?);
        }
        Ok(revs)
    }

    /// The summaries of the revisions held, oldest first (`xlb history`):
    /// from the index, no file read.
    pub fn summaries(&self) -> Vec<Summary> {
        self.index.values().cloned().collect()
    }

    /// The newest revision, whatever its outcome.
    pub fn latest(&self) -> Result<Option<Revision>, StoreError> {
        for &number in self.index.keys().rev() {
            if let Some(rev) = self.get(number)? {
                return Ok(Some(rev));
            }
        }
        Ok(None)
    }

    fn latest_applied_number(&self) -> Option<u64> {
        self.index
            .values()
            .rev()
            .find(|s| s.outcome.is_live())
            .map(|s| s.number)
    }

    /// The newest revision whose outcome is applied, baking or baked: what
    /// the daemon should restore on start.
    pub fn latest_applied(&self) -> Result<Option<Revision>, StoreError> {
        match self.latest_applied_number() {
            Some(number) => self.get(number),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "xlb-revisions-{}-{}-{label}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn rev(number: u64, config_text: &str) -> Revision {
        Revision {
            schema_version: SCHEMA_VERSION,
            number,
            created_at_unix_seconds: 1_700_000_000.0 + number as f64,
            user: "alice".to_string(),
            message: Some(format!("change {number}")),
            config_file: "/etc/xlb/xlb.toml".to_string(),
            config_text: config_text.to_string(),
            config_hash: text_hash(config_text),
            kind: Kind::Apply,
            plan: Some(serde_json::json!({ "schema_version": 1, "changes": [] }).into()),
            outcome: Outcome::Applied,
        }
    }

    fn config(number: u64) -> String {
        format!("# revision {number}\nhash_seed = {number}\n")
    }

    fn record_n(store: &mut Store, count: u64) {
        for _ in 0..count {
            let n = store.next_number();
            store.record(&rev(n, &config(n))).unwrap();
        }
    }

    fn numbers(store: &Store) -> Vec<u64> {
        store.list().unwrap().iter().map(|r| r.number).collect()
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        dir_names(dir)
            .into_iter()
            .filter(|n| is_temp_name(n))
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn record_list_get_latest() {
        let tmp = TempDir::new("basic");
        let mut store = Store::open(tmp.path(), 10).unwrap();
        assert_eq!(store.next_number(), 1);
        assert_eq!(store.latest().unwrap(), None);
        assert_eq!(store.latest_applied().unwrap(), None);
        assert!(store.list().unwrap().is_empty());

        let r1 = rev(1, &config(1));
        store.record(&r1).unwrap();
        let mut r2 = rev(2, &config(2));
        r2.kind = Kind::Rollback { to: 1 };
        r2.message = None;
        r2.plan = None;
        store.record(&r2).unwrap();
        let mut r3 = rev(3, "bad");
        r3.outcome = Outcome::Failed {
            error: "vip 10.0.0.1:80: no backends".to_string(),
        };
        store.record(&r3).unwrap();

        assert_eq!(store.next_number(), 4);
        assert_eq!(store.get(1).unwrap(), Some(r1.clone()));
        assert_eq!(store.get(2).unwrap(), Some(r2.clone()));
        assert_eq!(store.get(4).unwrap(), None);
        assert_eq!(store.list().unwrap(), vec![r1, r2.clone(), r3.clone()]);
        assert_eq!(store.latest().unwrap(), Some(r3.clone()));
        assert_eq!(store.latest_applied().unwrap(), Some(r2.clone()));

        // The same after reopening.
        drop(store);
        let store = Store::open(tmp.path(), 10).unwrap();
        assert_eq!(store.next_number(), 4);
        assert_eq!(store.latest().unwrap(), Some(r3));
        assert_eq!(store.latest_applied().unwrap(), Some(r2));
        assert_eq!(
            dir_names(tmp.path()),
            [
                "0000000001.json",
                "0000000002.json",
                "0000000003.json",
                "next"
            ]
        );
        assert_eq!(fs::read_to_string(tmp.path().join("next")).unwrap(), "4\n");
    }

    #[test]
    fn a_recorded_text_is_handed_back_packed_and_read_again() {
        let tmp = TempDir::new("packed");
        let mut store = Store::open(tmp.path(), 10).unwrap();
        let text = config(1).repeat(200);
        let packed = store.record(&rev(1, &text)).unwrap();
        assert_eq!(packed.number(), 1);
        assert_eq!(packed.text().unwrap(), text);
        assert!(packed.len() < text.len() / 10, "{} bytes", packed.len());
        let read = store.packed(1).unwrap().expect("revision 1 is held");
        assert_eq!(read.text().unwrap(), text);
        assert!(store.packed(2).unwrap().is_none());
        // A body made beforehand is recorded as record makes it; another
        // revision's is refused.
        let r2 = rev(2, &config(2));
        let wrong = pack(3, r2.plan.as_ref(), &r2.config_text).unwrap();
        let e = store.record_packed(&r2, wrong).unwrap_err().to_string();
        assert!(e.contains("revision 3's"), "{e}");
        let body = pack(2, r2.plan.as_ref(), &r2.config_text).unwrap();
        store.record_packed(&r2, body).unwrap();
        assert_eq!(store.get(2).unwrap(), Some(r2));

        // A damaged body is named, not handed back.
        let path = tmp.path().join("0000000001.json");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let e = store.packed(1).unwrap_err().to_string();
        assert!(e.contains("0000000001.json"), "{e}");
    }

    #[test]
    fn json_shape_is_the_documented_one() {
        let mut r = rev(7, "x = 1\n");
        r.kind = Kind::AutomaticRollback {
            to: 5,
            reason: "skew".to_string(),
        };
        r.outcome = Outcome::RolledBack {
            at_unix_seconds: 1.5,
            by: 9,
            reason: "operator".to_string(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(
            v["kind"],
            serde_json::json!({"type": "automatic_rollback", "to": 5, "reason": "skew"})
        );
        assert_eq!(
            v["outcome"],
            serde_json::json!({"type": "rolled_back", "at_unix_seconds": 1.5, "by": 9, "reason": "operator"})
        );
        assert_eq!(
            serde_json::to_value(Outcome::Baking).unwrap(),
            serde_json::json!({"type": "baking"})
        );
        assert_eq!(v["config_hash"].as_str().unwrap().len(), 16);
        let back: Revision = serde_json::from_str(&v.to_string()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn record_refuses_out_of_order_and_invalid_revisions() {
        let tmp = TempDir::new("invalid");
        let mut store = Store::open(tmp.path(), 3).unwrap();
        let e = store.record(&rev(2, "a")).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::OutOfOrder {
                    expected: 1,
                    got: 2
                }
            ),
            "{e}"
        );

        let mut bad_hash = rev(1, "a");
        bad_hash.config_hash = text_hash("b");
        let mut nan = rev(1, "a");
        nan.created_at_unix_seconds = f64::NAN;
        let mut rollback_forward = rev(1, "a");
        rollback_forward.kind = Kind::Rollback { to: 1 };
        let mut schema = rev(1, "a");
        schema.schema_version = 2;
        let mut rolled_back_by_older = rev(1, "a");
        rolled_back_by_older.outcome = Outcome::RolledBack {
            at_unix_seconds: 1.0,
            by: 1,
            reason: String::new(),
        };
        for r in [
            bad_hash,
            nan,
            rollback_forward,
            schema,
            rolled_back_by_older,
        ] {
            let e = store.record(&r).unwrap_err();
            assert!(matches!(e, StoreError::Invalid { number: 1, .. }), "{e}");
        }
        assert_eq!(store.next_number(), 1);
        assert!(store.list().unwrap().is_empty());

        // A file in the way (not ours) is not overwritten.
        let mut store = Store::open(tmp.path(), 3).unwrap();
        fs::write(tmp.path().join("0000000001.json"), "someone else's").unwrap();
        let e = store.record(&rev(1, "a")).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(
            fs::read_to_string(tmp.path().join("0000000001.json")).unwrap(),
            "someone else's"
        );

        assert!(matches!(
            Store::open(tmp.path(), 0).unwrap_err(),
            StoreError::InvalidKeep
        ));

        // A `next` at the very end of the numbers refuses, never wraps.
        fs::write(tmp.path().join(NEXT_FILE), format!("{}\n", u64::MAX)).unwrap();
        let mut store = Store::open(tmp.path(), 3).unwrap();
        assert_eq!(store.next_number(), u64::MAX);
        let e = store.record(&rev(u64::MAX, "a")).unwrap_err();
        assert!(e.to_string().contains("exhausted"), "{e}");
    }

    #[test]
    fn keep_prunes_oldest_and_numbers_are_never_reused() {
        let tmp = TempDir::new("prune");
        let mut store = Store::open(tmp.path(), 3).unwrap();
        record_n(&mut store, 7);
        assert_eq!(numbers(&store), [5, 6, 7]);
        assert_eq!(store.next_number(), 8);
        assert_eq!(store.get(1).unwrap(), None);

        // After reopening, with the pruned numbers gone from disk.
        drop(store);
        let mut store = Store::open(tmp.path(), 3).unwrap();
        assert_eq!(store.next_number(), 8);
        record_n(&mut store, 1);
        assert_eq!(numbers(&store), [6, 7, 8]);

        // Even if every revision file is deleted by hand, `next` holds the
        // mark.
        drop(store);
        for n in 6..=8 {
            fs::remove_file(tmp.path().join(file_name(n))).unwrap();
        }
        let mut store = Store::open(tmp.path(), 3).unwrap();
        assert_eq!(store.next_number(), 9);
        assert!(store.list().unwrap().is_empty());
        record_n(&mut store, 1);
        assert_eq!(numbers(&store), [9]);

        // And if `next` is lost, the highest file name carries it.
        drop(store);
        fs::remove_file(tmp.path().join(NEXT_FILE)).unwrap();
        let store = Store::open(tmp.path(), 3).unwrap();
        assert_eq!(store.next_number(), 10);

        // A smaller keep prunes at the next record, oldest first.
        drop(store);
        let mut store = Store::open(tmp.path(), 1).unwrap();
        record_n(&mut store, 3);
        assert_eq!(numbers(&store), [12]);
        let mut store = Store::open(tmp.path(), 2).unwrap();
        record_n(&mut store, 1);
        assert_eq!(numbers(&store), [12, 13]);
    }

    #[test]
    fn pruning_keeps_the_live_revision() {
        let tmp = TempDir::new("live");
        let mut store = Store::open(tmp.path(), 2).unwrap();
        record_n(&mut store, 1);
        for n in 2..=4 {
            let mut r = rev(n, "broken");
            r.outcome = Outcome::Failed {
                error: "invalid".to_string(),
            };
            store.record(&r).unwrap();
        }
        // 1 is what the daemon restores on start: it stays beyond `keep`.
        assert_eq!(numbers(&store), [1, 3, 4]);
        assert_eq!(store.latest_applied().unwrap().unwrap().number, 1);
        record_n(&mut store, 1);
        assert_eq!(numbers(&store), [4, 5]);
    }

    #[test]
    fn update_outcome_persists_and_final_outcomes_stay() {
        let tmp = TempDir::new("outcome");
        let mut store = Store::open(tmp.path(), 5).unwrap();
        let mut r1 = rev(1, &config(1));
        r1.outcome = Outcome::Baking;
        store.record(&r1).unwrap();
        store.update_outcome(1, Outcome::Baked).unwrap();
        assert_eq!(store.get(1).unwrap().unwrap().outcome, Outcome::Baked);
        record_n(&mut store, 1);
        let rolled_back = Outcome::RolledBack {
            at_unix_seconds: 1_700_000_100.0,
            by: 3,
            reason: "operator rollback".to_string(),
        };
        store.update_outcome(2, rolled_back.clone()).unwrap();

        drop(store);
        let mut store = Store::open(tmp.path(), 5).unwrap();
        let mut expected = r1.clone();
        expected.outcome = Outcome::Baked;
        assert_eq!(store.get(1).unwrap(), Some(expected));
        assert_eq!(store.get(2).unwrap().unwrap().outcome, rolled_back);
        assert_eq!(store.latest_applied().unwrap().unwrap().number, 1);

        // Same outcome again: a no-op; changing a final one: refused.
        store.update_outcome(2, rolled_back.clone()).unwrap();
        let e = store.update_outcome(2, Outcome::Applied).unwrap_err();
        assert!(
            matches!(e, StoreError::FinalOutcome { number: 2, .. }),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "revision 2 is rolled_back, which is final; refusing to change it to applied"
        );
        assert!(matches!(
            store.update_outcome(9, Outcome::Baked).unwrap_err(),
            StoreError::NotFound(9)
        ));
        let e = store
            .update_outcome(
                1,
                Outcome::RolledBack {
                    at_unix_seconds: 0.0,
                    by: 1,
                    reason: String::new(),
                },
            )
            .unwrap_err();
        assert!(matches!(e, StoreError::Invalid { number: 1, .. }), "{e}");
        assert_eq!(store.get(1).unwrap().unwrap().outcome, Outcome::Baked);
    }

    #[test]
    fn corrupt_files_are_set_aside_not_deleted() {
        let tmp = TempDir::new("corrupt");
        let dir = tmp.path();
        let mut store = Store::open(dir, 10).unwrap();
        record_n(&mut store, 5);
        drop(store);

        let full = fs::read(dir.join(file_name(2))).unwrap();
        fs::write(dir.join(file_name(2)), &full[..full.len() / 2]).unwrap(); // truncated
        fs::write(dir.join(file_name(3)), "").unwrap(); // empty
        fs::copy(dir.join(file_name(1)), dir.join(file_name(4))).unwrap(); // wrong number
        fs::write(dir.join(file_name(5)), b"\xff\xfe garbage").unwrap(); // the newest
        fs::write(dir.join(format!("{}.corrupt", file_name(3))), "earlier").unwrap();
        fs::write(dir.join("notes.txt"), "operator's").unwrap();

        let store = Store::open(dir, 10).unwrap();
        assert_eq!(numbers(&store), [1]);
        // 5 was set aside, but its number stays used.
        assert_eq!(store.next_number(), 6);
        assert_eq!(
            dir_names(dir),
            [
                "0000000001.json",
                "0000000002.json.corrupt",
                "0000000003.json.corrupt",
                "0000000003.json.corrupt.1",
                "0000000004.json.corrupt",
                "0000000005.json.corrupt",
                "next",
                "notes.txt",
            ]
        );
        assert_eq!(
            fs::read(dir.join("0000000002.json.corrupt")).unwrap(),
            &full[..full.len() / 2]
        );
        assert_eq!(
            fs::read_to_string(dir.join("0000000003.json.corrupt")).unwrap(),
            "earlier"
        );
        assert_eq!(
            fs::read(dir.join("0000000005.json.corrupt")).unwrap(),
            b"\xff\xfe garbage"
        );

        // Even without `next`, a set-aside number is not reused.
        drop(store);
        fs::remove_file(dir.join(NEXT_FILE)).unwrap();
        let mut store = Store::open(dir, 10).unwrap();
        assert_eq!(store.next_number(), 6);

        // A corrupt `next` is set aside too; the file names still carry the mark.
        record_n(&mut store, 1);
        drop(store);
        fs::write(dir.join(NEXT_FILE), "seven").unwrap();
        let store = Store::open(dir, 10).unwrap();
        assert_eq!(store.next_number(), 7);
        assert_eq!(
            fs::read_to_string(dir.join("next.corrupt")).unwrap(),
            "seven"
        );
    }

    #[test]
    fn a_read_only_open_changes_nothing() {
        let tmp = TempDir::new("read-only");
        let dir = tmp.path();
        let mut store = Store::open(dir, 10).unwrap();
        record_n(&mut store, 3);
        drop(store);
        // A running daemon's write in progress, and a file that does not
        // parse: a read-only open leaves both.
        fs::write(dir.join(".0000000004.json.tmp-4242"), "{ \"schema_ver").unwrap();
        fs::write(dir.join(file_name(2)), "{ torn").unwrap();
        let before = dir_names(dir);
        let mut store = Store::open_read_only(dir).unwrap();
        assert_eq!(dir_names(dir), before);
        assert_eq!(numbers(&store), [1, 3]);
        assert_eq!(store.get(3).unwrap().unwrap().number, 3);
        assert!(matches!(
            store.record(&rev(4, &config(4))),
            Err(StoreError::ReadOnly(_))
        ));
        assert!(store.check_writable().is_err());
        assert_eq!(dir_names(dir), before);
        // A missing directory is not created.
        let missing = dir.join("missing");
        assert!(Store::open_read_only(&missing).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn check_writable_leaves_nothing_behind() {
        let tmp = TempDir::new("writable");
        let dir = tmp.path();
        let store = Store::open(dir, 10).unwrap();
        let before = dir_names(dir);
        store.check_writable().unwrap();
        assert_eq!(dir_names(dir), before);
    }

    #[test]
    fn stray_temp_files_are_removed() {
        let tmp = TempDir::new("temps");
        let dir = tmp.path();
        let mut store = Store::open(dir, 10).unwrap();
        record_n(&mut store, 2);
        drop(store);
        fs::write(dir.join(".0000000003.json.tmp-4242"), "{ \"schema_ver").unwrap();
        fs::write(dir.join(".0000000002.json.tmp-17"), "{}").unwrap();
        fs::write(dir.join(".next.tmp-99"), "1").unwrap();
        fs::write(dir.join(".hidden"), "not ours").unwrap();

        let mut store = Store::open(dir, 10).unwrap();
        assert!(temp_files(dir).is_empty(), "{:?}", dir_names(dir));
        assert!(dir.join(".hidden").exists());
        assert_eq!(numbers(&store), [1, 2]);
        assert_eq!(store.next_number(), 3);
        record_n(&mut store, 1);
        assert_eq!(numbers(&store), [1, 2, 3]);
        assert!(temp_files(dir).is_empty());
    }

    /// The state a crash left must open as exactly the old or the new state,
    /// with no temp file and nothing set aside.
    fn open_after_crash(dir: &Path, keep: usize) -> Store {
        let store = Store::open(dir, keep).unwrap();
        let names = dir_names(dir);
        assert!(temp_files(dir).is_empty(), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
        store
    }

    #[test]
    fn crash_at_each_step_leaves_old_or_new_state() {
        const STEPS: [Step; 5] = [
            Step::TempCreated,
            Step::HalfWritten,
            Step::Written,
            Step::Synced,
            Step::Renamed,
        ];
        // A config big enough that half of it is not valid JSON by luck.
        let big = config(5).repeat(200);

        // record: write 0 is the revision file, write 1 is `next`.
        for write in [0, 1] {
            for step in STEPS {
                let tmp = TempDir::new("crash-record");
                let dir = tmp.path();
                let mut store = Store::open(dir, 3).unwrap();
                record_n(&mut store, 4);
                let old = store.list().unwrap();
                assert_eq!(numbers(&store), [2, 3, 4]);

                let new = rev(5, &big);
                store.crash = Some((store.writes + write, step));
                let crashed = catch_unwind(AssertUnwindSafe(|| store.record(&new)));
                assert!(crashed.is_err(), "no crash at write {write} {step:?}");
                drop(store);
                if step != Step::Renamed {
                    assert_eq!(temp_files(dir).len(), 1, "{write} {step:?}");
                }

                let mut store = open_after_crash(dir, 3);
                let what = format!("crash at write {write} after {step:?}");
                if write == 0 && step != Step::Renamed {
                    assert_eq!(store.list().unwrap(), old, "{what}");
                    assert_eq!(store.next_number(), 5, "{what}");
                } else {
                    // New state; the crash came before pruning.
                    let mut expected = old.clone();
                    expected.push(new.clone());
                    assert_eq!(store.list().unwrap(), expected, "{what}");
                    assert_eq!(store.next_number(), 6, "{what}");
                }
                // The store carries on, and prunes what the crash left.
                let n = store.next_number();
                store.record(&rev(n, &config(n))).unwrap();
                assert_eq!(numbers(&store), [n - 2, n - 1, n], "{what}");
                assert_eq!(store.next_number(), n + 1);
            }
        }

        // update_outcome: one write, the revision file.
        for step in STEPS {
            let tmp = TempDir::new("crash-outcome");
            let dir = tmp.path();
            let mut store = Store::open(dir, 3).unwrap();
            let mut baking = rev(1, &big);
            baking.outcome = Outcome::Baking;
            store.record(&baking).unwrap();

            store.crash = Some((store.writes, step));
            let crashed =
                catch_unwind(AssertUnwindSafe(|| store.update_outcome(1, Outcome::Baked)));
            assert!(crashed.is_err());
            drop(store);

            let store = open_after_crash(dir, 3);
            let expected = if step == Step::Renamed {
                Outcome::Baked
            } else {
                Outcome::Baking
            };
            let got = store.get(1).unwrap().unwrap();
            assert_eq!(got.outcome, expected, "crash after {step:?}");
            assert_eq!(got.config_text, big);
            assert_eq!(store.next_number(), 2);
        }
    }

    const KILL_ENV: &str = "XLB_REVISIONS_TEST_KILL_DIR";
    const KILL_KEEP: usize = 4;

    /// In the child: record (baking) and bake revisions until killed.
    fn write_until_killed(dir: &Path) -> ! {
        let mut store = Store::open(dir, KILL_KEEP).unwrap();
        let started = Instant::now();
        // Big enough that some kills land mid-write.
        let padding = "# padding\n".repeat(6000);
        // A safety net in case the parent dies without killing us.
        while started.elapsed() < Duration::from_secs(20) {
            let n = store.next_number();
            let mut r = rev(n, &format!("{}{padding}", config(n)));
            r.outcome = Outcome::Baking;
            store.record(&r).unwrap();
            store.update_outcome(n, Outcome::Baked).unwrap();
        }
        std::process::exit(0);
    }

    fn highest_file_number(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| parse_file_name(e.ok()?.file_name().to_str()?))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }

    #[test]
    fn sigkill_mid_write_leaves_a_consistent_store() {
        if let Some(dir) = std::env::var_os(KILL_ENV) {
            write_until_killed(Path::new(&dir));
        }
        let tmp = TempDir::new("sigkill");
        let dir = tmp.path().join("revisions");
        let module = module_path!();
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        let test_name = format!("{module}::sigkill_mid_write_leaves_a_consistent_store");
        let mut last = 0;
        // Kills at different times; each child reopens what the previous one
        // left.
        for delay_ms in [200, 70, 130, 40, 170] {
            let child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", &test_name, "--nocapture", "--test-threads=1"])
                .env(KILL_ENV, &dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut child = ChildGuard(child);
            let deadline = Instant::now() + Duration::from_secs(3);
            while highest_file_number(&dir) <= last {
                assert!(
                    child.0.try_wait().unwrap().is_none(),
                    "the writer exited early"
                );
                assert!(Instant::now() < deadline, "the writer never wrote");
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(delay_ms));
            let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            let status = child.0.wait().unwrap();
            assert!(!status.success(), "{status:?}");

            let store = Store::open(&dir, KILL_KEEP).unwrap();
            let names = dir_names(&dir);
            assert!(temp_files(&dir).is_empty(), "{names:?}");
            assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
            let revs = store.list().unwrap(); // every file parses
            let nums: Vec<u64> = revs.iter().map(|r| r.number).collect();
            let newest = *nums.last().unwrap();
            assert!(newest > last, "{nums:?} after {last}");
            // Contiguous up to pruning: at most one extra (a kill between
            // recording and pruning).
            assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
            assert!(nums.len() <= KILL_KEEP + 1, "{nums:?}");
            assert_eq!(store.next_number(), newest + 1);
            for r in &revs {
                assert!(r.config_text.starts_with(&config(r.number)));
                assert_eq!(r.config_hash, text_hash(&r.config_text));
                assert!(matches!(r.outcome, Outcome::Baking | Outcome::Baked));
            }
            last = newest;
        }
    }

    /// Kills the child if an assertion fails before the test does.
    struct ChildGuard(std::process::Child);

    impl Drop for ChildGuard {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }

    #[test]
    fn permissions_are_private() {
        let tmp = TempDir::new("perms");
        let dir = tmp.path().join("xlb/eth0/revisions");
        let mut store = Store::open(&dir, 3).unwrap();
        for d in [tmp.path(), &tmp.path().join("xlb/eth0"), &dir] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
        let mut r = rev(1, "secret = true\n");
        r.outcome = Outcome::Baking;
        store.record(&r).unwrap();
        store.update_outcome(1, Outcome::Baked).unwrap();
        assert_eq!(mode(&dir.join(file_name(1))), 0o600);
        assert_eq!(mode(&dir.join(NEXT_FILE)), 0o600);
        // An existing directory is left as it is.
        fs::set_permissions(&dir, Permissions::from_mode(0o750)).unwrap();
        Store::open(&dir, 3).unwrap();
        assert_eq!(mode(&dir), 0o750);
    }

    #[test]
    fn errors_name_the_operation_and_the_path() {
        let e = StoreError::Io {
            op: "writing",
            path: PathBuf::from("/var/lib/xlb/eth0/revisions/0000000007.json"),
            error: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(
            e.to_string(),
            "writing /var/lib/xlb/eth0/revisions/0000000007.json: No space left on device"
        );

        let tmp = TempDir::new("errors");
        fs::create_dir_all(tmp.path()).unwrap();
        let file = tmp.path().join("a-file");
        fs::write(&file, "").unwrap();
        let e = Store::open(&file, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("opening {}: Not a directory", file.display())
        );
        let e = Store::open(&file.join("revisions"), 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "opening {}: Not a directory",
                file.join("revisions").display()
            )
        );

        // The directory vanishes under the store.
        let dir = tmp.path().join("revisions");
        let mut store = Store::open(&dir, 3).unwrap();
        fs::remove_dir(&dir).unwrap();
        let e = store.record(&rev(1, "a")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "writing {}: No such file or directory",
                dir.join("0000000001.json").display()
            )
        );
        assert_eq!(store.next_number(), 1);

        // A revision file that went bad after open.
        let mut store = Store::open(&dir, 3).unwrap();
        record_n(&mut store, 1);
        fs::write(dir.join(file_name(1)), "{").unwrap();
        let e = store.get(1).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("parsing {}: ", dir.join(file_name(1)).display())),
            "{e}"
        );
    }

    /// Format 1 (pretty JSON of the whole revision) reads as it is when
    /// opened read-only, and a writable open rewrites it in format 2 once:
    /// the same revision, a header line, a compressed body.
    #[test]
    fn format_1_files_read_and_migrate() {
        let tmp = TempDir::new("format-1");
        let dir = tmp.path();
        fs::create_dir_all(dir).unwrap();
        let big = config(3).repeat(500);
        let mut old = rev(1, &big);
        old.plan = Some(serde_json::json!({ "vips": [{ "name": "web" }] }).into());
        let v1 = serde_json::to_vec_pretty(&old).unwrap();
        fs::write(dir.join(file_name(1)), &v1).unwrap();

        let store = Store::open_read_only(dir).unwrap();
        assert_eq!(store.summaries(), vec![old.summary()]);
        assert_eq!(store.get(1).unwrap(), Some(old.clone()));
        assert_eq!(fs::read(dir.join(file_name(1))).unwrap(), v1);

        let mut store = Store::open(dir, 10).unwrap();
        let migrated = fs::read(dir.join(file_name(1))).unwrap();
        assert!(migrated.starts_with(b"{\"format\":3,"), "not migrated");
        assert!(
            migrated.len() * 10 < v1.len(),
            "{} vs {}",
            migrated.len(),
            v1.len()
        );
        assert_eq!(store.get(1).unwrap(), Some(old.clone()));
        store.update_outcome(1, Outcome::Baked).unwrap();
        let reopened = Store::open(dir, 10).unwrap();
        let got = reopened.get(1).unwrap().unwrap();
        assert_eq!((got.outcome, got.config_text), (Outcome::Baked, big));
        assert_eq!(reopened.summaries()[0].outcome, Outcome::Baked);
    }

    /// A format-2 file (the config text JSON-escaped in the body) reads as
    /// it is, is not rewritten, and keeps its format when its outcome
    /// changes.
    #[test]
    fn format_2_files_read_as_they_are() {
        let tmp = TempDir::new("format-2");
        let dir = tmp.path();
        fs::create_dir_all(dir).unwrap();
        let mut old = rev(1, &config(3).repeat(50));
        old.plan = Some(serde_json::json!({ "vips": [{ "name": "web" }] }).into());
        let json = serde_json::json!({ "config_text": old.config_text, "plan": old.plan });
        let body = zstd::bulk::compress(&serde_json::to_vec(&json).unwrap(), 1).unwrap();
        let v2 = header_then(FORMAT_2, old.summary(), &body).unwrap();
        assert!(v2.starts_with(b"{\"format\":2,"));
        fs::write(dir.join(file_name(1)), &v2).unwrap();

        let mut store = Store::open(dir, 10).unwrap();
        assert_eq!(store.summaries(), vec![old.summary()]);
        assert_eq!(store.get(1).unwrap(), Some(old.clone()));
        assert_eq!(fs::read(dir.join(file_name(1))).unwrap(), v2);
        store.update_outcome(1, Outcome::Baked).unwrap();
        let after = fs::read(dir.join(file_name(1))).unwrap();
        assert!(after.starts_with(b"{\"format\":2,"));
        let got = Store::open(dir, 10).unwrap().get(1).unwrap().unwrap();
        assert_eq!(
            (got.outcome, got.config_text),
            (Outcome::Baked, old.config_text)
        );
        // The next revision is written in format 3, its text raw.
        store.record(&rev(2, "interface = \"eth0\"\n")).unwrap();
        let v3 = fs::read(dir.join(file_name(2))).unwrap();
        assert!(v3.starts_with(b"{\"format\":3,"));
        let at = v3.iter().position(|&b| b == b'\n').unwrap() + 1;
        let body = zstd::decode_all(&v3[at..]).unwrap();
        assert!(body.ends_with(b"\ninterface = \"eth0\"\n"), "{body:?}");
        assert_eq!(
            store.get(2).unwrap(),
            Some(rev(2, "interface = \"eth0\"\n"))
        );
    }

    /// A body that is not its header's: cut short, it is set aside at open
    /// (the length is checked without reading it); changed in place, reading
    /// the revision says so.
    #[test]
    fn a_bad_body_is_found() {
        let tmp = TempDir::new("bad-body");
        let dir = tmp.path();
        let mut store = Store::open(dir, 10).unwrap();
        store.record(&rev(1, &config(1).repeat(50))).unwrap();
        store.record(&rev(2, &config(2).repeat(50))).unwrap();
        drop(store);
        let full = fs::read(dir.join(file_name(1))).unwrap();
        fs::write(dir.join(file_name(1)), &full[..full.len() - 3]).unwrap();
        let mut two = fs::read(dir.join(file_name(2))).unwrap();
        let last = two.len() - 1;
        two[last] ^= 0xff;
        fs::write(dir.join(file_name(2)), &two).unwrap();

        let store = Store::open(dir, 10).unwrap();
        assert!(dir.join("0000000001.json.corrupt").exists());
        assert_eq!(store.summaries().len(), 1);
        assert_eq!(store.summaries()[0].number, 2);
        let e = store.get(2).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("reading {}: ", dir.join(file_name(2)).display()))
                && e.contains("hash"),
            "{e}"
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(file_name(7), "0000000007.json");
        assert_eq!(parse_file_name("0000000007.json"), Some(7));
        assert_eq!(parse_file_name("12345678901.json"), Some(12_345_678_901));
        assert_eq!(parse_file_name("7.json"), None);
        assert_eq!(parse_file_name("00000000007.json"), None);
        assert_eq!(parse_file_name("000000000x.json"), None);
        assert_eq!(parse_file_name("0000000007.json.corrupt"), None);
        assert_eq!(parse_corrupt_name("0000000007.json.corrupt"), Some(7));
        assert_eq!(parse_corrupt_name("0000000007.json.corrupt.3"), Some(7));
        assert!(is_temp_name(".0000000007.json.tmp-123"));
        assert!(is_temp_name(".next.tmp-1"));
        assert!(!is_temp_name(".next.tmp-"));
        assert!(!is_temp_name("0000000007.json.tmp-1"));
        assert!(!is_temp_name(".hidden"));
    }
}
