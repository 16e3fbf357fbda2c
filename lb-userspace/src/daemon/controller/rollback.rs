//! What an automatic rollback returns to: the revision in force before a
//! baking one, its text kept as the store recorded it.

use std::borrow::Cow;

use xlb_core::change::LiveRevision;

use crate::store::{PackedText, StoreError};

/// The revision an automatic rollback returns to.
#[derive(Clone, Debug)]
pub struct RollbackTarget {
    pub number: u64,
    pub file: String,
    pub text: KeptText,
}

/// A rollback target's config text: as the store recorded it (compressed:
/// at 1,000 VIPs x 64 backends 8 KB, not 5.8 MB held while a revision
/// bakes) when the store has it, else as it is.
#[derive(Clone, Debug)]
pub enum KeptText {
    Plain(String),
    Packed(PackedText),
}

impl KeptText {
    pub fn text(&self) -> Result<Cow<'_, str>, StoreError> {
        match self {
            KeptText::Plain(text) => Ok(Cow::Borrowed(text)),
            KeptText::Packed(packed) => packed.text().map(Cow::Owned),
        }
    }
}

impl RollbackTarget {
    /// `live`, the revision in force until now, with `packed`, its text as
    /// recorded (kept instead of the text when it is `live`'s).
    pub fn of(live: LiveRevision, packed: Option<PackedText>) -> Self {
        let text = match packed {
            Some(p) if p.number() == live.number => KeptText::Packed(p),
            _ => KeptText::Plain(live.text),
        };
        RollbackTarget {
            number: live.number,
            file: live.file,
            text,
        }
    }
}
