//! The revision in force, and the one an automatic rollback returns to:
//! each with its text kept as the store recorded it (compressed) when it
//! did, not the text itself.

use std::borrow::Cow;

use xlb_core::change::LiveRevision;

use crate::store::{PackedText, Store, StoreError};

/// A revision the daemon keeps: the live one, or the one before a baking
/// revision (the target of its automatic rollback).
#[derive(Clone, Debug)]
pub struct Kept {
    pub number: u64,
    pub file: String,
    pub text: KeptText,
}

/// A kept revision's config text: as the store recorded it (compressed: at
/// 1,000 VIPs x 64 backends 8 KB, not 5.8 MB) when the store has it, else
/// as it is (a daemon without revisions: tests and benches).
#[derive(Clone, Debug)]
pub enum KeptText {
    Plain(String),
    Packed(PackedText),
}

impl KeptText {
    /// `packed` when there is one, else `text()`.
    pub fn of(packed: Option<PackedText>, text: impl FnOnce() -> String) -> KeptText {
        match packed {
            Some(p) => KeptText::Packed(p),
            None => KeptText::Plain(text()),
        }
    }

    pub fn text(&self) -> Result<Cow<'_, str>, StoreError> {
        match self {
            KeptText::Plain(text) => Ok(Cow::Borrowed(text)),
            KeptText::Packed(packed) => packed.text().map(Cow::Owned),
        }
    }
}

impl Kept {
    /// Revision `number` of `file`, its text as `store` recorded it when
    /// it can be read from there, else `text()`.
    pub fn recorded(
        store: Option<&Store>,
        number: u64,
        file: String,
        text: impl FnOnce() -> String,
    ) -> Kept {
        let packed = store.and_then(|s| s.packed(number).ok().flatten());
        Kept {
            number,
            file,
            text: KeptText::of(packed, text),
        }
    }

    /// The revision with its text (decompressed when kept compressed).
    pub fn revision(&self) -> Result<LiveRevision, StoreError> {
        Ok(LiveRevision {
            number: self.number,
            text: self.text.text()?.into_owned(),
            file: self.file.clone(),
        })
    }
}
