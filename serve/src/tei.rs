//! text-embeddings-inference's `POST /rerank` for the served cross-encoder rerankers.
//!
//! Request `{"query": str, "texts": [str], "raw_scores": bool, "return_text": bool, "truncate":
//! bool, "model": str}` (`model` is pg_bge's: which reranker, optional when exactly one is
//! served). Answer: `[{"index", "score", "text"?}]`, best score first, ties by index. A score is
//! the reranker's logit for the pair, bitwise `bge_rerank(query, passage, model)`
//! (FlagReranker's compute_score), or with `raw_scores` false (the default) its sigmoid computed
//! in f64, as TEI and FlagReranker's `normalize=True` give it. Errors are TEI's
//! `{"error", "error_type"}`.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bge_engine::config::ModelKind;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::{ServedModel, Work};
use crate::error::{ApiError, Kind};
use crate::{check_key, compute, parse_body, AppState, MAX_INPUTS};

#[derive(Serialize)]
struct Ranked {
    index: usize,
    score: Score,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// The logit as the engine's f32 (so that it parses back bitwise), or its sigmoid as f64.
#[derive(Serialize, Clone, Copy)]
#[serde(untagged)]
enum Score {
    Raw(f32),
    Normalized(f64),
}

impl Score {
    fn value(self) -> f64 {
        match self {
            Score::Raw(x) => x as f64,
            Score::Normalized(x) => x,
        }
    }
}

/// 1/(1+exp(-x)) in f64 from the f32 logit (FlagReranker's `normalize=True`).
pub fn sigmoid(logit: f32) -> f64 {
    1.0 / (1.0 + (-(logit as f64)).exp())
}

pub async fn rerank(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    match rerank_inner(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.tei(),
    }
}

async fn rerank_inner(state: &AppState, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    check_key(state, headers, None)?;
    let body = parse_body(body)?;
    let Value::Object(fields) = body else {
        return Err(ApiError::invalid("the request body must be a JSON object with \"query\" and \"texts\"", None));
    };
    let query = match fields.get("query") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(ApiError::invalid("missing field `query`", Some("query"))),
        Some(other) => return Err(ApiError::invalid(format!("query must be a string, not {}", kind_of(other)), Some("query"))),
    };
    let texts = texts(fields.get("texts"))?;
    let raw_scores = flag(&fields, "raw_scores")?;
    let return_text = flag(&fields, "return_text")?;
    // Accepted as TEI accepts it; a pair is always cut to the reranker's max_length, as
    // bge_rerank and FlagReranker cut it.
    let _truncate = flag(&fields, "truncate")?;
    let model = reranker(state, fields.get("model"))?;

    let for_tokens = model.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for_tokens.tokenize_pairs(&query, &refs).map(|e| (e, texts))
    })
    .await
    .map_err(|e| ApiError::new(Kind::Internal, format!("tokenising failed: {e}")))?
    .map_err(|e| ApiError::new(Kind::Internal, format!("tokenising failed: {e}")))?;
    let (encoded, texts) = encoded;
    let scores = compute(state, model, Work::Score, encoded).await?;
    let mut ranked: Vec<Ranked> = scores
        .into_iter()
        .zip(texts)
        .enumerate()
        .map(|(index, (score, text))| {
            let logit = score.first().copied().unwrap_or(f32::NAN);
            let score = if raw_scores { Score::Raw(logit) } else { Score::Normalized(sigmoid(logit)) };
            Ranked { index, score, text: return_text.then_some(text) }
        })
        .collect();
    ranked.sort_by(|a, b| b.score.value().total_cmp(&a.score.value()).then(a.index.cmp(&b.index)));
    Ok(Json(ranked).into_response())
}

/// `texts`: a non-empty list of strings (an empty string is a passage like any other, as in
/// bge_rerank), at most MAX_INPUTS.
fn texts(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let items = match value {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(ApiError::invalid("missing field `texts`", Some("texts"))),
        Some(other) => return Err(ApiError::invalid(format!("texts must be a list of strings, not {}", kind_of(other)), Some("texts"))),
    };
    if items.is_empty() {
        return Err(ApiError::invalid("`texts` cannot be empty", Some("texts")));
    }
    if items.len() > MAX_INPUTS {
        return Err(ApiError::invalid(format!("too many texts: {} (at most {MAX_INPUTS} per request)", items.len()), Some("texts")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(ApiError::invalid(format!("texts[{i}] must be a string, not {}", kind_of(other)), Some("texts"))),
        })
        .collect()
}

/// An optional boolean field, false when absent or null.
fn flag(fields: &Map<String, Value>, name: &'static str) -> Result<bool, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::invalid(format!("{name} must be a boolean, not {}", kind_of(other)), Some(name))),
    }
}

/// The reranker `model` names (404 when no model has that name, 400 when it is an embedder),
/// or when `model` is absent the only reranker served (400 when there are none or several).
fn reranker(state: &AppState, model: Option<&Value>) -> Result<Arc<ServedModel>, ApiError> {
    let served: Vec<&Arc<ServedModel>> = state.names.models().iter().filter(|m| m.kind == ModelKind::Reranker).collect();
    let listed = || served.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
    let name = match model {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return match served.as_slice() {
                [only] => Ok((*only).clone()),
                [] => Err(ApiError::invalid("no reranker is served (GET /v1/models lists the models and their kinds)", Some("model"))),
                _ => Err(ApiError::invalid(format!("several rerankers are served: say which with \"model\" (one of {})", listed()), Some("model"))),
            };
        }
        Some(other) => return Err(ApiError::invalid(format!("model must be a string, not {}", kind_of(other)), Some("model"))),
    };
    let found = state.names.resolve(name).ok_or_else(|| ApiError {
        kind: Kind::UnknownModel,
        message: format!("model `{name}` is not served; the rerankers served: {}", if served.is_empty() { "none".into() } else { listed() }),
        param: Some("model"),
    })?;
    if found.kind != ModelKind::Reranker {
        return Err(ApiError::invalid(
            format!("model `{name}` is an {}, not a reranker: /rerank needs a cross-encoder (the rerankers served: {})", found.kind.name(), if served.is_empty() { "none".into() } else { listed() }),
            Some("model"),
        ));
    }
    Ok(found)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::sigmoid;

    #[test]
    fn sigmoid_is_computed_in_f64_from_the_f32_logit() {
        assert_eq!(sigmoid(0.0), 0.5);
        let x = -0.172_837_23_f32;
        assert_eq!(sigmoid(x), 1.0 / (1.0 + (-(x as f64)).exp()));
        assert!(sigmoid(40.0) <= 1.0 && sigmoid(-40.0) > 0.0);
    }
}
