//! Why no desired state can be built: a VIP's Maglev table failed, or ids
//! ran out. Its own file, below `ids` and the builder in `state`, which both
//! return it (re-exported as `state::StateError`).

use crate::maglev;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("vip[{vip}]: Maglev table: {source}")]
    Maglev {
        vip: String,
        #[source]
        source: maglev::MaglevError,
    },
    #[error("out of {kind} ids (at most {max}, counting ids the previous config still holds)")]
    OutOfIds { kind: &'static str, max: u32 },
}
