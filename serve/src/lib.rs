//! bge-serve: the pg_bge engine behind HTTP, in the request shapes of the hosted BGE APIs
//! (OpenAI-compatible `/v1/embeddings`, Cloudflare Workers AI, Baidu Qianfan) and
//! text-embeddings-inference's `/rerank` for cross-encoder rerankers. docs/http.md
//! is the user's guide.
//!
//! `engine.rs` is the only module that calls bge-engine; `openai.rs`, `hosted.rs` and `tei.rs` read and
//! write the wire formats; this file holds the shared state, the router and what every
//! embedding route does (auth, body, tokenise, queue, wait).
pub mod engine;
pub mod error;
pub mod hosted;
pub mod metrics;
pub mod names;
pub mod openai;
pub mod tei;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bge_engine::backend::Precision;
use serde_json::json;

use bge_engine::config::ModelKind;

use crate::engine::{Batcher, Device, EngineFailure, LoadFailure, ServedModel, Work};
use crate::error::{ApiError, Kind};
use crate::metrics::Metrics;
use crate::names::ModelNames;

/// OpenAI's cap on inputs per request, applied to every shape.
pub const MAX_INPUTS: usize = 2048;

/// What `bge-serve`'s flags set.
#[derive(Debug, Clone)]
pub struct Config {
    pub models_dir: PathBuf,
    pub api_key: Option<String>,
    pub device: Device,
    pub precision: Precision,
    /// Tokens of one forward pass (inputs of several requests share it).
    pub max_batch_tokens: usize,
    /// Requests waiting or computing at once; more get 429.
    pub max_queue: usize,
    /// Largest request body; larger get 413.
    pub max_body_bytes: usize,
    /// A request (reading its body included) that takes longer gets 408.
    pub request_timeout: Duration,
}

impl Config {
    pub fn new(models_dir: impl Into<PathBuf>) -> Config {
        Config {
            models_dir: models_dir.into(),
            api_key: None,
            device: Device::Auto,
            precision: Precision::Fp32,
            max_batch_tokens: 4096,
            max_queue: 512,
            max_body_bytes: 4 << 20,
            request_timeout: Duration::from_secs(60),
        }
    }
}

pub struct AppState {
    pub names: ModelNames,
    pub failed: Vec<LoadFailure>,
    pub batcher: Arc<Batcher>,
    pub metrics: Arc<Metrics>,
    api_key: Option<String>,
    started: Instant,
}

/// The loaded models, the engine thread and the HTTP routes over them.
pub struct Server {
    pub state: Arc<AppState>,
    config: Config,
    engine_thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Loads every model directory in `config.models_dir` and starts the engine thread. Fails
    /// only when the directory itself cannot be read.
    pub fn start(config: Config) -> Result<Server, String> {
        let (models, mut failed) = engine::load_models(&config.models_dir, config.device, config.precision)?;
        let (names, alias_error) = ModelNames::new(models, &config.models_dir);
        if let Some(error) = alias_error {
            failed.push(LoadFailure { directory: "aliases.json".into(), error });
        }
        let metrics = Arc::new(Metrics::default());
        let (batcher, engine_thread) = Batcher::start(config.max_batch_tokens, config.max_queue, metrics.clone());
        let state = Arc::new(AppState { names, failed, batcher, metrics, api_key: config.api_key.clone(), started: Instant::now() });
        Ok(Server { state, config, engine_thread: Some(engine_thread) })
    }

