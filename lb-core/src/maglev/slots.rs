//! A Maglev table's slots, each the index of its backend in the table's
//! names: one byte a slot when the table has at most 256 backends (the
//! usual case), two beyond. A daemon holds one table per VIP (1,000 tables
//! of 16,381 slots: 16 MB in one byte, 33 MB in two), so the width follows
//! the number of backends, and only that: two tables with the same indices
//! are equal whatever their widths.
//!
//! Hot loops (a plan's slot-by-slot comparison, the kernel table read from
//! the state) match on the width once ([`Slots::view`]) and run a loop over
//! a plain slice; [`SlotIndex`] lets one generic function serve both.

use std::fmt;
use std::sync::Arc;

/// The most backends a table holds in one byte a slot.
pub const NARROW_BACKENDS: usize = 1 << 8;

/// An index stored in a slot: `u8` or `u16`.
pub trait SlotIndex: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// The index as a `usize`, to index the names (or ids) with.
    fn index(self) -> usize;
    /// The index as the callers see it.
    fn wide(self) -> u16;
}

impl SlotIndex for u8 {
    #[inline]
    fn index(self) -> usize {
        usize::from(self)
    }
    #[inline]
    fn wide(self) -> u16 {
        u16::from(self)
    }
}

impl SlotIndex for u16 {
    #[inline]
    fn index(self) -> usize {
        usize::from(self)
    }
    #[inline]
    fn wide(self) -> u16 {
        self
    }
}

/// The slots of a table (see the module's doc). Empty for a table without
/// backends.
#[derive(Clone)]
pub struct Slots(Inner);

#[derive(Clone)]
enum Inner {
    /// At most [`NARROW_BACKENDS`] backends.
    Narrow(Arc<[u8]>),
    /// More.
    Wide(Arc<[u16]>),
}

/// The slots as a slice of their own width: match once, loop on the slice.
#[derive(Clone, Copy, Debug)]
pub enum SlotsView<'a> {
    Narrow(&'a [u8]),
    Wide(&'a [u16]),
}

impl Slots {
    /// No slots (a table without backends).
    pub fn empty() -> Slots {
        Slots(Inner::Narrow(Arc::new([])))
    }

    /// The slots of a table of `backends` backends, from each slot's index
    /// (each below `backends`, which is at most `MAX_TABLE_BACKENDS`): one
    /// byte a slot when `backends` allows it.
    pub fn from_indices(indices: &[u16], backends: usize) -> Slots {
        debug_assert!(indices.iter().all(|&i| usize::from(i) < backends.max(1)));
        if backends <= NARROW_BACKENDS {
            // Each index < backends <= 256.
            Slots(Inner::Narrow(indices.iter().map(|&i| i as u8).collect()))
        } else {
            Slots(Inner::Wide(indices.into()))
        }
    }

    /// Slots filled in place by the builder, already of their width.
    pub(super) fn narrow(slots: Arc<[u8]>) -> Slots {
        Slots(Inner::Narrow(slots))
    }

    pub(super) fn wide(slots: Arc<[u16]>) -> Slots {
        Slots(Inner::Wide(slots))
    }

    /// The slots as a slice of their width.
    #[inline]
    pub fn view(&self) -> SlotsView<'_> {
        match &self.0 {
            Inner::Narrow(s) => SlotsView::Narrow(s),
            Inner::Wide(s) => SlotsView::Wide(s),
        }
    }

    /// Number of slots (the table size; 0 without backends).
    #[inline]
    pub fn len(&self) -> usize {
        match &self.0 {
            Inner::Narrow(s) => s.len(),
            Inner::Wide(s) => s.len(),
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of the backend owning slot `i`, if the slot exists.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u16> {
        match &self.0 {
            Inner::Narrow(s) => s.get(i).map(|&x| u16::from(x)),
            Inner::Wide(s) => s.get(i).copied(),
        }
    }

    /// The indices in slot order.
    pub fn iter(&self) -> Iter<'_> {
        match &self.0 {
            Inner::Narrow(s) => Iter::Narrow(s.iter()),
            Inner::Wide(s) => Iter::Wide(s.iter()),
        }
    }

    /// The indices as `u16`s, in a new vector.
    pub fn to_vec(&self) -> Vec<u16> {
        self.iter().collect()
    }

    /// Bytes the slots take on the heap.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Inner::Narrow(s) => s.len(),
            Inner::Wide(s) => 2 * s.len(),
        }
    }
}

