//! Counters for /metrics, written in Prometheus' text format (version 0.0.4) by hand: a handful
//! of counters and histograms do not need a metrics crate.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A histogram with fixed upper bounds.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}", self.count, self.sum, self.count);
    }
}

const LATENCY_SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const BATCH_INPUTS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
const BATCH_TOKENS: &[f64] = &[16.0, 64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0];

pub struct Metrics {
    /// Requests answered, by route and status code.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Seconds from a request's arrival to its answer, embedding routes only.
    latency: Mutex<Histogram>,
    batch_inputs: Mutex<Histogram>,
    batch_tokens: Mutex<Histogram>,
    pass_seconds: Mutex<Histogram>,
    /// Inputs embedded and their tokens (special tokens included, after truncation).
    pub inputs: AtomicU64,
    pub tokens: AtomicU64,
    /// Requests waiting for the engine thread.
    pub queue_depth: AtomicU64,
    pub queue_rejections: AtomicU64,
    /// Requests whose client went away before all their inputs were computed.
    pub cancelled: AtomicU64,
    pub engine_panics: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(Histogram::new(LATENCY_SECONDS)),
            batch_inputs: Mutex::new(Histogram::new(BATCH_INPUTS)),
            batch_tokens: Mutex::new(Histogram::new(BATCH_TOKENS)),
            pass_seconds: Mutex::new(Histogram::new(LATENCY_SECONDS)),
            inputs: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
            queue_rejections: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            engine_panics: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16, elapsed: Option<Duration>) {
        *lock(&self.requests).entry((route.to_string(), status)).or_insert(0) += 1;
        if let Some(elapsed) = elapsed {
            lock(&self.latency).observe(elapsed.as_secs_f64());
        }
    }

    pub fn record_embedded(&self, inputs: usize, tokens: usize) {
        self.inputs.fetch_add(inputs as u64, Ordering::Relaxed);
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    }

    pub fn record_pass(&self, inputs: usize, tokens: usize, elapsed: Duration) {
        lock(&self.batch_inputs).observe(inputs as f64);
        lock(&self.batch_tokens).observe(tokens as f64);
        lock(&self.pass_seconds).observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric; `models` and `failed` are the counts of
    /// served and unloadable model directories.
    pub fn render(&self, models: usize, failed: usize, pending: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP bge_serve_requests_total HTTP requests answered, by route and status.\n# TYPE bge_serve_requests_total counter");
        for ((route, status), n) in lock(&self.requests).iter() {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "bge_serve_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        let counters = [
            ("bge_serve_inputs_total", "Inputs (texts or token arrays) embedded.", self.inputs.load(Ordering::Relaxed)),
            ("bge_serve_tokens_total", "Tokens embedded, special tokens included, after truncation.", self.tokens.load(Ordering::Relaxed)),
            ("bge_serve_queue_rejections_total", "Requests answered 429 because the queue was full.", self.queue_rejections.load(Ordering::Relaxed)),
            ("bge_serve_cancelled_total", "Requests whose client went away before they were computed.", self.cancelled.load(Ordering::Relaxed)),
            ("bge_serve_engine_panics_total", "Forward passes that panicked (their requests got a 500).", self.engine_panics.load(Ordering::Relaxed)),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let gauges = [
            ("bge_serve_queue_depth", "Requests waiting for a forward pass.", self.queue_depth.load(Ordering::Relaxed)),
            ("bge_serve_requests_pending", "Requests accepted and not yet answered (waiting or computing).", pending as u64),
            ("bge_serve_models_loaded", "Model directories served.", models as u64),
            ("bge_serve_models_failed", "Model directories that failed to load.", failed as u64),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        lock(&self.latency).write(&mut out, "bge_serve_request_duration_seconds", "Time from a request's arrival to its answer, embedding routes.");
        lock(&self.batch_inputs).write(&mut out, "bge_serve_batch_inputs", "Inputs per forward pass.");
        lock(&self.batch_tokens).write(&mut out, "bge_serve_batch_tokens", "Tokens per forward pass.");
        lock(&self.pass_seconds).write(&mut out, "bge_serve_pass_duration_seconds", "Time of one forward pass.");
        out
    }
}