    pub fn router(&self) -> Router {
        let embedding_routes = Router::new()
            .route("/v1/embeddings", post(openai::embeddings))
            .route("/embeddings", post(openai::embeddings))
            .route("/ai/run/{*model}", post(hosted::cloudflare))
            .route("/client/v4/accounts/{account}/ai/run/{*model}", post(hosted::cloudflare_account))
            .route("/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/{model}", post(hosted::baidu))
            .route("/rerank", post(tei::rerank))
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .layer(middleware::from_fn_with_state(self.config.max_body_bytes, refuse_declared_oversize));
        let timeout = tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, self.config.request_timeout);
        Router::new()
            .merge(embedding_routes)
            .route("/v1/models", get(openai::models))
            .route("/health", get(health))
            .route("/metrics", get(metrics_text))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(timeout)
            // Outside the timeout, so that 408s are counted too.
            .layer(middleware::from_fn_with_state(self.state.clone(), count_requests))
            .with_state(self.state.clone())
    }

    /// Stops the engine thread after it has answered every queued request.
    pub fn shutdown(mut self) {
        self.state.batcher.close();
        if let Some(thread) = self.engine_thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and waits for
/// the requests in flight. axum::serve would do, but it gives hyper no timer, so a client could
/// hold a connection forever by sending its headers slowly; here headers must arrive within
/// `header_timeout` (the router's own timeout covers the body and the answer).
pub async fn serve(listener: tokio::net::TcpListener, router: Router, header_timeout: Duration, shutdown: impl std::future::Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(header_timeout);
    let service = hyper_util::service::TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin or stop.
                    eprintln!("bge-serve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection's errors (resets, junk, timeouts) concern that client only.
            let _ = watched.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Counts every answer by route and status, and times the embedding routes.
async fn count_requests(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    let timed = !matches!(route.as_str(), "/health" | "/metrics" | "/v1/models" | "unmatched");
    state.metrics.record_request(&route, response.status().as_u16(), timed.then(|| started.elapsed()));
    response
}

/// A body whose Content-Length is over the limit is refused before any of it is read (the body
/// limit alone would wait for the bytes to arrive), in the error shape of its route.
async fn refuse_declared_oversize(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        let error = ApiError::new(Kind::TooLarge, format!("the request body is too large: at most {limit} bytes"));
        let path = request.uri().path();
        return if path == "/rerank" {
            error.tei()
        } else if path.starts_with("/rpc/") {
            error.baidu()
        } else if path.contains("/ai/run/") {
            error.cloudflare()
        } else {
            error.openai()
        };
    }
    next.run(request).await
}

async fn method_not_allowed() -> Response {
    let mut response = ApiError::invalid("this route takes another method (the embedding routes and /rerank take POST)", None).openai();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

async fn not_found() -> Response {
    ApiError::new(Kind::NoRoute, "no such route; see docs/http.md for the endpoints").openai()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let models: Vec<_> = state
        .names
        .models()
        .iter()
        .map(|m| {
            json!({"name": m.name, "kind": m.kind.name(),
                   "dimensions": (m.kind == ModelKind::Embedder).then_some(m.dimensions), "max_tokens": m.max_tokens, "backend": m.backend,
                   "precision": m.precision, "aliases": state.names.aliases_of(&m.name)})
        })
        .collect();
    let failed: Vec<_> = state.failed.iter().map(|f| json!({"directory": f.directory, "error": f.error})).collect();
    let status = if models.is_empty() { "no_models" } else if failed.is_empty() { "ok" } else { "degraded" };
    let code = if models.is_empty() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = json!({"status": status, "uptime_seconds": state.started.elapsed().as_secs(), "models": models, "failed": failed,
                      "requests_pending": state.batcher.pending()});
    (code, Json(body)).into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let text = state.metrics.render(state.names.models().len(), state.failed.len(), state.batcher.pending());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// With `--api-key`, a request must carry `Authorization: Bearer KEY` (or, as Baidu's clients
/// send it, `?access_token=KEY`).
pub fn check_key(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = &state.api_key else { return Ok(()) };
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let from_query = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")));
    let given = bearer.or(from_query);
    match given {
        Some(key) if constant_time_eq(key.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(Kind::Authentication, "Incorrect API key provided.")),
        None => Err(ApiError::new(Kind::Authentication, "No API key provided: send the header \"Authorization: Bearer KEY\".")),
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The request body as JSON: a body over the limit is 413, anything else unreadable 400.
pub fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<serde_json::Value, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(Kind::TooLarge, "the request body is too large (see --max-body-bytes)")
        } else {
            ApiError::invalid(format!("the request body could not be read: {rejection}"), None)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}"), None))
}

/// A request's inputs: texts, or token ids of the model's vocabulary.
pub enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Tokens computed, special tokens included, after truncation.
    pub tokens: usize,
}

/// Tokenises `inputs` (off the async threads), queues them for the engine thread and waits.
/// If the client goes away this future is dropped, and so is the queued work.
pub async fn embed(state: &AppState, model: Arc<ServedModel>, inputs: Inputs) -> Result<Embedded, ApiError> {
    if model.kind != ModelKind::Embedder {
        return Err(ApiError::invalid(
            format!("model {} is a {}, not an embedder: it scores (query, passage) pairs at POST /rerank", model.name, model.kind.name()),
            Some("model"),
        ));
    }
    if inputs.is_empty() {
        return Err(ApiError::invalid("input must not be empty", Some("input")));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::invalid(format!("too many inputs: {} (at most {MAX_INPUTS} per request)", inputs.len()), Some("input")));
    }
    let for_tokens = model.clone();
    let encoded = tokio::task::spawn_blocking(move || match inputs {
        Inputs::Texts(texts) => {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            for_tokens.tokenize(&refs)
        }
        Inputs::Tokens(arrays) => Ok(arrays.iter().map(|ids| for_tokens.wrap_token_ids(ids)).collect()),
    })
    .await
    .map_err(|e| ApiError::new(Kind::Internal, format!("tokenising failed: {e}")))?
    .map_err(|e| ApiError::new(Kind::Internal, format!("tokenising failed: {e}")))?;
    let tokens = encoded.iter().map(|e| e.ids.len()).sum();
    let vectors = compute(state, model, Work::Embed, encoded).await?;
    Ok(Embedded { vectors, tokens })
}

/// Queues tokenised inputs for the engine thread and waits for their vectors (or scores, as
/// one-value vectors).
pub async fn compute(state: &AppState, model: Arc<ServedModel>, work: Work, encoded: Vec<bge_engine::tokenize::Encoded>) -> Result<Vec<Vec<f32>>, ApiError> {
    let count = encoded.len();
    let tokens = encoded.iter().map(|e| e.ids.len()).sum();
    let receiver = state
        .batcher
        .submit(model, work, encoded)
        .map_err(|_| ApiError::new(Kind::Busy, "the server's queue is full; retry after a second"))?;
    let vectors = match receiver.await {
        Ok(Ok(vectors)) => vectors,
        Ok(Err(EngineFailure::Refused(e))) => return Err(ApiError::invalid(e, Some("input"))),
        Ok(Err(EngineFailure::Error(e))) => return Err(ApiError::new(Kind::Internal, format!("the engine failed: {e}"))),
        Ok(Err(EngineFailure::Panic)) => return Err(ApiError::new(Kind::Internal, "the engine failed on this batch (internal error); the request was not computed")),
        Ok(Err(EngineFailure::ShuttingDown)) | Err(_) => return Err(ApiError::new(Kind::Unavailable, "the server is shutting down")),
    };
    state.metrics.record_embedded(count, tokens);
    Ok(vectors)
}
