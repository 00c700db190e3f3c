//! Pooling and normalisation, as sentence-transformers' Pooling and Normalize modules do:
//! modes concatenated in the order cls, max, mean, mean_sqrt_len, last token; then
//! x / max(‖x‖, 1e-12).
use crate::batch::PackedBatch;
use crate::config::Pooling;

pub fn pool(hidden_states: &[f32], hidden: usize, batch: &PackedBatch, pooling: Pooling, normalize: bool) -> Vec<Vec<f32>> {
    (0..batch.num_seqs())
        .map(|s| {
            let range = batch.seq_range(s);
            let rows = &hidden_states[range.start * hidden..range.end * hidden];
            let mut out = Vec::with_capacity(hidden * pooling.modes());
            if pooling.cls {
                out.extend_from_slice(&rows[..hidden]);
            }
            if pooling.max {
                let mut m = vec![f32::NEG_INFINITY; hidden];
                for row in rows.chunks_exact(hidden) {
                    m.iter_mut().zip(row).for_each(|(a, b)| *a = a.max(*b));
                }
                out.extend(m);
            }
            if pooling.mean || pooling.mean_sqrt_len {
                let mut sum = vec![0.0f32; hidden];
                for row in rows.chunks_exact(hidden) {
                    sum.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                }
                let len = range.len() as f32;
                if pooling.mean {
                    out.extend(sum.iter().map(|v| v / len));
                }
                if pooling.mean_sqrt_len {
                    out.extend(sum.iter().map(|v| v / len.sqrt()));
                }
            }
            if pooling.last_token {
                out.extend_from_slice(&rows[rows.len() - hidden..]);
            }
            if normalize {
                l2_normalize(&mut out);
            }
            out
        })
        .collect()
}

pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}
