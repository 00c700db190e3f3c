//! Times pg_bge's engine on pre-tokenised batches for benches/cuda_bench.py, which times
//! PyTorch (sentence-transformers, fp16, SDPA) on the same batches and prints the comparison.
//!
//! Tokenisation is left out on both sides (it is CPU work either way). Timed, per call: the
//! ids' upload, the encoder, pooling, normalisation and the copy back of the vectors: the path
//! a `bge_embed(text[])` call takes after tokenising, batching by --max-batch-tokens as it does.
//!
//!   cargo build --release -p bge-engine --example cuda_bench
//!   cuda_bench --model DIR --batches FILE.json [--device cuda|cpu] [--warmup N] [--reps N]
//!              [--max-batch-tokens N]
//!
//! FILE.json: [{"batch": B, "len": L, "ids": [[u32; L]; B]}, ...]. Prints one JSON object per
//! batch on stdout: batch, len, tokens, seconds (every timed run), load_seconds, gpu_used_bytes
//! (GPU memory in use after the runs, minus what was in use once the context existed), and
//! embedding0 (the first row's vector, for a cross-check against PyTorch).
use std::path::PathBuf;
use std::time::Instant;

use bge_engine::backend::{cuda, BackendKind};
use bge_engine::tokenize::Encoded;
use bge_engine::{Model, RunOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Batch {
    batch: usize,
    len: usize,
    ids: Vec<Vec<u32>>,
}

struct Args {
    model: PathBuf,
    batches: PathBuf,
    backend: BackendKind,
    warmup: usize,
    reps: usize,
    max_batch_tokens: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { model: PathBuf::new(), batches: PathBuf::new(), backend: BackendKind::Cuda, warmup: 3, reps: 10, max_batch_tokens: RunOptions::default().max_batch_tokens };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => args.model = value()?.into(),
            "--batches" => args.batches = value()?.into(),
            "--device" => {
                args.backend = match value()?.as_str() {
                    "cuda" => BackendKind::Cuda,
                    "cpu" => BackendKind::Cpu,
                    other => return Err(format!("--device {other}: cuda or cpu")),
                }
            }
            "--warmup" => args.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--reps" => args.reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--max-batch-tokens" => args.max_batch_tokens = value()?.parse().map_err(|e| format!("--max-batch-tokens: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.model.as_os_str().is_empty() || args.batches.as_os_str().is_empty() {
        return Err("usage: cuda_bench --model DIR --batches FILE.json [--device cuda|cpu] [--warmup N] [--reps N] [--max-batch-tokens N]".into());
    }
    Ok(args)
}

fn gpu_used() -> Option<usize> {
    let dev = cuda::device().ok()?;
    dev.ctx.mem_get_info().ok().map(|(free, total)| total - free)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let batches: Vec<Batch> = serde_json::from_str(&std::fs::read_to_string(&args.batches).expect("read --batches")).expect("parse --batches");
    // The context first, so the memory figure counts the model and buffers, not the context.
    let baseline = if args.backend == BackendKind::Cuda {
        let dev = cuda::device().unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(1)
        });
        eprintln!("device: {} (sm_{}, kernels built for {})", dev.name, dev.sm, dev.target);
        gpu_used()
    } else {
        None
    };
    let name = args.model.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string();
    let started = Instant::now();
    let model = Model::load(&name, &args.model, args.backend).unwrap_or_else(|e| {
        eprintln!("loading {}: {e}", args.model.display());
        std::process::exit(1)
    });
    let load_seconds = started.elapsed().as_secs_f64();
    let opts = RunOptions { truncate: false, threads: 0, max_batch_tokens: args.max_batch_tokens };

    for b in &batches {
        assert_eq!(b.ids.len(), b.batch, "batch size mismatch");
        let encoded: Vec<Encoded> = b.ids.iter().map(|ids| Encoded { ids: ids.clone(), type_ids: vec![0; ids.len()] }).collect();
        let mut first = Vec::new();
        for _ in 0..args.warmup {
            first = model.embed_encoded(&encoded, &opts, &mut || {}).expect("embed");
        }
        let mut seconds = Vec::with_capacity(args.reps);
        for _ in 0..args.reps {
            let t = Instant::now();
            let out = model.embed_encoded(&encoded, &opts, &mut || {}).expect("embed");
            seconds.push(t.elapsed().as_secs_f64());
            first = out;
        }
        let used = match (baseline, gpu_used()) {
            (Some(before), Some(after)) => serde_json::json!(after.saturating_sub(before)),
            _ => serde_json::Value::Null,
        };
        let line = serde_json::json!({
            "batch": b.batch,
            "len": b.len,
            "tokens": b.ids.iter().map(Vec::len).sum::<usize>(),
            "seconds": seconds,
            "load_seconds": load_seconds,
            "gpu_used_bytes": used,
            "embedding0": first.first().cloned().unwrap_or_default(),
        });
        println!("{line}");
    }
}
