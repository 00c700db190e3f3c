//! `bge-serve --models DIR --listen ADDR:PORT [--api-key KEY] [--device cpu|cuda|auto]
//! [--precision fp32|bf16|int8] [--max-batch-tokens N]`: see docs/http.md.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bge_engine::backend::Precision;
use bge_serve::engine::Device;
use bge_serve::{Config, Server};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
    Auto,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    Fp32,
    Bf16,
    Int8,
}

/// HTTP embedding server on the pg_bge engine: OpenAI /v1/embeddings, Cloudflare Workers AI and
/// Baidu Qianfan request shapes.
#[derive(Parser)]
#[command(name = "bge-serve", version)]
struct Args {
    /// Directory of model directories (each subdirectory with a config.json is served under its name).
    #[arg(long)]
    models: PathBuf,
    /// Address and port to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Require "Authorization: Bearer KEY" on the embedding routes (default: the BGE_SERVE_API_KEY
    /// environment variable, if set).
    #[arg(long, env = "BGE_SERVE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Where models compute: auto uses a working GPU, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Precision of the CPU's linear layers (fp32 gives bitwise bge_embed(text, model)); the GPU computes in fp16.
    #[arg(long, value_enum, default_value = "fp32")]
    precision: PrecisionArg,
    /// Tokens per forward pass; inputs of concurrent requests share a pass.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_batch_tokens: u64,
    /// Requests waiting or computing at once; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_queue: u64,
    /// Largest request body in bytes; larger are answered 413.
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    max_body_bytes: u64,
    /// Seconds a request may take, reading its body included; slower ones are answered 408.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    request_timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = Config {
        models_dir: args.models,
        api_key: args.api_key.filter(|k| !k.is_empty()),
        device: match args.device {
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda => Device::Cuda,
            DeviceArg::Auto => Device::Auto,
        },
        precision: match args.precision {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Bf16 => Precision::Bf16,
            PrecisionArg::Int8 => Precision::Int8,
        },
        max_batch_tokens: args.max_batch_tokens as usize,
        max_queue: args.max_queue as usize,
        max_body_bytes: args.max_body_bytes as usize,
        request_timeout: Duration::from_secs(args.request_timeout),
    };
    if config.device == Device::Cuda && config.precision != Precision::Fp32 {
        eprintln!("bge-serve: --precision {} runs on the CPU; the GPU computes in fp16 (use --device cpu)", config.precision.name());
        return ExitCode::from(2);
    }
    if config.device == Device::Cuda && !bge_engine::backend::cuda::available() {
        eprintln!("bge-serve: --device cuda, but no usable GPU (driver, libcuda or NVRTC missing); use --device auto or cpu");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bge-serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, args.listen))
}

async fn serve(config: Config, listen: String) -> ExitCode {
    let header_timeout = config.request_timeout.min(Duration::from_secs(10));
    // Bind first, so a taken port fails before minutes of model loading.
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bge-serve: cannot listen on {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match tokio::task::spawn_blocking(move || Server::start(config)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            eprintln!("bge-serve: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("bge-serve: loading the models failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = server.state.names.models().len();
    let failed = server.state.failed.len();
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or(listen);
    eprintln!("bge-serve: listening on http://{address} ({served} models served, {failed} failed to load)");
    bge_serve::serve(listener, server.router(), header_timeout, stop_signal()).await;
    // In-flight requests have been answered; let the engine thread finish and stop.
    eprintln!("bge-serve: stopping");
    tokio::task::spawn_blocking(move || server.shutdown()).await.ok();
    ExitCode::SUCCESS
}

/// SIGTERM or Ctrl-C: stop accepting, finish what is in flight.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("bge-serve: signal received; finishing requests in flight");
}
