//! `xlb --help`: the subcommands in groups (clap lists them in one), the
//! exit codes, and the global flags shown only under the subcommands they
//! act on. `command()` is the whole grammar as clap's `Command`, for the
//! parser and for anything generated from it (man pages, completions).

use clap::CommandFactory;

use super::args::Cli;

/// The subcommands by what they do; every subcommand is in one group
/// (a unit test walks the tree).
pub const GROUPS: &[(&str, &[&str])] = &[
    (
        "Offline (a config file, no daemon)",
        &["validate", "plan", "simulate"],
    ),
    (
        "Change the running daemon (each a new revision)",
        &["apply", "rollback", "drain", "undrain", "weight", "repair"],
    ),
    (
        "Read the running daemon (history, show, diff also from --state-dir)",
        &["status", "top", "history", "show", "diff"],
    ),
    (
        "See packets in the running daemon (root or --socket-group)",
        &["trace", "capture"],
    ),
    (
        "Daemon and programs on this host",
        &["run", "detach", "decap", "version"],
    ),
    ("Fleet", &["fleet", "node"]),
];

/// The subcommands `--socket` acts on: those that ask the daemon (or, for
/// `run`, serve it; `detach` asks whether one serves the interface).
/// `plan` asks it unless given --base or --revision.
pub const SOCKET: &[&str] = &[
    "run", "detach", "plan", "apply", "rollback", "drain", "undrain", "weight", "repair", "status",
    "top", "history", "show", "diff", "node", "version", "trace", "capture",
];

/// The subcommands `-o/--output` does not act on: `run` serves, `top`
/// draws its own screen or logfmt lines.
pub const NO_OUTPUT: &[&str] = &["run", "top"];

/// Listed after the options of `xlb --help`.
const EXIT_CODES: &str = "Exit codes:
  0  done (plan: no safety check refuses the change)
  1  refused by a safety check, or the bake rolled the change back (--wait)
  2  bad input: the command line, a config file (file:line:col:), an unknown name
  3  changes planned (plan --detailed-exitcode, fleet plan)
  4  the daemon or the kernel failed (or cannot be reached)";

/// The grammar as clap's `Command`, with the grouped help.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command().after_help(EXIT_CODES);
    // A global flag reaches every subcommand that has no argument of its
    // id; where it does nothing, the subcommand gets its own hidden copy
    // (parsed all the same), so each subcommand's help lists what it takes.
    let hidden = |id: &str| {
        cmd.get_arguments()
            .find(|a| a.get_id() == id)
            .map(|a| a.clone().hide(true))
            .expect("a global flag of Cli")
    };
    let (socket, output) = (hidden("socket"), hidden("output"));
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subcommands {
        if !SOCKET.contains(&name.as_str()) {
            cmd = cmd.mut_subcommand(&name, |s| s.arg(socket.clone()));
        }
        if NO_OUTPUT.contains(&name.as_str()) {
            cmd = cmd.mut_subcommand(&name, |s| s.arg(output.clone()));
        }
    }
    let groups: String = GROUPS
        .iter()
        .map(|(title, names)| format!("{title}:\n{}\n\n", group(&cmd, names)))
        .collect();
    cmd.help_template(format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{groups}\
         Options:\n{{options}}{{after-help}}"
    ))
}

/// The subcommands `names` of `cmd` as clap lists subcommands (aligned,
/// wrapped to the terminal).
fn group(cmd: &clap::Command, names: &[&str]) -> String {
    let mut list = clap::Command::new("xlb")
        .disable_help_subcommand(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .help_template("{subcommands}");
    for name in names {
        if let Some(sub) = cmd.find_subcommand(name) {
            list = list.subcommand(sub.clone());
        }
    }
    list.render_help().to_string().trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand (clap's `help` aside) is in exactly one group, and
    /// every group names only subcommands that exist.
    #[test]
    fn every_subcommand_is_in_one_group() {
        let cmd = command();
        let names: Vec<&str> = cmd
            .get_subcommands()
            .map(clap::Command::get_name)
            .filter(|n| *n != "help")
            .collect();
        for name in &names {
            let n = GROUPS.iter().filter(|(_, g)| g.contains(name)).count();
            assert_eq!(n, 1, "subcommand {name} is in {n} help groups, not 1");
        }
        for (title, group) in GROUPS {
            for name in *group {
                assert!(
                    names.contains(name),
                    "group {title:?} names {name}: no such subcommand"
                );
            }
        }
        for name in SOCKET.iter().chain(NO_OUTPUT) {
            assert!(names.contains(name), "{name}: no such subcommand");
        }
        let help = cmd.clone().render_help().to_string();
        for (title, _) in GROUPS {
            assert!(help.contains(&format!("{title}:\n")), "{help}");
        }
        assert!(help.contains("Exit codes:\n  0  "), "{help}");
    }

    /// Each command and subcommand of the tree, with its path.
    fn walk<'a>(path: String, cmd: &'a clap::Command, out: &mut Vec<(String, &'a clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{path} {}", sub.get_name());
            walk(path.clone(), sub, out);
            out.push((path, sub));
        }
    }

    /// Every argument of every subcommand says what it is for.
    #[test]
    fn every_argument_is_described() {
        let cmd = command();
        let mut all = vec![("xlb".to_string(), &cmd)];
        walk("xlb".to_string(), &cmd, &mut all);
        let mut missing = Vec::new();
        for (path, c) in &all {
            for arg in c.get_arguments() {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            if path != "xlb" {
                assert!(c.get_about().is_some(), "{path}: no description");
            }
        }
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    /// `--socket` and `-o` show only under the subcommands they act on.
    #[test]
    fn global_flags_only_where_they_act() {
        let mut cmd = command();
        cmd.build();
        let mut all = Vec::new();
        walk("xlb".to_string(), &cmd, &mut all);
        for (path, c) in &all {
            let top = path.split(' ').nth(1).expect("a subcommand");
            let shown = |id: &str| {
                c.get_arguments()
                    .find(|a| a.get_id() == id)
                    .is_some_and(|a| !a.is_hide_set())
            };
            assert_eq!(shown("socket"), SOCKET.contains(&top), "{path}: --socket");
            assert_eq!(shown("output"), !NO_OUTPUT.contains(&top), "{path}: -o");
        }
        // The parser takes them all the same, before or after the subcommand.
        let m = command()
            .try_get_matches_from(["xlb", "validate", "x.toml", "--socket", "/s", "-o", "json"])
            .expect("globals parse under every subcommand");
        assert!(m.subcommand_matches("validate").is_some());
    }
}