/// The indices of [`Slots`] as `u16`s.
#[derive(Clone, Debug)]
pub enum Iter<'a> {
    Narrow(std::slice::Iter<'a, u8>),
    Wide(std::slice::Iter<'a, u16>),
}

impl Iterator for Iter<'_> {
    type Item = u16;

    #[inline]
    fn next(&mut self) -> Option<u16> {
        match self {
            Iter::Narrow(s) => s.next().map(|&x| u16::from(x)),
            Iter::Wide(s) => s.next().copied(),
        }
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Narrow(s) => s.size_hint(),
            Iter::Wide(s) => s.size_hint(),
        }
    }

    #[inline]
    fn nth(&mut self, n: usize) -> Option<u16> {
        match self {
            Iter::Narrow(s) => s.nth(n).map(|&x| u16::from(x)),
            Iter::Wide(s) => s.nth(n).copied(),
        }
    }

    /// One match, then a loop over the slice (`for_each`, `sum`, `count`,
    /// `collect` into most collections go through here).
    #[inline]
    fn fold<B, F: FnMut(B, u16) -> B>(self, init: B, mut f: F) -> B {
        match self {
            Iter::Narrow(s) => s.fold(init, |acc, &x| f(acc, u16::from(x))),
            Iter::Wide(s) => s.fold(init, |acc, &x| f(acc, x)),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl std::iter::FusedIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Slots {
    type Item = u16;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Whether `a` and `b` hold the same indices.
fn same<A: SlotIndex, B: SlotIndex>(a: &[A], b: &[B]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| x.wide() == y.wide())
}

/// By value, whatever the widths.
impl PartialEq for Slots {
    fn eq(&self, other: &Slots) -> bool {
        match (self.view(), other.view()) {
            (SlotsView::Narrow(a), SlotsView::Narrow(b)) => a == b,
            (SlotsView::Wide(a), SlotsView::Wide(b)) => a == b,
            (SlotsView::Narrow(a), SlotsView::Wide(b)) => same(a, b),
            (SlotsView::Wide(a), SlotsView::Narrow(b)) => same(a, b),
        }
    }
}

impl Eq for Slots {}

impl PartialEq<[u16]> for Slots {
    fn eq(&self, other: &[u16]) -> bool {
        match self.view() {
            SlotsView::Narrow(a) => same(a, other),
            SlotsView::Wide(a) => a == other,
        }
    }
}

impl PartialEq<Vec<u16>> for Slots {
    fn eq(&self, other: &Vec<u16>) -> bool {
        *self == **other
    }
}

impl<const N: usize> PartialEq<[u16; N]> for Slots {
    fn eq(&self, other: &[u16; N]) -> bool {
        *self == other[..]
    }
}

/// As a list of indices, whatever the width.
impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_width_follows_the_number_of_backends() {
        let indices: Vec<u16> = (0..1000).map(|i| (i * 7 % 256) as u16).collect();
        let narrow = Slots::from_indices(&indices, 256);
        let wide = Slots::from_indices(&indices, 257);
        assert!(matches!(narrow.view(), SlotsView::Narrow(_)));
        assert!(matches!(wide.view(), SlotsView::Wide(_)));
        assert_eq!((narrow.heap_bytes(), wide.heap_bytes()), (1000, 2000));
        for s in [&narrow, &wide] {
            assert_eq!(s.len(), 1000);
            assert!(!s.is_empty());
            assert_eq!(*s, indices);
            assert_eq!(s.to_vec(), indices);
            assert_eq!(s.iter().len(), 1000);
            assert_eq!(s.iter().nth(999), Some(indices[999]));
            assert_eq!(s.iter().map(u64::from).sum::<u64>(), {
                indices.iter().map(|&i| u64::from(i)).sum::<u64>()
            });
            for (i, &x) in indices.iter().enumerate() {
                assert_eq!(s.get(i), Some(x));
            }
            assert_eq!(s.get(1000), None);
        }
        // Equal by value across widths, both ways; unequal when one differs.
        assert_eq!(narrow, wide);
        assert_eq!(wide, narrow);
        let mut other = indices.clone();
        other[500] = 255 - other[500];
        assert_ne!(narrow, Slots::from_indices(&other, 257));
        assert_ne!(Slots::from_indices(&other, 256), wide);
        assert_ne!(narrow, Slots::from_indices(&indices[1..], 256));
        assert_eq!(format!("{narrow:?}"), format!("{indices:?}"));
        assert_eq!(format!("{wide:?}"), format!("{indices:?}"));
    }

    #[test]
    fn empty_slots() {
        let e = Slots::empty();
        assert!(e.is_empty() && e.iter().next().is_none());
        assert_eq!(e, Slots::from_indices(&[], 0));
        assert_eq!(e, Slots::from_indices(&[], 300));
        assert_eq!(e, []);
    }
}
