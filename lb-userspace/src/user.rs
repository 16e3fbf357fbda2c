//! Who runs this process: recorded in revisions and the audit log.

/// Who runs this command: the user behind sudo, else the login name, else
/// the uid.
pub fn current_user() -> String {
    if let Ok(u) = std::env::var("SUDO_USER")
        && !u.is_empty()
    {
        return u;
    }
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name)
}
