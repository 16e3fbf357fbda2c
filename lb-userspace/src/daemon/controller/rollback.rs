//! The revision in force, and the one an automatic rollback returns to:
//! each with its text kept as the store recorded it (compressed) when it
//! did, not the text itself.

use std::borrow::Cow;

use xlb_core::change::LiveRevision;

use crate::store::{PackedText, StoreError};

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
    /// `text`, or `packed` when it holds that revision's text.
    pub fn of(number: u64, text: String, packed: Option<PackedText>) -> KeptText {
        match packed {
            Some(p) if p.number() == number => KeptText::Packed(p),
            _ => KeptText::Plain(text),
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
    /// The revision with its text (decompressed when kept compressed).
    pub fn revision(&self) -> Result<LiveRevision, StoreError> {
        Ok(LiveRevision {
            number: self.number,
            text: self.text.text()?.into_owned(),
            file: self.file.clone(),
        })
    }
}
