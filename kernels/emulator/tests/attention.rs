//! attention.cu against reference::attention on packed variable-length batches: every head
//! dimension it is instantiated for (32, 64, 96, 128), sequence lengths on both sides of the
//! 16-row warp, 64-key and 128-query tiles (1, 17, 31, 33, 63, 64, 65, 127, 128, 129, 257, 513)
//! alone and mixed in one batch,
//! at the GPU test's tolerance (2 steps of the 16-bit output), under both schedules.
mod common;

use bge_engine::backend::cuda::kernels::ATTENTION_HEAD_DIMS;
use bge_engine::backend::cuda::Half;
use bge_engine::backend::reference;
use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn check(emu: &Emu, heads: usize, d: usize, lens: &[usize], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let batch = batch_of(lens);
    let t = batch.num_tokens();
    let hidden = heads * d;
    let qkv = random(&mut rng, t * 3 * hidden, 2.0);
    let bias = random(&mut rng, 3 * hidden, 0.5);
    let with_bias: Vec<f32> = qkv.iter().enumerate().map(|(i, v)| v + bias[i % (3 * hidden)]).collect();
    let mut want = vec![0.0; t * hidden];
    reference::attention(&with_bias, &batch, heads, d, &mut want, 0..t);
    let (d_qkv, d_bias, d_cu) = (emu.up(&qkv), emu.up(&bias), emu.up(&cu_seqlens(&batch)));
    for p in PRECISIONS {
        under_each_schedule(|s| {
            let mut out = emu.poisoned_16(p, t * hidden);
            emu.kernels(p).attention(&emu.dev.stream, &d_qkv, &d_bias, &d_cu, batch.num_seqs(), batch.max_len, t, heads, d, &mut out).unwrap();
            let e = rel_err(&widen(p, &emu.down(&out)), &want);
            assert!(e < 2.0 * ulp16(p), "{p:?} {s:?} heads={heads} d={d} lens={lens:?}: rel err {e}");
        });
    }
}

#[test]
fn attention_matches_reference_for_every_head_dim() {
    let emu = Emu::new();
    assert_eq!(ATTENTION_HEAD_DIMS, [32, 64, 96, 128], "a new head dimension needs a case here");
    for (i, d) in ATTENTION_HEAD_DIMS.into_iter().enumerate() {
        for (j, lens) in [vec![1], vec![31], vec![17, 33], vec![257], vec![63, 64, 65], vec![127, 128, 129], vec![513, 1, 31, 257, 33, 2]].iter().enumerate() {
            check(&emu, 2, d, lens, (10 * i + j) as u64);
        }
    }
}

/// bge-small's and MiniLM's shape: 12 heads of 32.
#[test]
fn attention_matches_reference_with_many_heads() {
    let emu = Emu::new();
    check(&emu, 12, 32, &[7, 1, 33, 100], 100);
    check(&emu, 12, 64, &[1, 1, 1, 1], 101);
}

#[test]
fn attention_keeps_sequences_apart() {
    let emu = Emu::new();
    let mut rng = StdRng::seed_from_u64(7);
    let (heads, d) = (4, 32);
    let batch = batch_of(&[5, 90, 3]);
    let t = batch.num_tokens();
    let hd = heads * d;
    let mut qkv = random(&mut rng, t * 3 * hd, 1.0);
    let bias = random(&mut rng, 3 * hd, 0.5);
    let k = emu.kernels(Half::F16);
    let run = |qkv: &[f32]| {
        let mut out = emu.poisoned_16(Half::F16, t * hd);
        k.attention(&emu.dev.stream, &emu.up(qkv), &emu.up(&bias), &emu.up(&cu_seqlens(&batch)), 3, batch.max_len, t, heads, d, &mut out).unwrap();
        emu.down(&out)
    };
    let before = run(&qkv);
    for v in &mut qkv[5 * 3 * hd..95 * 3 * hd] {
        *v += 1.0;
    }
    let after = run(&qkv);
    assert!(before[..5 * hd] == after[..5 * hd] && before[95 * hd..] == after[95 * hd..], "a sequence saw its neighbour");
    assert!(before[5 * hd..95 * hd] != after[5 * hd..95 * hd]);
}

/// gridDim.z, where attention puts the sequences, stops at 65,535 on every GPU: a batch of more
/// one-token sequences (reachable through the engine's API with a small model and a large
/// max_batch_tokens) must still be covered.
#[test]
fn attention_covers_more_sequences_than_grid_z_allows() {
    let emu = Emu::new();
    let mut rng = StdRng::seed_from_u64(9);
    let (heads, d) = (1, 32);
    let lens: Vec<usize> = (0..70_000).map(|i| 1 + (i % 3 == 0) as usize).collect();
    let batch = batch_of(&lens);
    let t = batch.num_tokens();
    let qkv = random(&mut rng, t * 3 * heads * d, 2.0);
    let bias = random(&mut rng, 3 * heads * d, 0.5);
    let with_bias: Vec<f32> = qkv.iter().enumerate().map(|(i, v)| v + bias[i % (3 * heads * d)]).collect();
    let mut want = vec![0.0; t * heads * d];
    reference::attention(&with_bias, &batch, heads, d, &mut want, 0..t);
    let p = Half::F16;
    let mut out = emu.poisoned_16(p, t * heads * d);
    emu.kernels(p)
        .attention(&emu.dev.stream, &emu.up(&qkv), &emu.up(&bias), &emu.up(&cu_seqlens(&batch)), batch.num_seqs(), batch.max_len, t, heads, d, &mut out)
        .unwrap();
    let e = rel_err(&widen(p, &emu.down(&out)), &want);
    assert!(e < 2.0 * ulp16(p), "rel err {e}");
}
