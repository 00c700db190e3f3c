//! A row's embedding must not depend on its batch or on the thread count: bitwise equal alone,
//! inside batches of any composition, and on 1, 2 or 3 threads.
mod common;

use bge_engine::backend::BackendKind;
use bge_engine::{Model, RunOptions};
use common::*;

#[test]
fn embeddings_are_bitwise_batch_and_thread_invariant() {
    let g = goldens();
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap();
    // 64 rows: the golden texts, repeated with suffixes so lengths and neighbours vary.
    let texts: Vec<String> = (0..64).map(|i| format!("{}{}", g.texts[i % g.texts.len()], if i >= g.texts.len() { " again" } else { "" })).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();

    let alone: Vec<Vec<f32>> = refs
        .iter()
        .map(|t| model.embed(&[t], &RunOptions { threads: 1, ..Default::default() }, &mut || {}).unwrap().remove(0))
        .collect();
    for (threads, max_batch_tokens) in [(1, 1 << 20), (2, 1 << 20), (3, 700), (2, 1)] {
        let opts = RunOptions { threads, max_batch_tokens, ..Default::default() };
        let batched = model.embed(&refs, &opts, &mut || {}).unwrap();
        for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
            assert!(a == b, "row {i} differs alone vs batched (threads {threads}, max_batch_tokens {max_batch_tokens})");
        }
    }
}

#[test]
fn interrupt_is_called_between_layers_and_may_abort() {
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap();
    let mut calls = 0;
    model.embed(&["hello", "world"], &RunOptions::default(), &mut || calls += 1).unwrap();
    // A short pass (under one chunk of work, ~10 ms) runs in one trip into the thread pool and
    // is checked before and after; longer ones between layers and row chunks.
    assert!(calls >= 2, "{calls} interrupt checks");
    // A large batch is checked inside layers too (row chunks of bounded work): 40 texts of 256
    // tokens in one pass make 10,240 rows, more than 20 chunks per layer over its five ops.
    let long = "word ".repeat(300);
    let texts = vec![long.as_str(); 40];
    let mut calls = 0;
    let opts = RunOptions { max_batch_tokens: 65_536, ..Default::default() };
    model.embed(&texts, &opts, &mut || calls += 1).unwrap();
    assert!(calls >= 20 * model.spec.num_layers, "{calls} interrupt checks for a 10,240-token batch");
    // A cancel unwinds out of the callback (as PostgreSQL's ERROR does through pgrx).
    let aborted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.embed(&["hello"], &RunOptions::default(), &mut || panic!("canceling statement due to user request"))
    }));
    assert!(aborted.is_err());
    // The model is still usable afterwards.
    assert_eq!(model.embed(&["hello"], &RunOptions::default(), &mut || {}).unwrap()[0].len(), 384);
}
