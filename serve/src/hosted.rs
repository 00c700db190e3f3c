//! The request shapes of two hosted BGE APIs:
//! - Cloudflare Workers AI: `POST /ai/run/@cf/baai/{model}` (also under
//!   `/client/v4/accounts/{account}/`), `{"text": str | [str]}` →
//!   `{"result": {"shape": [n, d], "data": [[…]]}, "success": true, "errors": [], "messages": []}`.
//! - Baidu Qianfan: `POST /rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/{model}`,
//!   `{"input": [str]}` → `{"id", "object": "embedding_list", "created", "data": [{"object":
//!   "embedding", "embedding", "index"}], "usage"}`; an empty input is an error.
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use crate::error::{ApiError, Kind};
use crate::{check_key, embed, parse_body, AppState, Inputs};

#[derive(Serialize)]
struct CloudflareResponse {
    result: CloudflareResult,
    success: bool,
    errors: [(); 0],
    messages: [(); 0],
}

#[derive(Serialize)]
struct CloudflareResult {
    shape: [usize; 2],
    data: Vec<Vec<f32>>,
}

pub async fn cloudflare(State(state): State<Arc<AppState>>, Path(model): Path<String>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    cloudflare_inner(&state, &model, &headers, body).await.unwrap_or_else(|e| e.cloudflare())
}

pub async fn cloudflare_account(
    State(state): State<Arc<AppState>>,
    Path((_account, model)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    cloudflare_inner(&state, &model, &headers, body).await.unwrap_or_else(|e| e.cloudflare())
}

async fn cloudflare_inner(state: &AppState, model_name: &str, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    check_key(state, headers, None)?;
    let body = parse_body(body)?;
    let texts = match body.get("text") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => strings(items, "text")?,
        None | Some(Value::Null) => return Err(ApiError::invalid("required property \"text\" is missing", Some("text"))),
        Some(_) => return Err(ApiError::invalid("\"text\" must be a string or a list of strings", Some("text"))),
    };
    let model = resolve(state, model_name)?;
    let dimensions = model.dimensions;
    let embedded = embed(state, model, Inputs::Texts(texts)).await?;
    let shape = [embedded.vectors.len(), dimensions];
    Ok(Json(CloudflareResponse { result: CloudflareResult { shape, data: embedded.vectors }, success: true, errors: [], messages: [] }).into_response())
}

#[derive(Serialize)]
struct BaiduResponse {
    id: String,
    object: &'static str,
    created: u64,
    data: Vec<BaiduItem>,
    usage: BaiduUsage,
}

#[derive(Serialize)]
struct BaiduItem {
    object: &'static str,
    embedding: Vec<f32>,
    index: usize,
}

#[derive(Serialize)]
struct BaiduUsage {
    prompt_tokens: usize,
    total_tokens: usize,
}

pub async fn baidu(State(state): State<Arc<AppState>>, Path(model): Path<String>, RawQuery(query): RawQuery, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    baidu_inner(&state, &model, query.as_deref(), &headers, body).await.unwrap_or_else(|e| e.baidu())
}

async fn baidu_inner(state: &AppState, model_name: &str, query: Option<&str>, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    check_key(state, headers, query)?;
    let body = parse_body(body)?;
    let texts = match body.get("input") {
        Some(Value::Array(items)) => strings(items, "input")?,
        None | Some(Value::Null) => return Err(ApiError::invalid("the content of input can not be empty", Some("input"))),
        Some(_) => return Err(ApiError::invalid("input must be a list of strings", Some("input"))),
    };
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(format!("input[{i}] can not be empty"), Some("input")));
    }
    let model = resolve(state, model_name)?;
    let embedded = embed(state, model, Inputs::Texts(texts)).await?;
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let data = embedded.vectors.into_iter().enumerate().map(|(index, embedding)| BaiduItem { object: "embedding", embedding, index }).collect();
    let id = format!("as-{}", request_id());
    let usage = BaiduUsage { prompt_tokens: embedded.tokens, total_tokens: embedded.tokens };
    Ok(Json(BaiduResponse { id, object: "embedding_list", created, data, usage }).into_response())
}

/// A list that must hold only strings (empty strings allowed; the caller decides), not be
/// empty and stay within the input cap.
fn strings(items: &[Value], field: &'static str) -> Result<Vec<String>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be an empty list"), Some(field)));
    }
    if items.len() > crate::MAX_INPUTS {
        return Err(ApiError::invalid(format!("too many inputs: {} (at most {} per request)", items.len(), crate::MAX_INPUTS), Some(field)));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| v.as_str().map(str::to_string).ok_or_else(|| ApiError::invalid(format!("{field}[{i}] must be a string"), Some(field))))
        .collect()
}

fn resolve(state: &AppState, name: &str) -> Result<Arc<crate::engine::ServedModel>, ApiError> {
    state.names.resolve(name).ok_or_else(|| ApiError::new(Kind::UnknownModel, format!("no such model: {name}")))
}

/// A request id unique within the process and unlikely to repeat across restarts.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{:x}{:06x}", nanos, NEXT.fetch_add(1, Ordering::Relaxed) & 0xff_ffff)
}
