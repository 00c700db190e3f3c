//! pooling.cu against bge_engine::heads::pooled::pool: every combination of the four encoder pooling
//! modes, last-token pooling alone and with them,
//! with and without L2 normalisation, hidden sizes below, at and above the 256-thread block,
//! packed batches of 1 to 513 tokens per sequence, under both schedules.
mod common;

use bge_engine::backend::cuda::Half;
use bge_engine::config::Pooling;
use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn pooling_matches_reference() {
    let emu = Emu::new();
    let k = emu.kernels(Half::F16);
    let mut rng = StdRng::seed_from_u64(8);
    for h in [1usize, 33, 256, 384, 1000] {
        for lens in [vec![1], vec![31, 33], vec![257, 1, 513, 2]] {
            let batch = batch_of(&lens);
            let t = batch.num_tokens();
            let states = random(&mut rng, t * h, 3.0);
            let (d_states, d_cu) = (emu.up(&states), emu.up(&cu_seqlens(&batch)));
            // The four encoder modes in every combination, last-token alone and with all of them.
            for bits in (1..16u32).chain([16, 31]) {
                let pooling = Pooling { cls: bits & 1 != 0, max: bits & 2 != 0, mean: bits & 4 != 0, mean_sqrt_len: bits & 8 != 0, last_token: bits & 16 != 0 };
                for normalize in [false, true] {
                    let want: Vec<f32> = bge_engine::heads::pooled::pool(&states, h, &batch, pooling, normalize).concat();
                    under_each_schedule(|s| {
                        let mut out = emu.poisoned_f32(batch.num_seqs() * pooling.modes() * h);
                        k.pool_normalize(&emu.dev.stream, &d_states, &d_cu, batch.num_seqs(), t, h, pooling, normalize, &mut out).unwrap();
                        let e = rel_err(&emu.down(&out), &want);
                        assert!(e < 1e-5, "{s:?} h={h} lens={lens:?} {pooling:?} normalize={normalize}: rel err {e}");
                    });
                }
            }
        }
    }
}
