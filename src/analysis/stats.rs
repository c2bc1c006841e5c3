//! Small statistics shared by the analyses: nearest-rank percentiles, percentages and the
//! one-decimal rounding every published figure goes through.
//!
//! Hand-rolled on purpose: the percentile is the nearest rank at `(n - 1) · p` (rounded), the
//! definition every published figure (summary.json, the golden outputs, docs/benchmarks.md)
//! has used; a crate's interpolating quantile would change them all for no gain at these
//! sample counts.

/// The `p` quantile (0–1) of `sorted` (ascending) by nearest rank at `(n - 1) · p`; the
/// default value (0) for an empty slice.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// `x` rounded to one decimal; never `-0.0` (an empty float sum yields it).
pub fn round1(x: f64) -> f64 {
    // `+ 0.0` turns the -0.0 into 0.0.
    (x * 10.0).round() / 10.0 + 0.0
}

/// `100 · part / whole`, 0 when `whole` is 0.
pub fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// Sorts floats ascending (NaN last), for [`percentile`].
pub fn sort_f64(v: &mut [f64]) {
    v.sort_by(|a, b| a.total_cmp(b));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.95), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile::<f64>(&[], 0.5), 0.0);
        assert_eq!(percentile(&[7u32, 9], 0.5), 9, "(2 - 1) · 0.5 rounds up");
    }

    #[test]
    fn rounding_and_shares() {
        assert_eq!(round1(1.26), 1.3);
        assert!(round1(-0.0).is_sign_positive());
        assert_eq!(pct(1.0, 4.0), 25.0);
        assert_eq!(pct(1.0, 0.0), 0.0);
    }
}
