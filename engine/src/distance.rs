//! Distances between two embeddings, behind pg_bge's operators <=> (cosine distance), <#>
//! (negative inner product) and <-> (Euclidean distance). Accumulated in f64, in element
//! order, so the result does not depend on how the caller chunks its work; the caller checks
//! lengths. `interrupt` runs every CHUNK elements of a long array (PostgreSQL arrays can hold
//! 2^28 values).

const CHUNK: usize = 1 << 20;

/// Σ f(x_i, y_i) in f64 over equal-length slices.
fn sum(x: &[f32], y: &[f32], f: impl Fn(f64, f64) -> f64, interrupt: &mut dyn FnMut()) -> f64 {
    debug_assert_eq!(x.len(), y.len());
    let mut total = 0.0;
    for (cx, cy) in x.chunks(CHUNK).zip(y.chunks(CHUNK)) {
        total += cx.iter().zip(cy).map(|(a, b)| f(*a as f64, *b as f64)).sum::<f64>();
        if x.len() > CHUNK {
            interrupt();
        }
    }
    total
}

pub fn dot(x: &[f32], y: &[f32], interrupt: &mut dyn FnMut()) -> f64 {
    sum(x, y, |a, b| a * b, interrupt)
}

/// 1 - cosine similarity, in [0, 2]; None where either vector is zero (undefined).
pub fn cosine_distance(x: &[f32], y: &[f32], interrupt: &mut dyn FnMut()) -> Option<f64> {
    let norms = dot(x, x, interrupt).sqrt() * dot(y, y, interrupt).sqrt();
    if norms == 0.0 {
        return None;
    }
    // Rounding can leave the cosine a hair outside [-1, 1].
    Some((1.0 - dot(x, y, interrupt) / norms).clamp(0.0, 2.0))
}

/// -(x · y); 0 (never -0) for a zero product.
pub fn negative_inner_product(x: &[f32], y: &[f32], interrupt: &mut dyn FnMut()) -> f64 {
    0.0 - dot(x, y, interrupt)
}

pub fn l2_distance(x: &[f32], y: &[f32], interrupt: &mut dyn FnMut()) -> f64 {
    sum(x, y, |a, b| (a - b).powi(2), interrupt).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator: values in [-1, 1).
    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn none() -> impl FnMut() {
        || {}
    }

    #[test]
    fn match_a_plain_f64_reference_on_awkward_lengths() {
        for (n, seed) in [(1, 1), (3, 2), (7, 3), (384, 4), (1023, 5), (CHUNK + 17, 6)] {
            let (x, y) = (random(n, seed), random(n, seed + 100));
            let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let yd: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            let d: f64 = xd.iter().zip(&yd).map(|(a, b)| a * b).sum();
            let nx: f64 = xd.iter().map(|a| a * a).sum::<f64>().sqrt();
            let ny: f64 = yd.iter().map(|a| a * a).sum::<f64>().sqrt();
            let l2: f64 = xd.iter().zip(&yd).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
            let tol = 1e-9 * n as f64;
            assert!((dot(&x, &y, &mut none()) - d).abs() <= tol, "dot, n = {n}");
            assert!((negative_inner_product(&x, &y, &mut none()) + d).abs() <= tol, "<#>, n = {n}");
            assert!((cosine_distance(&x, &y, &mut none()).unwrap() - (1.0 - d / (nx * ny))).abs() <= tol, "<=>, n = {n}");
            assert!((l2_distance(&x, &y, &mut none()) - l2).abs() <= tol, "<->, n = {n}");
        }
    }

    #[test]
    fn edge_cases() {
        let x = random(100, 9);
        assert_eq!(cosine_distance(&x, &x, &mut none()).map(|d| d < 1e-12), Some(true));
        let minus: Vec<f32> = x.iter().map(|v| -v).collect();
        assert_eq!(cosine_distance(&x, &minus, &mut none()), Some(2.0));
        assert_eq!(cosine_distance(&x, &vec![0.0; 100], &mut none()), None);
        assert_eq!(cosine_distance(&[], &[], &mut none()), None);
        let zero = negative_inner_product(&[0.0, 1.0], &[1.0, 0.0], &mut none());
        assert!(zero == 0.0 && zero.is_sign_positive());
        assert_eq!(l2_distance(&x, &x, &mut none()), 0.0);
    }

    #[test]
    fn interrupt_runs_between_chunks_of_long_arrays_only() {
        let (x, y) = (random(2 * CHUNK + 1, 1), random(2 * CHUNK + 1, 2));
        let mut calls = 0;
        dot(&x, &y, &mut || calls += 1);
        assert_eq!(calls, 3);
        calls = 0;
        dot(&x[..CHUNK], &y[..CHUNK], &mut || calls += 1);
        assert_eq!(calls, 0);
    }
}
