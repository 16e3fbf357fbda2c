//! An edit in the daemon: the live revision's config text, edited
//! (`xlb_core::edit::edit_config`), planned, checked and applied as a new revision of
//! kind `edit` through the same path as `xlb apply` (safety checks,
//! `--force`, bake, audit log), all under the controller's lock, so no other
//! change slips in between reading the live text and applying its edit.

use xlb_core::api::{ApiError, EditRequest, Edited, ErrorKind, Response};
use xlb_core::change::{ApplyOptions, Origin};
use xlb_core::edit::{EditError, edit_config};
use xlb_core::revision::Kind;

use crate::daemon::controller::{Applied, ApplyError, Controller};

/// Edit, plan, check and apply; the response for the CLI.
pub fn respond(controller: &mut Controller, request: EditRequest) -> Response {
    let live = match controller.live_revision() {
        Ok(Some(live)) => live,
        Ok(None) => return bad_input(&EditError::NoConfig),
        Err(e) => {
            return Response::Error(ApiError {
                kind: ErrorKind::Internal,
                message: format!("reading the live revision's text: {e}"),
            });
        }
    };
    let (base, file) = (live.number, live.file);
    let edited = match edit_config(&live.text, base, &request.edit) {
        Ok(t) => t,
        Err(e) => return bad_input(&e),
    };
    let command = request.edit.command();
    let origin = Origin {
        user: request.user,
        message: request.message,
    };
    let candidate = match controller.candidate(edited, file.clone(), origin) {
        Ok(c) => c,
        Err(e) => return ApplyError::from(e).response(),
    };
    let options = ApplyOptions::operator(
        Kind::Edit {
            command: command.clone(),
        },
        request.force,
        Some(base),
    );
    match controller.apply(candidate, options) {
        Ok(Applied {
            revision,
            plan: Some(plan),
        }) => {
            log::info!("{command}: revision {revision} (edited revision {base})");
            Response::Edited(Box::new(Edited {
                revision,
                base_revision: base,
                command,
                config_file: file,
                plan,
            }))
        }
        Ok(Applied { plan: None, .. }) => Response::Error(ApiError {
            kind: ErrorKind::Internal,
            message: format!("{command}: applied without a plan"),
        }),
        Err(e) => {
            log::warn!("{command} refused: {e}");
            e.response()
        }
    }
}

fn bad_input(e: &EditError) -> Response {
    Response::Error(ApiError {
        kind: ErrorKind::BadInput,
        message: e.to_string(),
    })
}
