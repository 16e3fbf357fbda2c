//! An edit in the daemon: the live revision's config text, edited
//! (`super::edit_config`), planned, checked and applied as a new revision of
//! kind `edit` through the same path as `xlb apply` (safety checks,
//! `--force`, bake, audit log), all under the controller's lock, so no other
//! change slips in between reading the live text and applying its edit.

use crate::daemon::controller::{Controller, Origin};
use xlb_core::api::{ApiError, ErrorKind, Response};
use xlb_core::api::{EditRequest, Edited};
use xlb_core::edit::{EditError, edit_config};
use xlb_core::plan::Plan;
use xlb_core::revision::Kind;

/// Edit, plan, check and apply; the response for the CLI.
pub fn respond(controller: &mut Controller, request: EditRequest) -> Response {
    let Some((base, text, file)) = controller
        .live_revision()
        .map(|(n, t, f)| (n, t.to_string(), f.to_string()))
    else {
        return bad_input(&EditError::NoConfig);
    };
    let edited = match edit_config(&text, base, &request.edit) {
        Ok(t) => t,
        Err(e) => return bad_input(&e),
    };
    let command = request.edit.command();
    let origin = Origin {
        user: request.user,
        message: request.message,
    };
    match controller.apply_checked_as(
        &edited,
        &file,
        &origin,
        request.force,
        Some(base),
        Kind::Edit {
            command: command.clone(),
        },
    ) {
        Ok((revision, plan)) => {
            log::info!("{command}: revision {revision} (edited revision {base})");
            Response::Edited(Box::new(Edited {
                revision,
                base_revision: base,
                command,
                config_file: file,
                plan,
            }))
        }
        Err(e) => {
            log::warn!("{command} refused: {e}");
            crate::daemon::refused_or_failed(&e)
        }
    }
}

fn bad_input(e: &EditError) -> Response {
    Response::Error(ApiError {
        kind: ErrorKind::BadInput,
        message: e.to_string(),
    })
}
