//! Internet checksums (RFC 1071) in the "native view": 16-bit words are read
//! from the wire bytes in the host's order and the result written back the
//! same way. A ones-complement sum commutes with byte swapping, so this gives
//! the right bytes on the wire without swapping every word.

/// Fold a running sum to 16 bits with end-around carry.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// A word read from wire bytes, as a term of a sum: its two 16-bit halves
/// need not be split, `fold` adds them (see `sum_bytes`).
#[inline(always)]
pub fn word(w: u32) -> u64 {
    w as u64
}

/// A 16-bit value as it sits on the wire (big-endian), in the native view.
#[inline(always)]
pub fn be16(v: u16) -> u64 {
    u16::from_ne_bytes(v.to_be_bytes()) as u64
}

/// The sum of `bytes` (an even count), to be folded by `fold`/`finish`.
/// Read as 32-bit words, half the loads and adds of 16-bit ones: a word is
/// `lo + hi * 2^16`, and 2^16 = 1 in ones'-complement arithmetic, so the
/// folded sum is the same. (One load each: the balancer is built with
/// `allows-misaligned-mem-access`.)
#[inline(always)]
pub fn sum_bytes<const N: usize>(bytes: &[u8; N]) -> u64 {
    let p = bytes.as_ptr();
    let mut sum = 0u64;
    let mut i = 0;
    while i + 4 <= N {
        // SAFETY: bytes i..i+4 lie inside the array (i + 4 <= N); an
        // unaligned read.
        sum += unsafe { p.add(i).cast::<u32>().read_unaligned() } as u64;
        i += 4;
    }
    if i + 2 <= N {
        sum += u16::from_ne_bytes([bytes[i], bytes[i + 1]]) as u64;
    }
    sum
}

/// The checksum field for data summing to `sum`.
#[inline(always)]
pub fn finish(sum: u64) -> [u8; 2] {
    (!fold(sum)).to_ne_bytes()
}

/// RFC 1624 incremental update of checksum field `csum` when a 16-bit word
/// changes from `old` to `new` (all three as wire bytes).
#[inline(always)]
pub fn replace(csum: [u8; 2], old: [u8; 2], new: [u8; 2]) -> [u8; 2] {
    let sum = (!u16::from_ne_bytes(csum)) as u64
        + (!u16::from_ne_bytes(old)) as u64
        + u16::from_ne_bytes(new) as u64;
    finish(sum)
}
