//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), pure and
//! deterministic. TODO(helper): implementation and tests.

/// True when `n` is prime (table sizes must be).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}
