//! `xlb version`: this binary's build and, when a daemon answers on the
//! control socket, the daemon's (which may differ after a package upgrade
//! until the daemon restarts). No daemon is not a failure: the line says why.

use std::path::Path;

use serde::Serialize;
use xlb_core::api::{BuildInfo, Request, Response};

use super::client::call;
use super::output::{Failure, Output, print_json};
use crate::build_info::build_info;

/// The JSON document (`-o json`).
#[derive(Debug, Serialize)]
pub struct VersionReport {
    pub schema_version: u32,
    /// This binary.
    pub client: BuildInfo,
    /// The running daemon's, when one answered.
    pub daemon: Option<BuildInfo>,
    /// Why there is no daemon's (unreachable, or too old to answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon_error: Option<String>,
}

/// Ask the daemon at `socket` which build it runs.
pub fn daemon_build(socket: &Path) -> Result<BuildInfo, String> {
    match call(socket, &Request::Version) {
        Ok(Response::Version(info)) => Ok(info),
        // A daemon from before `version` answers that it does not know
        // the request.
        Ok(Response::Error(e)) => Err(format!(
            "the daemon at {} did not answer a version request: {} (an xlb older than this one?)",
            socket.display(),
            e.message
        )),
        Ok(other) => Err(format!("unexpected response: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

pub fn report(socket: &Path) -> VersionReport {
    let (daemon, daemon_error) = match daemon_build(socket) {
        Ok(info) => (Some(info), None),
        Err(e) => (None, Some(e)),
    };
    VersionReport {
        schema_version: xlb_core::status::SCHEMA_VERSION,
        client: build_info(),
        daemon,
        daemon_error,
    }
}

fn row(who: &str, b: &BuildInfo) -> Vec<String> {
    vec![
        who.to_string(),
        b.version.clone(),
        b.git_commit.clone(),
        b.object_build_id.clone(),
        b.layout_version.to_string(),
    ]
}

/// The table: one row for this binary, one for the daemon (or why not).
pub fn render(report: &VersionReport) -> String {
    let mut rows = vec![
        ["", "VERSION", "COMMIT", "OBJECT BUILD ID", "LAYOUT"]
            .map(String::from)
            .to_vec(),
        row("client", &report.client),
    ];
    if let Some(d) = &report.daemon {
        rows.push(row("daemon", d));
    }
    let mut out = xlb_core::table::render(&rows);
    if let Some(e) = &report.daemon_error {
        out.push_str(&format!("daemon: not reached: {e}\n"));
    }
    out
}

pub fn version(socket: &Path, output: Output) -> Result<(), Failure> {
    let report = report(socket);
    match output {
        Output::Json => print_json(&report),
        Output::Table | Output::Wide => print!("{}", render(&report)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str) -> BuildInfo {
        BuildInfo {
            version: version.into(),
            git_commit: "0123abcd".into(),
            object_build_id: "00112233aabbccdd".into(),
            layout_version: 5,
        }
    }

    #[test]
    fn the_table_names_both_builds() {
        let out = render(&VersionReport {
            schema_version: 2,
            client: info("0.2.0"),
            daemon: Some(info("0.1.0")),
            daemon_error: None,
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[1].starts_with("client") && lines[1].contains("0.2.0"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("daemon") && lines[2].contains("0.1.0"),
            "{out}"
        );
        assert!(lines[2].contains("00112233aabbccdd"), "{out}");
    }

    #[test]
    fn no_daemon_says_why() {
        let report = report(Path::new("/nonexistent/xlb-version-test.sock"));
        assert!(report.daemon.is_none());
        let e = report.daemon_error.clone().unwrap();
        assert!(e.contains("/nonexistent/xlb-version-test.sock"), "{e}");
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["daemon"].is_null(), "{json}");
        assert_eq!(json["client"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(render(&report).contains("daemon: not reached"));
    }
}
