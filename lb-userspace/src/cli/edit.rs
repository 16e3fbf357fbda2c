//! The CLI side of `xlb drain`, `xlb undrain` and `xlb weight`: send the
//! edit to the daemon, print the plan it applied and the new revision.
//! Exit codes as `xlb apply`: 2 for a bad edit (an unknown name, a weight
//! out of range, already draining), 1 when a safety check refuses it.

use xlb_core::api::{EditRequest, Edited};
use xlb_core::edit::Edit;

use super::args::{Cli, EditOptions};
use super::change::wait_for_bake;
use super::client::Client;
use super::output::{Failure, Output, print_json};
use crate::user::current_user;

/// Ask the daemon for `edit`; print what it applied.
pub fn run(cli: &Cli, edit: Edit, options: &EditOptions) -> Result<(), Failure> {
    let edited = Client::new(&cli.socket).edit(EditRequest {
        edit,
        user: current_user(),
        message: options.message.clone(),
        force: options.force,
    })?;
    print(cli.output, &edited);
    if options.wait {
        wait_for_bake(&cli.socket, edited.revision)
    } else {
        Ok(())
    }
}

fn print(output: Output, e: &Edited) {
    if output == Output::Json {
        print_json(&serde_json::json!({
            "schema_version": xlb_core::status::SCHEMA_VERSION,
            "command": e.command,
            "revision": e.revision,
            "base_revision": e.base_revision,
            "config_file": e.config_file,
            "plan": e.plan,
        }));
        return;
    }
    print!("{}", e.plan.render_table());
    // A plan with findings was applied only because of --force: say so
    // next to its "refused:" lines.
    let forced = match e.plan.lints.len() {
        0 => String::new(),
        n => format!(
            ", forced past {n} safety finding{}",
            if n == 1 { "" } else { "s" }
        ),
    };
    println!(
        "\n{}: applied as revision {} (edited revision {}){forced}",
        e.command, e.revision, e.base_revision
    );
    eprintln!(
        "note: {file} does not have this change: take it over (`xlb show {rev} --config-text > \
         {file}`), or the next apply of the file undoes it",
        file = e.config_file,
        rev = e.revision
    );
}
