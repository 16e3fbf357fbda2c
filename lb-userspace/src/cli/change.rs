//! The commands that make or judge a change: `validate`, `plan`, `apply`
//! (of a file or a reviewed plan), `rollback`, and following a bake.

use std::path::{Path, PathBuf};

use xlb_core::api::Request;
use xlb_core::config;
use xlb_core::status::SCHEMA_VERSION;

use super::args::Cli;
use super::client::{Client, PlanAnswer};
use super::output::{Failure, Output, print_json};
use crate::user::current_user;

/// What `xlb plan --out` writes and `xlb apply PLANFILE` reads: the plan
/// and exactly the config text it was made for.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct PlanFile {
    pub schema_version: u32,
    pub plan: xlb_core::plan::Plan,
    pub config_file: String,
    pub config_text: String,
}

pub(super) fn read_text(file: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(file)
        .map_err(|e| Failure::bad_input(format!("{}: cannot read: {e}", file.display())))
}

/// `xlb validate FILE`: offline, nothing applied.
/// Print `config`'s warnings (`config::warnings`) on stderr; the warnings.
pub(super) fn warn(file: &str, config: &config::Config) -> Vec<config::warnings::Warning> {
    let warnings = config::warnings::warnings(config);
    print_warnings(file, &warnings);
    warnings
}

/// Print `warnings` of `file` on stderr.
fn print_warnings(file: &str, warnings: &[config::warnings::Warning]) {
    for w in warnings {
        eprintln!("xlb: warning: {file}: {w}");
    }
}

/// With no daemon to ask: a bad config file is bad input all the same.
fn check_offline(text: &str, file: &str) -> Result<(), Failure> {
    config::parse(text, file)
        .map(drop)
        .map_err(Failure::bad_input)
}

pub(super) fn validate(output: Output, file: &Path) -> Result<(), Failure> {
    let config = config::load(file).map_err(Failure::bad_input)?;
    let warnings = warn(&file.display().to_string(), &config);
    let backends: usize = config.vips.iter().map(|v| v.backends.len()).sum();
    if output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "file": file.display().to_string(),
            "valid": true,
            "vips": config.vips.len(),
            "backends": backends,
            "warnings": warnings,
        }));
    } else {
        println!(
            "{}: valid ({} VIPs, {} backends)",
            file.display(),
            config.vips.len(),
            backends
        );
    }
    Ok(())
}

/// What an offline plan compares with.
pub(super) enum Base {
    File(PathBuf),
    /// A recorded revision, from this state directory (or the default).
    Revision(u64, Option<PathBuf>),
}

