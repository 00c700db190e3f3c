//! OpenAI's `POST /v1/embeddings` (also at `/embeddings`) and `GET /v1/models`.
//!
//! `input`: a string, a list of strings, a list of token ids or a list of such lists. Token ids
//! are the served model's own vocabulary (not OpenAI's): they are embedded between the model's
//! special tokens, as the tokenizer would place them, and truncated like a text.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Kind};
use crate::{check_key, embed, parse_body, AppState, Inputs};

#[derive(Serialize)]
struct EmbeddingList {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    embedding: EmbeddingData,
    index: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingData {
    Float(Vec<f32>),
    /// The f32 values' little-endian bytes, base64 (what OpenAI's clients decode).
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

enum Format {
    Float,
    Base64,
}

pub async fn embeddings(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    match embeddings_inner(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.openai(),
    }
}

async fn embeddings_inner(state: &AppState, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    check_key(state, headers, None)?;
    let body = parse_body(body)?;
    let Value::Object(fields) = body else {
        return Err(ApiError::invalid("the request body must be a JSON object", None));
    };
    let model_name = match fields.get("model") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(ApiError::invalid("you must provide a model parameter", Some("model"))),
        Some(_) => return Err(ApiError::invalid("model must be a string", Some("model"))),
    };
    let format = match fields.get("encoding_format") {
        None | Some(Value::Null) => Format::Float,
        Some(Value::String(s)) if s == "float" => Format::Float,
        Some(Value::String(s)) if s == "base64" => Format::Base64,
        Some(other) => return Err(ApiError::invalid(format!("encoding_format must be \"float\" or \"base64\", not {other}"), Some("encoding_format"))),
    };
    let dimensions = dimensions(&fields)?;
    let inputs = parse_input(fields.get("input"))?;
    let model = state
        .names
        .resolve(&model_name)
        .ok_or_else(|| ApiError { kind: Kind::UnknownModel, message: format!("The model `{model_name}` does not exist; GET /v1/models lists the served models."), param: Some("model") })?;
    if let Some(d) = dimensions {
        if d > model.dimensions {
            return Err(ApiError::invalid(format!("dimensions must be at most {} for model {}", model.dimensions, model.name), Some("dimensions")));
        }
    }
    if let Inputs::Tokens(arrays) = &inputs {
        if let Some(bad) = arrays.iter().flatten().find(|&&id| id as usize >= model.vocab_size) {
            return Err(ApiError::invalid(format!("token id {bad} is not in model {}'s vocabulary of {}", model.name, model.vocab_size), Some("input")));
        }
    }
    let embedded = embed(state, model, inputs).await?;
    let data = embedded
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, mut v)| {
            if let Some(d) = dimensions {
                shorten(&mut v, d);
            }
            let embedding = match format {
                Format::Float => EmbeddingData::Float(v),
                Format::Base64 => EmbeddingData::Base64(base64::engine::general_purpose::STANDARD.encode(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())),
            };
            EmbeddingItem { object: "embedding", embedding, index }
        })
        .collect();
    let usage = Usage { prompt_tokens: embedded.tokens, total_tokens: embedded.tokens };
    Ok(Json(EmbeddingList { object: "list", data, model: model_name, usage }).into_response())
}

/// `dimensions`: a positive integer (checked against the model once it is known).
fn dimensions(fields: &Map<String, Value>) -> Result<Option<usize>, ApiError> {
    match fields.get("dimensions") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(d) if d >= 1 => Ok(Some(d as usize)),
            _ => Err(ApiError::invalid(format!("dimensions must be a positive integer, not {n}"), Some("dimensions"))),
        },
        Some(other) => Err(ApiError::invalid(format!("dimensions must be a positive integer, not {other}"), Some("dimensions"))),
    }
}

/// The first `d` values, scaled back to unit length (OpenAI's `dimensions`); the whole vector
/// is left exactly as computed.
fn shorten(v: &mut Vec<f32>, d: usize) {
    if d >= v.len() {
        return;
    }
    v.truncate(d);
    let norm = v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x = (*x as f64 / norm) as f32;
        }
    }
}

/// `input` as OpenAI accepts it. Empty strings and empty lists are refused, as OpenAI does.
fn parse_input(input: Option<&Value>) -> Result<Inputs, ApiError> {
    const SHAPE: &str = "input must be a string, a list of strings, a list of token ids or a list of lists of token ids";
    let items = match input {
        None | Some(Value::Null) => return Err(ApiError::invalid("you must provide an input parameter", Some("input"))),
        Some(Value::String(s)) => {
            if s.is_empty() {
                return Err(ApiError::invalid("input must not be an empty string", Some("input")));
            }
            return Ok(Inputs::Texts(vec![s.clone()]));
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ApiError::invalid(SHAPE, Some("input"))),
    };
    if items.is_empty() {
        return Err(ApiError::invalid("input must not be an empty list", Some("input")));
    }
    if items.len() > crate::MAX_INPUTS {
        return Err(ApiError::invalid(format!("too many inputs: {} (at most {} per request)", items.len(), crate::MAX_INPUTS), Some("input")));
    }
    match &items[0] {
        Value::String(_) => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if s.is_empty() => return Err(ApiError::invalid(format!("input[{i}] must not be an empty string"), Some("input"))),
                    Value::String(s) => texts.push(s.clone()),
                    _ => return Err(ApiError::invalid(format!("input[{i}] is not a string; {SHAPE}"), Some("input"))),
                }
            }
            Ok(Inputs::Texts(texts))
        }
        Value::Number(_) => Ok(Inputs::Tokens(vec![token_ids(items, "input")?])),
        Value::Array(_) => {
            let mut arrays = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Array(ids) if ids.is_empty() => return Err(ApiError::invalid(format!("input[{i}] must not be an empty list"), Some("input"))),
                    Value::Array(ids) => arrays.push(token_ids(ids, &format!("input[{i}]"))?),
                    _ => return Err(ApiError::invalid(format!("input[{i}] is not a list of token ids; {SHAPE}"), Some("input"))),
                }
            }
            Ok(Inputs::Tokens(arrays))
        }
        _ => Err(ApiError::invalid(SHAPE, Some("input"))),
    }
}

fn token_ids(items: &[Value], what: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| ApiError::invalid(format!("{what}[{i}] is not a token id (a non-negative integer): {v}"), Some("input")))
        })
        .collect()
}

/// OpenAI's model list: every served model by its directory name.
pub async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_key(&state, &headers, None) {
        return e.openai();
    }
    let data: Vec<Value> = state.names.models().iter().map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "pg_bge", "kind": m.kind.name()})).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn shortened_vectors_are_unit_length_and_full_length_ones_untouched() {
        let mut v = vec![0.6, 0.8, 0.0, 0.0];
        let full = v.clone();
        shorten(&mut v, 4);
        assert_eq!(v, full);
        let mut w = vec![0.5f32, 0.5, 0.5, 0.5];
        shorten(&mut w, 2);
        assert_eq!(w.len(), 2);
        assert!((w[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7 && (w[1] - w[0]).abs() == 0.0);
    }
}
