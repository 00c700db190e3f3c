//! SQL functions: parse arguments, call the engine, map errors. No math here.
use bge_engine::config::{ModelKind, ModelSpec};
use bge_engine::TextRole;
use pgrx::prelude::*;

use crate::compute::{check_interrupts, Call};
use crate::errors::OrRaise;
use crate::server::LoadedCopy;
use crate::{gucs, registry};

fn embed_texts(texts: &[&str], model: Option<&str>) -> Vec<Vec<f32>> {
    Call::new(model).dense(texts, TextRole::Passage).or_raise()
}

fn embed_one(input: &str, model: Option<&str>) -> Vec<f32> {
    embed_texts(&[input], model).remove(0)
}

#[pg_extern(stable, strict, parallel_safe, name = "bge_embed")]
fn bge_embed(input: &str) -> Vec<f32> {
    embed_one(input, None)
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_embed")]
fn bge_embed_model(input: &str, model: &str) -> Vec<f32> {
    embed_one(input, Some(model))
}

/// One batched pass over the array; NULL elements give NULL rows; rows come in input order.
#[pg_extern(stable, parallel_safe, name = "bge_embed")]
fn bge_embed_array(
    inputs: Option<Array<'_, &str>>,
    model: default!(Option<&str>, "NULL"),
) -> SetOfIterator<'static, Option<Vec<f32>>> {
    let Some(inputs) = inputs else { return SetOfIterator::new(Vec::new()) };
    SetOfIterator::new(per_element(&inputs, |present| embed_texts(present, model)))
}

/// `compute` over an array's non-NULL elements in one call (none when all are NULL), its results
/// put back in the elements' places; NULL elements give None.
pub(crate) fn per_element<T>(inputs: &Array<'_, &str>, compute: impl FnOnce(&[&str]) -> Vec<T>) -> Vec<Option<T>> {
    let items: Vec<Option<&str>> = inputs.iter().collect();
    let present: Vec<&str> = items.iter().flatten().copied().collect();
    let mut results = if present.is_empty() { Vec::new() } else { compute(&present) }.into_iter();
    items.iter().map(|item| item.and_then(|_| results.next())).collect()
}

/// With the model's query prompt (engine: ModelSpec::query_prompt).
fn embed_query(input: &str, model: Option<&str>) -> Vec<f32> {
    Call::new(model).dense(&[input], TextRole::Query).or_raise().remove(0)
}

