//! Handing out kernel ids. Pure.
//!
//! Backend ids are handed out next-fit: the search for a free id starts one
//! past the last id handed out and wraps at the end of the id space, so an
//! id freed by an apply is not handed out again until the whole space has
//! been gone through. The connection table remembers flows by backend id
//! for as long as they live; a freed id reused at once (lowest free first)
//! would send a removed backend's remembered flows to whichever backend
//! took the id next. Retiring the freed id's kernel entry (the writer does)
//! makes the program hash such flows again; next-fit keeps the id retired
//! for as long as it can. A removed backend's id is not free while it is
//! retained (`retain`): it is in the used set the search skips.

use std::collections::BTreeSet;

use super::error::StateError;

/// Ids handed out by one call of `next_fit`, and where the next search
/// starts.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Taken {
    pub ids: Vec<u32>,
    /// One past the last id taken (wrapped), or the start when none was.
    pub next: u32,
}

/// `n` ids below `max` that are not in `used`, searching upward from
/// `start` and wrapping at `max`. `kind` names the ids in the error.
pub(super) fn next_fit(
    used: &BTreeSet<u32>,
    start: u32,
    max: u32,
    n: usize,
    kind: &'static str,
) -> Result<Taken, StateError> {
    let start = start % max;
    let ids: Vec<u32> = (start..max)
        .chain(0..start)
        .filter(|id| !used.contains(id))
        .take(n)
        .collect();
    if ids.len() < n {
        return Err(StateError::OutOfIds { kind, max });
    }
    let next = ids.last().map_or(start, |&last| (last + 1) % max);
    Ok(Taken { ids, next })
}

/// The lowest `n` ids below `max` that are not in `used` (VIP ids: a VIP's
/// id names its table and counters, never a flow's remembered backend).
pub(super) fn lowest_free(
    used: &BTreeSet<u32>,
    max: u32,
    n: usize,
    kind: &'static str,
) -> Result<Vec<u32>, StateError> {
    let free: Vec<u32> = (0..max).filter(|id| !used.contains(id)).take(n).collect();
    if free.len() < n {
        return Err(StateError::OutOfIds { kind, max });
    }
    Ok(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u32]) -> BTreeSet<u32> {
        ids.iter().copied().collect()
    }

    #[test]
    fn next_fit_starts_at_the_cursor_and_skips_used_ids() {
        let t = next_fit(&set(&[5, 7]), 4, 10, 3, "backend").unwrap();
        assert_eq!(
            t,
            Taken {
                ids: vec![4, 6, 8],
                next: 9
            }
        );
    }

    #[test]
    fn next_fit_wraps_at_the_end_of_the_space() {
        let t = next_fit(&set(&[0]), 8, 10, 4, "backend").unwrap();
        assert_eq!(t.ids, vec![8, 9, 1, 2]);
        assert_eq!(t.next, 3);
        // The last id taken is the last of the space: the cursor wraps.
        let t = next_fit(&set(&[]), 9, 10, 1, "backend").unwrap();
        assert_eq!(
            t,
            Taken {
                ids: vec![9],
                next: 0
            }
        );
    }

    #[test]
    fn next_fit_of_nothing_keeps_the_cursor() {
        let t = next_fit(&set(&[]), 6, 10, 0, "backend").unwrap();
        assert_eq!(
            t,
            Taken {
                ids: vec![],
                next: 6
            }
        );
    }

    #[test]
    fn next_fit_fails_when_the_space_is_full() {
        let used = set(&(0..10).filter(|&i| i != 3).collect::<Vec<_>>());
        assert_eq!(next_fit(&used, 7, 10, 1, "backend").unwrap().ids, vec![3]);
        assert_eq!(
            next_fit(&used, 7, 10, 2, "backend"),
            Err(StateError::OutOfIds {
                kind: "backend",
                max: 10
            })
        );
    }

    #[test]
    fn lowest_free_fills_holes_first() {
        assert_eq!(
            lowest_free(&set(&[0, 2]), 10, 3, "VIP").unwrap(),
            vec![1, 3, 4]
        );
        assert!(lowest_free(&set(&[0, 1]), 3, 2, "VIP").is_err());
    }
}
