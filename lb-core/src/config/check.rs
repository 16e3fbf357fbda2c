//! The checking primitives every other config file uses: a value with its
//! place in the file (`Sp`), the problems found so far (`Issues`), field
//! paths, durations, byte offsets to lines, and `Checker`, the context the
//! rules run in, with the helpers each rule module needs. Nothing here knows
//! a config key or a config type: this file is at the bottom of `config`.

use std::ops::Range;
use std::time::Duration;

/// A value and where it is in the file (byte range).
#[derive(Clone, Debug)]
pub(super) struct Sp<T> {
    pub value: T,
    pub span: Range<usize>,
}

/// A problem, located by byte offset; `validate` turns the offset into a line
/// and a column.
#[derive(Clone, Debug)]
pub(super) struct Issue {
    pub offset: usize,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub(super) struct Issues(pub Vec<Issue>);

impl Issues {
    pub fn push(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.0.push(Issue {
            offset: span.start,
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `vip[0]` + `port` → `vip[0].port`; a key that is not bare is quoted.
pub(super) fn field_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// A field's path (`field_path`) made into text only when a problem names
/// it: the 64,000 backends of a valid config at the declared limits name
/// none, and formatting each of their fields' paths was a tenth of a parse.
#[derive(Clone, Copy)]
pub(super) struct FieldPath<'a> {
    parent: &'a str,
    key: &'a str,
}

/// `field_path`, lazily.
pub(super) fn field_at<'a>(parent: &'a str, key: &'a str) -> FieldPath<'a> {
    FieldPath { parent, key }
}

impl std::fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&field_path(self.parent, self.key))
    }
}

/// Byte offset → 1-based line and column (in characters).
pub(super) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset of each line's start.
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }

    pub(super) fn line(&self, offset: usize) -> usize {
        self.position(offset).0
    }
}

/// The problems of one file, and where its offsets are: what every rule
/// takes. Its shared helpers are here. The rules take it: functions of
/// `forwarding` and `health`, and `validate`'s private methods (validate is
/// the top file: nothing below it calls them).
pub(super) struct Checker<'a, 't> {
    pub(super) issues: &'a mut Issues,
    pub(super) lines: &'a LineIndex<'t>,
}

impl Checker<'_, '_> {
    pub(super) fn problem(
        &mut self,
        span: &Range<usize>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.issues.push(span, field, reason);
    }

    /// An integer in `min..=max`; `note` follows the range in the message.
    pub(super) fn in_range(
        &mut self,
        v: &Sp<i128>,
        field: impl std::fmt::Display,
        min: i128,
        max: i128,
        note: &str,
    ) -> Option<i128> {
        if (min..=max).contains(&v.value) {
            Some(v.value)
        } else {
            self.problem(
                &v.span,
                field.to_string(),
                format!("must be between {min} and {max}, got {}{note}", v.value),
            );
            None
        }
    }

    /// A duration key, in seconds: `base` if not given, else the value if
    /// it parses and is within `rule`; `builtin` is the default it names.
    pub(super) fn period(
        &mut self,
        v: Option<&Sp<String>>,
        path: &str,
        rule: &DurationRule,
        base: f64,
        builtin: f64,
    ) -> Option<f64> {
        let Some(v) = v else { return Some(base) };
        let field = field_path(path, rule.key);
        match parse_duration(&v.value) {
            Ok(d) if (rule.min..=rule.max).contains(&d) => Some(d.as_secs_f64()),
            Ok(_) => {
                self.problem(
                    &v.span,
                    field,
                    format!(
                        "must be between {} and {} (default {}), got {:?}",
                        format_duration(rule.min),
                        format_duration(rule.max),
                        format_duration(Duration::from_secs_f64(builtin)),
                        v.value
                    ),
                );
                None
            }
            Err(reason) => {
                self.problem(&v.span, field, reason);
                None
            }
        }
    }
}

/// The bounds (inclusive) of a duration key.
pub(super) struct DurationRule {
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
}

/// A duration as the config writes it: a number and a unit, `"10s"`,
/// `"500ms"`, `"1.5m"`, `"1h"` (humantime's syntax, as on the command line).
/// The error says what to write.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: &str = "ms, s, m or h";
    let trimmed = text.trim();
    humantime::parse_duration(trimmed).map_err(|e| match e {
        humantime::DurationError::Empty => {
            format!("must not be empty: write a duration like \"10s\" ({UNITS})")
        }
        humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
            format!("{text:?} has no unit: write e.g. \"{trimmed}s\" for seconds (units: {UNITS})")
        }
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("{text:?} has an unknown unit {unit:?}: use {UNITS}, like \"10s\" or \"500ms\"")
        }
        _ => format!(
            "{text:?} is not a duration: write a number and a unit ({UNITS}), like \"10s\", \
             \"500ms\" or \"1.5m\""
        ),
    })
}

/// `0s`, `2s`, `10m`, `1h`, `100ms`: the bounds in error messages.
pub(super) fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