#[pg_extern(stable, strict, parallel_safe, name = "bge_embed_query")]
fn bge_embed_query(input: &str) -> Vec<f32> {
    embed_query(input, None)
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_embed_query")]
fn bge_embed_query_model(input: &str, model: &str) -> Vec<f32> {
    embed_query(input, Some(model))
}

/// With the model's query template around another task instruction (for decoder embedders
/// `<instruct>{task}\n<query>`; for encoders the instruction is the prompt).
#[pg_extern(immutable, strict, parallel_safe, name = "bge_embed_query")]
fn bge_embed_query_task(input: &str, model: &str, instruction: &str) -> Vec<f32> {
    Call::new(Some(model)).dense_for_task(&[input], instruction).or_raise().remove(0)
}

fn token_count(input: &str, model: Option<&str>, role: TextRole) -> i32 {
    let call = Call::new(model);
    call.frontend().count_tokens(input, role, call.opts.truncate, &mut check_interrupts).or_raise() as i32
}

#[pg_extern(stable, strict, parallel_safe, name = "bge_token_count")]
fn bge_token_count(input: &str) -> i32 {
    token_count(input, None, TextRole::Passage)
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_token_count")]
fn bge_token_count_model(input: &str, model: &str) -> i32 {
    token_count(input, Some(model), TextRole::Passage)
}

#[pg_extern(stable, strict, parallel_safe, name = "bge_token_count_query")]
fn bge_token_count_query(input: &str) -> i32 {
    token_count(input, None, TextRole::Query)
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_token_count_query")]
fn bge_token_count_query_model(input: &str, model: &str) -> i32 {
    token_count(input, Some(model), TextRole::Query)
}

fn token_ids(input: &str, model: Option<&str>) -> Vec<i32> {
    let call = Call::new(model);
    let enc = call.frontend().encode(input, TextRole::Passage, call.opts.truncate, &mut check_interrupts).or_raise();
    enc.ids.into_iter().map(|id| id as i32).collect()
}

#[pg_extern(stable, strict, parallel_safe, name = "bge_tokenize")]
fn bge_tokenize(input: &str) -> Vec<i32> {
    token_ids(input, None)
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_tokenize")]
fn bge_tokenize_model(input: &str, model: &str) -> Vec<i32> {
    token_ids(input, Some(model))
}

/// One row of bge_models().
struct ModelRow {
    name: String,
    kind: Option<String>,
    architecture: Option<String>,
    dimensions: Option<i32>,
    max_tokens: Option<i32>,
    pooling: Option<String>,
    normalize: Option<bool>,
    device: Option<String>,
    isa: Option<String>,
    precision: Option<String>,
    loaded: bool,
    load_ms: Option<f64>,
    error: Option<String>,
}

fn model_rows() -> Vec<ModelRow> {
    let server_models = crate::server::client::active().then(crate::server::client::loaded_models);
    registry::with_store(&gucs::model_dir(), |store| {
        let names = store.installed().or_raise();
        names
            .into_iter()
            .map(|name| {
                // The copy bge_embed would use: the model server's, or this backend's.
                let copy = match &server_models {
                    Some(copies) => registry::server_copy(copies, store.dir(), &name).cloned(),
                    None => registry::loaded_copy(store, &name).map(|m| LoadedCopy::of(&m)),
                };
                let spec = ModelSpec::load(&name, &store.dir().join(&name));
                let device = copy.as_ref().map(|c| c.device.clone()).unwrap_or_else(|| registry::device_name().into());
                let (isa, precision) = match &copy {
                    Some(c) => (c.isa.clone(), c.precision.clone()),
                    None => {
                        let (isa, precision) = registry::planned_compute();
                        (isa.map(str::to_string), precision.to_string())
                    }
                };
                match spec {
                    Ok(s) => {
                        let embedder = s.kind == ModelKind::Embedder;
                        ModelRow {
                            name,
                            kind: Some(s.kind.name().into()),
                            architecture: Some(s.architecture.clone()),
                            // A reranker gives one score per pair: no vector, no pooling.
                            dimensions: embedder.then(|| s.dimensions() as i32),
                            max_tokens: Some(s.max_seq_length as i32),
                            pooling: embedder.then(|| s.pooling.describe()),
                            normalize: embedder.then_some(s.normalize),
                            device: Some(device),
                            isa,
                            precision: Some(precision),
                            loaded: copy.is_some(),
                            load_ms: copy.map(|c| c.load_ms),
                            error: None,
                        }
                    }
                    Err(e) => ModelRow {
                        name,
                        kind: None,
                        architecture: None,
                        dimensions: None,
                        max_tokens: None,
                        pooling: None,
                        normalize: None,
                        device: None,
                        isa: None,
                        precision: None,
                        loaded: false,
                        load_ms: None,
                        error: Some(crate::errors::for_caller(e.to_string())),
                    },
                }
            })
            .collect()
    })
}

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe, name = "bge_models")]
fn bge_models_with_kind() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(kind, Option<String>),
        name!(architecture, Option<String>),
        name!(dimensions, Option<i32>),
        name!(max_tokens, Option<i32>),
        name!(pooling, Option<String>),
        name!(normalize, Option<bool>),
        name!(device, Option<String>),
        name!(isa, Option<String>),
        name!(precision, Option<String>),
        name!(loaded, bool),
        name!(load_ms, Option<f64>),
        name!(error, Option<String>),
    ),
> {
    TableIterator::new(model_rows().into_iter().map(|r| {
        (r.name, r.kind, r.architecture, r.dimensions, r.max_tokens, r.pooling, r.normalize, r.device, r.isa, r.precision, r.loaded, r.load_ms, r.error)
    }))
}

/// Release 0.1.0's bge_models() (without `kind`): the C symbol (bge_models_wrapper) its SQL
/// names, which no SQL of this release creates.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn bge_models() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(architecture, Option<String>),
        name!(dimensions, Option<i32>),
        name!(max_tokens, Option<i32>),
        name!(pooling, Option<String>),
        name!(normalize, Option<bool>),
        name!(device, Option<String>),
        name!(isa, Option<String>),
        name!(precision, Option<String>),
        name!(loaded, bool),
        name!(load_ms, Option<f64>),
        name!(error, Option<String>),
    ),
> {
    TableIterator::new(model_rows().into_iter().map(|r| {
        (r.name, r.architecture, r.dimensions, r.max_tokens, r.pooling, r.normalize, r.device, r.isa, r.precision, r.loaded, r.load_ms, r.error)
    }))
}
