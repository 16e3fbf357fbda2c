//! Who may talk to the control socket, and who may change things through it.
//!
//! Two layers:
//!
//! 1. The socket file. Root only by default: the socket 0600 in a 0700
//!    directory. With `xlb run --socket-group NAME`, 0660 `root:NAME`, and
//!    the directory must let that group in (the daemon makes it 0750
//!    `root:NAME` when it creates it; an existing one, such as systemd's
//!    `RuntimeDirectory=`, is checked and refused if the group cannot
//!    reach it). The modes are set before `listen()`, so there is no moment
//!    when the socket accepts a connection with looser ones.
//! 2. Every request. The daemon reads the peer's credentials from the kernel
//!    (SO_PEERCRED, SO_PEERGROUPS) and lets only root (uid 0), the daemon's
//!    own uid and members of the socket group change state (apply,
//!    rollback, repair, drain, weight... anything that is not a read); the
//!    others may read (status, history, show, plan). Should the file's
//!    permissions be loosened by hand, changes stay guarded.
//!
//! The audit log and the revisions record the verified user; when the
//! client claimed another name (`SUDO_USER`), both.
//!
//! The decisions are pure functions (`authorize`, `is_read`, `audit_user`,
//! `group_can_reach`), unit-tested without privileges.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context as _, bail};

/// The group given `--socket-group`, resolved once at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

impl SocketGroup {
    /// Look the group up by name (or a numeric gid).
    pub fn resolve(name: &str) -> Result<Self, String> {
        let found = match name.parse::<u32>() {
            Ok(gid) => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
            Err(_) => nix::unistd::Group::from_name(name),
        };
        match found {
            Ok(Some(g)) => Ok(Self {
                name: g.name,
                gid: g.gid.as_raw(),
            }),
            Ok(None) => Err(format!("--socket-group {name}: no such group")),
            Err(e) => Err(format!("--socket-group {name}: looking it up: {e}")),
        }
    }
}

/// Who is allowed what on this daemon's socket.
#[derive(Clone, Debug)]
pub struct Policy {
    pub group: Option<SocketGroup>,
    /// The daemon's own uid (root, unless a unit says otherwise).
    pub daemon_uid: u32,
}

impl Policy {
    pub fn new(group: Option<SocketGroup>) -> Self {
        Self {
            group,
            daemon_uid: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// The other end of a control connection, as the kernel saw it at connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (SO_PEERGROUPS).
    pub groups: Vec<u32>,
    pub pid: Option<i32>,
}

impl Peer {
    /// Read the peer's credentials from a connected socket.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            groups: peer_groups(stream.as_fd())?,
            pid: cred.pid(),
        })
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// SO_PEERGROUPS: the peer's supplementary groups at connect time.
fn peer_groups(fd: BorrowedFd<'_>) -> std::io::Result<Vec<u32>> {
    let size = size_of::<libc::gid_t>();
    let mut buf: Vec<libc::gid_t> = vec![0; 32];
    // Bounded: NGROUPS_MAX is 65536.
    for _ in 0..4 {
        let mut len = (buf.len() * size) as libc::socklen_t;
        // SAFETY: buf is valid for len bytes; the kernel writes at most len
        // bytes and stores the size it wrote (or needs) in len.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            buf.truncate(len as usize / size);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
        buf.resize((len as usize / size).max(buf.len() * 2), 0);
    }
    Err(std::io::Error::other("SO_PEERGROUPS: too many groups"))
}

/// True for requests that only read: anyone who can open the socket may
/// make them. Everything else changes state and is checked (a request kind
/// added later is a change until it is listed here).
pub fn is_read(op: &str) -> bool {
    matches!(
        op,
        "status" | "status_zstd" | "status_vip" | "history" | "show" | "plan" | "version"
    )
}

/// The requests every connecting user may make, for messages.
const READS: &str = "status, history, show, plan, version";

/// A user name for a uid ("uid N" when it has none).
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name)
}

/// Who may change state, in words.
fn allowed(policy: &Policy) -> String {
    let mut who = vec!["root (uid 0)".to_string()];
    if policy.daemon_uid != 0 {
        who.push(format!("the daemon's uid {}", policy.daemon_uid));
    }
    if let Some(g) = &policy.group {
        who.push(format!("members of group {} (gid {})", g.name, g.gid));
    }
    who.join(" and ")
}