pub(super) fn plan(
    cli: &Cli,
    file: &Path,
    base: Option<Base>,
    out: Option<&Path>,
    force: bool,
    detailed_exitcode: bool,
) -> Result<(), Failure> {
    let text = read_text(file)?;
    let name = file.display().to_string();
    // The table alone needs only the plan's text and verdict, which the
    // daemon renders (the whole document is 25 MB of JSON at the declared
    // limits).
    let as_text = cli.output != Output::Json && out.is_none();
    let answer = match base {
        // Offline, against a file or a recorded revision.
        Some(base) => {
            let candidate = config::parse(&text, &name).map_err(Failure::bad_input)?;
            warn(&name, &candidate);
            let (base_text, base_name) = match base {
                Base::File(path) => (read_text(&path)?, path.display().to_string()),
                Base::Revision(n, dir) => {
                    let dir = dir.unwrap_or_else(|| {
                        PathBuf::from("/var/lib/xlb").join(&candidate.interface)
                    });
                    let store = super::read::open_store(&dir)?;
                    let rev = store.get(n).map_err(Failure::bad_input)?.ok_or_else(|| {
                        Failure::bad_input(format!("no revision {n} in {}", dir.display()))
                    })?;
                    (rev.config_text, format!("revision {n}"))
                }
            };
            let base = config::parse(&base_text, &base_name).map_err(Failure::bad_input)?;
            let plan = xlb_core::plan::plan(&base, &candidate).map_err(Failure::bad_input)?;
            PlanAnswer::Document(Box::new(plan))
        }
        // The daemon validates the file (parsing only the VIPs that differ
        // from the live config) and says its warnings.
        None => {
            let offline = || check_offline(&text, &name);
            let answer = Client::new(&cli.socket).plan(
                name.clone(),
                text.clone(),
                current_user(),
                as_text,
                offline,
            )?;
            let warnings = match &answer {
                PlanAnswer::Document(plan) => &plan.warnings,
                PlanAnswer::Text(shown) => &shown.verdict.warnings,
            };
            print_warnings(&name, warnings);
            answer
        }
    };
    let verdict = match answer {
        PlanAnswer::Text(shown) => {
            print!("{}", shown.text);
            shown.verdict
        }
        PlanAnswer::Document(plan) => {
            match cli.output {
                Output::Json => print_json(&plan),
                _ => print!("{}", plan.render_table()),
            }
            let verdict = plan.verdict();
            if let Some(out) = out {
                let doc = PlanFile {
                    schema_version: xlb_core::plan::SCHEMA_VERSION,
                    plan: *plan,
                    config_file: name.clone(),
                    config_text: text,
                };
                let json = serde_json::to_string_pretty(&doc).expect("plans serialize");
                std::fs::write(out, json + "\n").map_err(|e| {
                    Failure::internal(format!("{}: cannot write: {e}", out.display()))
                })?;
                eprintln!("plan written to {}", out.display());
            }
            verdict
        }
    };
    if verdict.refused && !force {
        return Err(Failure::refused(
            "refused by the safety checks above (`xlb apply` refuses it too; `xlb apply --force` \
             applies it anyway, `xlb plan --force` only exits 0)",
        ));
    }
    // As the apply would: restart-only changes are bad input, forced or not.
    if verdict.needs_restart() {
        return Err(Failure::bad_input(format!(
            "{name}: an apply refuses this: {}",
            verdict
                .restart_only
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    if detailed_exitcode && verdict.changed {
        return Err(Failure {
            code: 3,
            message: "changes planned".into(),
        });
    }
    Ok(())
}

/// `xlb apply FILE|PLANFILE`: validated and applied by the daemon as a new
/// revision (it parses only the VIPs that differ from the live config: a
/// whole parse here would cost more than the apply of one VIP). With no
/// daemon, a bad file is still bad input, named as `xlb validate` names it.
pub(super) fn apply(
    cli: &Cli,
    file: &Path,
    message: Option<String>,
    force: bool,
    wait: bool,
) -> Result<(), Failure> {
    let raw = read_text(file)?;
    // A plan file applies exactly the config it was reviewed with, and
    // only onto the revision it was made against.
    let (name, text, expect_revision) = match serde_json::from_str::<PlanFile>(&raw) {
        Ok(p) => {
            let Some(base) = p.plan.base_revision else {
                return Err(Failure::bad_input(format!(
                    "{}: an offline plan (--base) cannot be applied; plan against the daemon",
                    file.display()
                )));
            };
            (p.config_file, p.config_text, Some(base))
        }
        Err(_) => (file.display().to_string(), raw, None),
    };
    let request = Request::Apply {
        file: name.clone(),
        text,
        user: current_user(),
        message,
        force,
        expect_revision,
    };
    let offline = || match &request {
        Request::Apply { text, .. } => check_offline(text, &name),
        _ => Ok(()),
    };
    let (revision, warnings) = Client::new(&cli.socket).applied_file(&request, offline)?;
    print_warnings(&name, &warnings);
    if cli.output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": SCHEMA_VERSION, "file": name, "revision": revision,
        }));
    } else {
        println!("applied {name} as revision {revision}");
    }
    if wait {
        wait_for_bake(&cli.socket, revision)
    } else {
        Ok(())
    }
}

/// `xlb rollback [--to-revision N]`.
pub(super) fn rollback(cli: &Cli, to: Option<u64>, message: Option<String>) -> Result<(), Failure> {
    let revision = Client::new(&cli.socket).applied(&Request::Rollback {
        to,
        user: current_user(),
        message,
    })?;
    if cli.output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": SCHEMA_VERSION, "revision": revision,
        }));
    } else {
        println!("rolled back as revision {revision}");
    }
    Ok(())
}

/// Follow the bake of `revision` until it ends: 0 baked, 1 rolled back.
pub(super) fn wait_for_bake(socket: &Path, revision: u64) -> Result<(), Failure> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    // Bounded: a bake window is minutes at most; give up after an hour.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        let s = Client::new(socket).status()?;
        let Some(bake) = s.bake.as_ref().filter(|b| b.revision == revision) else {
            eprintln!(
                "revision {revision}: not baking (its config is the one that ran before it, or the daemon runs with --bake-window 0s)"
            );
            return Ok(());
        };
        let line = xlb_core::status::bake_line(bake, s.generated_at_unix_seconds);
        match bake.state {
            xlb_core::bake::BakeState::Baking => {
                if tty {
                    let total = (bake.until_unix_seconds - bake.started_at_unix_seconds).max(1.0);
                    let done = ((s.generated_at_unix_seconds - bake.started_at_unix_seconds)
                        / total)
                        .clamp(0.0, 1.0);
                    let filled = (done * 30.0) as usize;
                    eprint!(
                        "\r[{}{}] {line}   ",
                        "#".repeat(filled),
                        " ".repeat(30 - filled)
                    );
                    let _ = std::io::stderr().flush();
                }
            }
            xlb_core::bake::BakeState::Baked => {
                if tty {
                    eprintln!();
                }
                println!("{line}");
                return Ok(());
            }
            xlb_core::bake::BakeState::RolledBack => {
                if tty {
                    eprintln!();
                }
                return Err(Failure::refused(line));
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(Failure::internal(
                "gave up waiting for the bake after an hour",
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
