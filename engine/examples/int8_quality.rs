//! Cosine of bge.precision = int8 embeddings to fp32 ones over every line of a text file:
//! the lowest, the median and the worst lines, to look for texts that quantization hurts.
//!
//!   cargo run --release -p bge-engine --example int8_quality -- MODEL_DIR TEXTS [SHOW]
use bge_engine::backend::BackendKind;
use bge_engine::{Model, RunOptions};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(&args[1]);
    let file = std::fs::read_to_string(&args[2]).expect("text file");
    let show: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(5);
    let texts: Vec<&str> = file.lines().collect();
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let opts = RunOptions::default();
    let embed = |kind| Model::load(&name, &dir, kind).unwrap().embed(&texts, &opts, &mut || {}).unwrap();
    let (fp32, int8) = (embed(BackendKind::Cpu), embed(BackendKind::CpuInt8));
    let mut scored: Vec<(f64, usize)> = fp32.iter().zip(&int8).map(|(a, b)| cosine(a, b)).zip(0..).collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("{} texts: lowest cosine {:.6}, median {:.6}", texts.len(), scored[0].0, scored[scored.len() / 2].0);
    for (c, i) in scored.iter().take(show) {
        println!("{c:.6}  {:?}", texts[*i].chars().take(80).collect::<String>());
    }
}