/// May `peer` (named `name`) make the request `op`? The error says who it
/// is, what is allowed and to whom.
pub fn authorize(policy: &Policy, peer: &Peer, name: &str, op: &str) -> Result<(), String> {
    if is_read(op)
        || peer.uid == 0
        || peer.uid == policy.daemon_uid
        || policy.group.as_ref().is_some_and(|g| peer.in_group(g.gid))
    {
        return Ok(());
    }
    Err(format!(
        "{op} refused: uid {} ({name}) may not change this xlb daemon; changes are allowed \
         to {}; others may only read ({READS})",
        peer.uid,
        allowed(policy)
    ))
}

/// What the audit log and the revision record as the user: the verified
/// one, and the client's claim too when it differs (`sudo` sets SUDO_USER,
/// but any client can send any name).
pub fn audit_user(name: &str, uid: u32, claimed: &str) -> String {
    if claimed.is_empty() || claimed == name {
        name.to_string()
    } else {
        format!("{name} (uid {uid}, client says {claimed})")
    }
}

/// Replace a request's client-claimed `user` with `audit_user`'s record
/// (requests without a `user` field are left alone).
pub fn stamp_user(request: &mut serde_json::Value, name: &str, uid: u32) {
    if let Some(user) = request.get_mut("user") {
        let claimed = user.as_str().unwrap_or_default().to_string();
        *user = audit_user(name, uid, &claimed).into();
    }
}

/// Parse one request line from `peer` (and the raw text that followed it,
/// if its line announced one) and decide on it: the request, its `user`
/// replaced by the verified one, or the error to answer with (BadInput for
/// what does not parse, Forbidden for a change it may not make).
pub fn admit(
    policy: &Policy,
    peer: &Peer,
    line: &str,
    raw_text: Option<String>,
) -> Result<xlb_core::api::Request, xlb_core::api::ApiError> {
    use xlb_core::api::{ApiError, ErrorKind};
    let bad = |e: serde_json::Error| ApiError {
        kind: ErrorKind::BadInput,
        message: format!("bad request: {e}"),
    };
    let mut value: serde_json::Value = serde_json::from_str(line).map_err(bad)?;
    let op = value
        .get("op")
        .and_then(|o| o.as_str())
        .unwrap_or_default()
        .to_string();
    let name = user_name(peer.uid);
    if let Err(message) = authorize(policy, peer, &name, &op) {
        log::warn!("control socket: {message} (pid {:?})", peer.pid);
        return Err(ApiError {
            kind: ErrorKind::Forbidden,
            message,
        });
    }
    stamp_user(&mut value, &name, peer.uid);
    // The raw text's length was read with the line (daemon::read_request);
    // one that could not be read as a length is bad input.
    let announced = value
        .as_object_mut()
        .and_then(|fields| fields.remove(xlb_core::api::TEXT_BYTES));
    if announced.is_some() && raw_text.is_none() {
        return Err(ApiError {
            kind: ErrorKind::BadInput,
            message: format!(
                "bad request: `{}` must be the number of bytes of text after the line",
                xlb_core::api::TEXT_BYTES
            ),
        });
    }
    let request: xlb_core::api::Request = serde_json::from_value(value).map_err(bad)?;
    match raw_text {
        None => Ok(request),
        Some(text) => request.with_raw_text(text).map_err(|message| ApiError {
            kind: ErrorKind::BadInput,
            message,
        }),
    }
}

/// Can members of `gid` pass a directory with this owner group and mode?
pub fn group_can_reach(dir_gid: u32, mode: u32, gid: u32) -> bool {
    mode & 0o001 != 0 || (dir_gid == gid && mode & 0o010 != 0)
}

/// Before anything is loaded: can the daemon give its socket to the group,
/// and will the group reach it? (A refusal here is bad input, exit 2.)
pub fn preflight(socket: &Path, group: Option<&SocketGroup>) -> Result<(), String> {
    let Some(g) = group else {
        return Ok(());
    };
    let member = nix::unistd::getegid().as_raw() == g.gid
        || nix::unistd::getgroups()
            .map(|gs| gs.iter().any(|x| x.as_raw() == g.gid))
            .unwrap_or(false);
    let chown =
        caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_CHOWN).unwrap_or(false);
    if !member && !chown {
        return Err(format!(
            "--socket-group {}: this process is not in group {} and has no CAP_CHOWN, so it \
             cannot give the control socket to that group; run it with that group \
             (systemd: Group={} as in deploy/systemd/socket-group.conf)",
            g.name, g.name, g.name
        ));
    }
    if let Some(dir) = socket.parent()
        && let Ok(meta) = std::fs::metadata(dir)
        && !group_can_reach(meta.gid(), meta.mode(), g.gid)
    {
        return Err(format!(
            "--socket-group {}: members of {} cannot enter {} (mode {:o}, group {}); give \
             it to the group, mode 0750 (systemd: Group={} and RuntimeDirectoryMode=0750, \
             as in deploy/systemd/socket-group.conf)",
            g.name,
            g.name,
            dir.display(),
            meta.mode() & 0o7777,
            meta.gid(),
            g.name
        ));
    }
    Ok(())
}

