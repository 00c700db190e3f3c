//! Engine throughput on a corpus file (one passage per line): tokens/s batched and one
//! sequence at a time, and the batch-1 latency of a short query: the numbers the SQL and peer
//! benchmarks compare against.
//!
//!   cargo run --release -p bge-engine --example throughput -- MODEL_DIR CORPUS [THREADS] [REPEATS] [MAX_BATCH_TOKENS]
//!
//! BGE_PRECISION=bf16|int8 picks bge.precision's CPU backend (fp32 otherwise); BGE_QUERY sets
//! the latency query (default: a 10-token query with all-MiniLM-L6-v2's tokenizer). REPEATS = 0
//! measures the latency only.
use std::time::Instant;

use bge_engine::backend::BackendKind;
use bge_engine::{Model, RunOptions};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let corpus = std::fs::read_to_string(&args[2]).expect("corpus file");
    let threads: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(2);
    let repeats: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(3);
    let max_batch_tokens: usize = args.get(5).map(|s| s.parse().unwrap()).unwrap_or(RunOptions::default().max_batch_tokens);
    let texts: Vec<&str> = corpus.lines().collect();
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let t0 = Instant::now();
    let backend = match std::env::var("BGE_PRECISION").as_deref() {
        Ok("bf16") => BackendKind::CpuBf16,
        Ok("int8") => BackendKind::CpuInt8,
        _ => BackendKind::Cpu,
    };
    let model = Model::load(&name, &dir, backend).unwrap();
    let load = t0.elapsed().as_secs_f64();
    let opts = RunOptions { threads, max_batch_tokens, ..Default::default() };
    let tokens: usize = texts.iter().map(|t| model.tokenizer.count(t, true).unwrap()).sum();
    model.embed(&texts[..texts.len().min(16)], &opts, &mut || {}).unwrap();

    // Batch-1 latency: one short query, embedded alone, many times (median).
    let query = std::env::var("BGE_QUERY").unwrap_or_else(|_| "what is the capital city of france?".into());
    let query_tokens = model.tokenizer.count(&query, true).unwrap();
    for _ in 0..20 {
        model.embed(&[query.as_str()], &opts, &mut || {}).unwrap();
    }
    let latency = median((0..300).map(|_| {
        let t = Instant::now();
        model.embed(&[query.as_str()], &opts, &mut || {}).unwrap();
        t.elapsed().as_secs_f64()
    }).collect());
    let (batched, single) = if repeats == 0 {
        (f64::NAN, f64::NAN)
    } else {
        let batched = median((0..repeats).map(|_| {
            let t = Instant::now();
            model.embed(&texts, &opts, &mut || {}).unwrap();
            t.elapsed().as_secs_f64()
        }).collect());
        let single = median((0..repeats).map(|_| {
            let t = Instant::now();
            for text in &texts {
                model.embed(&[text], &opts, &mut || {}).unwrap();
            }
            t.elapsed().as_secs_f64()
        }).collect());
        (batched, single)
    };
    println!("model {name} ({}): load {:.1} ms, {} texts, {} tokens, {} threads, isa {:?}", backend.name(), load * 1e3, texts.len(), tokens, threads, bge_engine::backend::cpu::Isa::selected());
    println!("batched:  {:8.3} s  {:9.0} tokens/s  {:7.1} texts/s", batched, tokens as f64 / batched, texts.len() as f64 / batched);
    println!("single:   {:8.3} s  {:9.0} tokens/s  {:7.1} texts/s", single, tokens as f64 / single, texts.len() as f64 / single);
    println!("latency:  {:8.3} ms  batch 1, {} tokens (median of 300)", latency * 1e3, query_tokens);
}
