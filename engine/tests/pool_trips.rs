//! A short forward pass makes one trip into the rayon pool (none on one thread), not one per op:
//! at batch 1 the trips cost as much as the arithmetic. Alone in its test binary because the
//! trip counter is process-wide.
mod common;

use bge_engine::backend::cpu::Cpu;
use bge_engine::threads::pool_trips;
use bge_engine::batch::PackedBatch;
use bge_engine::config::ModelSpec;
use bge_engine::models::encoder::Encoder;
use bge_engine::models::Forward;
use bge_engine::tokenize::Encoded;
use bge_engine::weights::WeightFile;

#[test]
fn short_forward_makes_one_pool_trip() {
    let dir = common::minilm();
    let spec = ModelSpec::load("all-MiniLM-L6-v2", &dir).unwrap();
    let weights = WeightFile::open(&dir.join("model.safetensors")).unwrap();
    let enc = Encoded { ids: (0..16).map(|i| 2000 + 17 * i).collect(), type_ids: vec![0; 16] };
    let batch = PackedBatch::new(&[&enc]);
    for cpu in [Cpu::new().unwrap(), Cpu::int8().unwrap()] {
        let net = Encoder::load(cpu, &spec, &weights).unwrap();
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut interrupts = 0;
            net.forward(&pool, &batch, &mut || interrupts += 1).unwrap();
            let before = pool_trips();
            let hidden = net.forward(&pool, &batch, &mut || interrupts += 1).unwrap();
            assert_eq!(pool_trips() - before, if threads == 1 { 0 } else { 1 }, "{:?} on {threads} threads", cpu.precision);
            assert!(interrupts >= 2, "interrupt runs before and after the pass");
            // The same numbers as a pass split per op on a one-thread pool.
            let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            assert!(hidden == net.forward(&one, &batch, &mut || {}).unwrap(), "{:?}: {threads} threads differ from 1", cpu.precision);
        }
    }
}