/// Create the socket's directory when missing (0700, or 0750 for the
/// group), bind the socket, set its owner group and mode, then listen.
pub fn bind(
    socket: &Path,
    group: Option<&SocketGroup>,
) -> anyhow::Result<tokio::net::UnixListener> {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        if let Some(up) = dir.parent() {
            std::fs::create_dir_all(up).with_context(|| format!("creating {}", up.display()))?;
        }
        let mode = if group.is_some() { 0o750 } else { 0o700 };
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        if let Some(g) = group {
            std::os::unix::fs::chown(dir, None, Some(g.gid))
                .with_context(|| format!("giving {} to group {}", dir.display(), g.name))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    preflight(socket, group).map_err(anyhow::Error::msg)?;
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!(
                "another xlb daemon is already listening on {}",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing stale {}", socket.display()))?;
    }
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("creating the control socket")?;
    let addr = UnixAddr::new(socket).with_context(|| format!("{}", socket.display()))?;
    nix::sys::socket::bind(fd.as_raw_fd(), &addr)
        .with_context(|| format!("binding {}", socket.display()))?;
    // Connections are refused until listen(): set the modes first.
    let mode = match group {
        Some(g) => {
            std::os::unix::fs::chown(socket, None, Some(g.gid))
                .with_context(|| format!("giving {} to group {}", socket.display(), g.name))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
    nix::sys::socket::listen(&fd, Backlog::new(128).expect("valid backlog"))
        .with_context(|| format!("listening on {}", socket.display()))?;
    let listener = std::os::unix::net::UnixListener::from(fd);
    Ok(tokio::net::UnixListener::from_std(listener)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            groups: groups.to_vec(),
            pid: Some(1),
        }
    }

    fn policy(group: Option<u32>) -> Policy {
        Policy {
            group: group.map(|gid| SocketGroup {
                name: "xlbops".into(),
                gid,
            }),
            daemon_uid: 0,
        }
    }

    #[test]
    fn reads_are_open_changes_are_not() {
        for op in ["status", "history", "show", "plan", "version"] {
            assert!(authorize(&policy(None), &peer(1000, 1000, &[]), "u", op).is_ok());
        }
        for op in [
            "apply",
            "rollback",
            "repair",
            "drain",
            "weight",
            "something_new",
        ] {
            assert!(
                authorize(&policy(None), &peer(1000, 1000, &[]), "u", op).is_err(),
                "{op}"
            );
        }
    }

    #[test]
    fn root_the_daemon_uid_and_group_members_may_change() {
        let p = policy(Some(500));
        assert!(authorize(&p, &peer(0, 0, &[]), "root", "apply").is_ok());
        assert!(authorize(&p, &peer(1000, 500, &[]), "u", "apply").is_ok());
        assert!(authorize(&p, &peer(1000, 1000, &[7, 500]), "u", "rollback").is_ok());
        assert!(authorize(&p, &peer(1000, 1000, &[7]), "u", "repair").is_err());
        let own = Policy {
            daemon_uid: 999,
            ..policy(None)
        };
        assert!(authorize(&own, &peer(999, 999, &[]), "xlb", "apply").is_ok());
        assert!(authorize(&own, &peer(998, 999, &[]), "x", "apply").is_err());
    }

    #[test]
    fn the_refusal_names_the_uid_and_who_is_allowed() {
        let e = authorize(
            &policy(Some(500)),
            &peer(65534, 65534, &[]),
            "nobody",
            "apply",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "apply refused: uid 65534 (nobody) may not change this xlb daemon; changes are \
             allowed to root (uid 0) and members of group xlbops (gid 500); others may only \
             read (status, history, show, plan, version)"
        );
        let e = authorize(&policy(None), &peer(1000, 1000, &[]), "alice", "rollback").unwrap_err();
        assert!(e.contains("allowed to root (uid 0); others"), "{e}");
    }

    #[test]
    fn the_audit_keeps_the_verified_user_and_a_differing_claim() {
        assert_eq!(audit_user("root", 0, ""), "root");
        assert_eq!(audit_user("root", 0, "root"), "root");
        assert_eq!(
            audit_user("root", 0, "alice"),
            "root (uid 0, client says alice)"
        );
        let mut v = serde_json::json!({"op": "apply", "user": "mallory", "text": ""});
        stamp_user(&mut v, "nobody", 65534);
        assert_eq!(v["user"], "nobody (uid 65534, client says mallory)");
        let mut status = serde_json::json!({"op": "status"});
        stamp_user(&mut status, "nobody", 65534);
        assert_eq!(status, serde_json::json!({"op": "status"}));
    }

    #[test]
    fn admit_parses_checks_and_stamps() {
        use xlb_core::api::{ErrorKind, Request};
        let root = peer(0, 0, &[]);
        let nobody = peer(65534, 65534, &[]);
        let apply = r#"{"op":"apply","file":"x.toml","text":"","user":"mallory"}"#;
        match admit(&policy(None), &root, apply, None).unwrap() {
            Request::Apply { user, .. } => assert_eq!(user, "root (uid 0, client says mallory)"),
            other => panic!("{other:?}"),
        }
        let e = admit(&policy(None), &nobody, apply, None).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Forbidden), "{e:?}");
        assert!(e.message.starts_with("apply refused: uid 65534"), "{e:?}");
        assert!(matches!(
            admit(&policy(None), &nobody, r#"{"op":"status"}"#, None).unwrap(),
            Request::Status
        ));
        let e = admit(&policy(None), &root, "{not json", None).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::BadInput), "{e:?}");
        // An unknown op is a change until it is known: refused to others,
        // bad input for root.
        let odd = r#"{"op":"reboot"}"#;
        assert!(matches!(
            admit(&policy(None), &nobody, odd, None).unwrap_err().kind,
            ErrorKind::Forbidden
        ));
        assert!(matches!(
            admit(&policy(None), &root, odd, None).unwrap_err().kind,
            ErrorKind::BadInput
        ));
    }

    #[test]
    fn a_raw_text_is_the_requests_text() {
        use xlb_core::api::{ErrorKind, Request};
        let root = peer(0, 0, &[]);
        let framed = r#"{"op":"plan","file":"x.toml","user":"","text_bytes":5}"#;
        match admit(&policy(None), &root, framed, Some("a = 1".into())).unwrap() {
            Request::Plan { text, .. } => assert_eq!(text, "a = 1"),
            other => panic!("{other:?}"),
        }
        // A length that is no number was not read as one: no text came.
        let odd = r#"{"op":"plan","file":"x.toml","text":"","user":"","text_bytes":"5"}"#;
        let e = admit(&policy(None), &root, odd, None).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::BadInput), "{e:?}");
        assert!(e.message.contains("`text_bytes` must be"), "{e:?}");
        let e = admit(
            &policy(None),
            &root,
            r#"{"op":"history","text_bytes":1}"#,
            Some("x".into()),
        )
        .unwrap_err();
        assert!(e.message.contains("takes no text"), "{e:?}");
    }

    #[test]
    fn a_group_reaches_a_directory_it_owns_with_x_or_any_world_searchable_one() {
        assert!(group_can_reach(500, 0o750, 500));
        assert!(group_can_reach(500, 0o710, 500));
        assert!(!group_can_reach(0, 0o750, 500));
        assert!(!group_can_reach(500, 0o700, 500));
        assert!(group_can_reach(0, 0o755, 500));
        assert!(group_can_reach(0, 0o711, 500));
    }

    #[test]
    fn peer_credentials_come_from_the_kernel() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, _b) = tokio::net::UnixStream::pair().unwrap();
            let p = Peer::of(&a).unwrap();
            assert_eq!(p.uid, nix::unistd::geteuid().as_raw());
            assert_eq!(p.gid, nix::unistd::getegid().as_raw());
            assert_eq!(p.pid, Some(std::process::id() as i32));
            let mut mine: Vec<u32> = nix::unistd::getgroups()
                .unwrap()
                .iter()
                .map(|g| g.as_raw())
                .collect();
            let mut got = p.groups.clone();
            mine.sort();
            got.sort();
            assert_eq!(got, mine);
        });
    }

    #[test]
    fn the_socket_is_root_only_by_default() {
        let dir = std::env::temp_dir().join(format!("xlb-peer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let socket = dir.join("run").join("xlb.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let _l = bind(&socket, None).unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
            assert_eq!(mode(&socket), 0o600);
            assert_eq!(mode(socket.parent().unwrap()), 0o700);
            // A second daemon is refused while this one listens.
            let e = bind(&socket, None).unwrap_err().to_string();
            assert!(e.contains("already listening"), "{e}");
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
