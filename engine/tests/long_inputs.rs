//! Inputs at BGE-M3's 8192-token limit, on the tiny XLM-RoBERTa model: they embed (dense,
//! sparse, ColBERT), truncation and its error work at that length, and memory stays
//! O(tokens), not O(tokens²): attention's 8192 × 8192 score matrix alone would be 256 MiB per
//! head. One test in this binary, so nothing else moves the process's peak memory meanwhile.
mod common;

use bge_engine::backend::BackendKind;
use bge_engine::{Error, Model, RunOptions, TextRole};
use common::*;

fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage fills the zero-initialised struct we own.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    usage.ru_maxrss as u64 * 1024
}

#[test]
fn inputs_at_the_8192_token_limit_embed_in_bounded_memory() {
    let model = Model::load("tiny-bge-m3", &tiny_m3(), BackendKind::Cpu).unwrap();
    assert_eq!(model.spec.max_seq_length, 8192);
    let opts = RunOptions { threads: 2, ..Default::default() };
    model.embed(&["warm up the pools"], &opts, &mut || {}).unwrap();
    let before = peak_rss_bytes();

    // "▁the" is one token: <s> + 8190 + </s> = exactly the limit.
    let at_limit = "the ".repeat(8190);
    assert_eq!(model.count_tokens(&at_limit, TextRole::Passage, false, &mut || {}).unwrap(), 8192);
    let dense = model.embed(&[&at_limit], &opts, &mut || {}).unwrap();
    assert_eq!(dense[0].len(), 32);
    let sparse = model.embed_sparse(&[&at_limit], &opts, &mut || {}).unwrap();
    assert_eq!(sparse[0].weights.len(), 1, "one distinct token");
    let colbert = model.embed_colbert(&[&at_limit], &opts, &mut || {}).unwrap();
    assert_eq!(colbert[0].rows(), 8191);
    assert!(colbert[0].data.iter().all(|v| v.is_finite()));

    // Longer: truncated to the first 8192 tokens (the last one </s>), or an error.
    let over = "the ".repeat(12000);
    assert_eq!(model.count_tokens(&over, TextRole::Passage, true, &mut || {}).unwrap(), 8192);
    assert_eq!(model.count_tokens(&over, TextRole::Passage, false, &mut || {}).unwrap(), 12002);
    assert_eq!(model.embed(&[&over], &opts, &mut || {}).unwrap(), dense, "truncated input embeds as its first 8192 tokens");
    let strict = RunOptions { truncate: false, ..opts };
    match model.embed(&[&over], &strict, &mut || {}) {
        Err(Error::InputTooLong { tokens, limit, .. }) => assert_eq!((tokens, limit), (12002, 8192)),
        other => panic!("expected InputTooLong, got {:?}", other.map(|v| v.len())),
    }

    // A batch of several long inputs together.
    let mixed: Vec<String> = (0..4).map(|i| format!("{} {}", "a the ".repeat(1500 + 300 * i), i)).collect();
    let refs: Vec<&str> = mixed.iter().map(String::as_str).collect();
    assert_eq!(model.embed(&refs, &opts, &mut || {}).unwrap().len(), 4);

    let grown = peak_rss_bytes().saturating_sub(before);
    assert!(grown < 160 << 20, "peak memory grew by {} MiB for 8192-token inputs", grown >> 20);
    eprintln!("peak memory: {} MiB before, grew by {} MiB for 8192-token inputs", before >> 20, grown >> 20);
}
