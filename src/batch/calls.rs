//! Which SQL functions the batching node computes, and how: one engine call (or model-server
//! request) for many rows, and each row's value made into the Datum the function returns.
use bge_engine::heads::colbert::ColbertVectors;
use bge_engine::heads::sparse::SparseWeights;
use bge_engine::TextRole;
use pgrx::pg_catalog::pg_proc::PgProc;
use pgrx::prelude::*;

use crate::compute::Call;

/// pg_language's OID of C (ClanguageId).
const C_LANGUAGE: pg_sys::Oid = pg_sys::Oid::from_u32(13);

/// A per-row pg_bge function the node batches, told apart by the C symbol of its pg_proc row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// bge_embed(text [, model])
    Passage,
    /// bge_embed_query(text [, model])
    Query,
    /// bge_embed_query(text, model, instruction)
    QueryTask,
    /// bge_embed_sparse(text [, model])
    SparseJson,
    /// bge_sparse_text(text [, model])
    SparseText,
    /// bge_embed_colbert(text [, model])
    Colbert,
    /// bge_rerank(query, passage, model, normalize)
    Rerank,
}

impl Kind {
    /// The kind of function `funcid`, if it is one of pg_bge's per-row functions with the
    /// arguments and result this release gives its C symbol (a C function pointing at one of
    /// its symbols with other types would be someone else's), and without a SET clause or
    /// SECURITY DEFINER (the node calls the engine directly, outside the function's settings).
    pub fn of(funcid: pg_sys::Oid, arg_types: &[pg_sys::Oid]) -> Option<Kind> {
        use pg_sys::{BOOLOID, FLOAT4ARRAYOID, FLOAT8OID, JSONBOID, TEXTOID};
        let proc = PgProc::new(funcid)?;
        if proc.prolang() != C_LANGUAGE || proc.proretset() || !proc.proisstrict() || proc.prosecdef() || proc.proconfig().is_some() {
            return None;
        }
        let library = proc.probin()?;
        if !(library == "$libdir/pg_bge" || library.ends_with("/pg_bge") || library.ends_with("/pg_bge.so")) {
            return None;
        }
        let (kind, args, result): (Kind, &[pg_sys::Oid], pg_sys::Oid) = match proc.prosrc().as_str() {
            "bge_embed_wrapper" => (Kind::Passage, &[TEXTOID], FLOAT4ARRAYOID),
            "bge_embed_model_wrapper" => (Kind::Passage, &[TEXTOID, TEXTOID], FLOAT4ARRAYOID),
            "bge_embed_query_wrapper" => (Kind::Query, &[TEXTOID], FLOAT4ARRAYOID),
            "bge_embed_query_model_wrapper" => (Kind::Query, &[TEXTOID, TEXTOID], FLOAT4ARRAYOID),
            "bge_embed_query_task_wrapper" => (Kind::QueryTask, &[TEXTOID, TEXTOID, TEXTOID], FLOAT4ARRAYOID),
            "bge_embed_sparse_wrapper" => (Kind::SparseJson, &[TEXTOID], JSONBOID),
            "bge_embed_sparse_model_wrapper" => (Kind::SparseJson, &[TEXTOID, TEXTOID], JSONBOID),
            "bge_sparse_text_wrapper" => (Kind::SparseText, &[TEXTOID], TEXTOID),
            "bge_sparse_text_model_wrapper" => (Kind::SparseText, &[TEXTOID, TEXTOID], TEXTOID),
            "bge_embed_colbert_wrapper" => (Kind::Colbert, &[TEXTOID], FLOAT4ARRAYOID),
            "bge_embed_colbert_model_wrapper" => (Kind::Colbert, &[TEXTOID, TEXTOID], FLOAT4ARRAYOID),
            "bge_rerank_wrapper" => (Kind::Rerank, &[TEXTOID, TEXTOID, TEXTOID, BOOLOID], FLOAT8OID),
            _ => return None,
        };
        (arg_types == args && proc.prorettype() == result).then_some(kind)
    }

    /// The argument that varies from row to row in one engine call (the others group rows).
    pub fn text_arg(self) -> usize {
        match self {
            Kind::Rerank => 1,
            _ => 0,
        }
    }
}

/// An argument other than the batched text: rows with equal ones share an engine call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyArg {
    Text(String),
    Bool(bool),
}

/// One row's result before it becomes a Datum.
pub enum Computed {
    Dense(Vec<f32>),
    Sparse(SparseWeights),
    Colbert(ColbertVectors),
    Score(f32),
}

/// A group of rows' results in one engine call, or the engine's error (then the node computes
/// those rows one at a time, so the error is raised at the row that causes it).
pub fn compute(kind: Kind, key: &[KeyArg], texts: &[&str]) -> (Call, bge_engine::Result<Vec<Computed>>) {
    let text = |i: usize| match key.get(i) {
        Some(KeyArg::Text(s)) => Some(s.as_str()),
        _ => None,
    };
    let dense = |r: bge_engine::Result<Vec<Vec<f32>>>| r.map(|v| v.into_iter().map(Computed::Dense).collect());
    match kind {
        Kind::Passage | Kind::Query | Kind::SparseJson | Kind::SparseText | Kind::Colbert => {
            let call = Call::new(text(0));
            let result = match kind {
                Kind::Passage => dense(call.dense(texts, TextRole::Passage)),
                Kind::Query => dense(call.dense(texts, TextRole::Query)),
                Kind::Colbert => call.colbert(texts).map(|v| v.into_iter().map(Computed::Colbert).collect()),
                _ => call.sparse(texts).map(|v| v.into_iter().map(Computed::Sparse).collect()),
            };
            (call, result)
        }
        Kind::QueryTask => {
            let call = Call::new(text(0));
            let result = dense(call.dense_for_task(texts, text(1).unwrap_or_default()));
            (call, result)
        }
        Kind::Rerank => {
            let call = Call::new(text(1));
            let result = call.rerank(text(0).unwrap_or_default(), texts).map(|v| v.into_iter().map(Computed::Score).collect());
            (call, result)
        }
    }
}

/// The Datum the function returns for `value`, palloc'd in the current memory context.
pub fn datum(kind: Kind, key: &[KeyArg], call: &Call, value: Computed) -> pg_sys::Datum {
    let datum = match value {
        Computed::Dense(v) => v.into_datum(),
        Computed::Sparse(w) if kind == Kind::SparseText => crate::sparse::sparsevec_of(call, &w).into_datum(),
        Computed::Sparse(w) => crate::sparse::jsonb_of(call, &w).into_datum(),
        Computed::Colbert(v) => Some(crate::colbert::RealMatrix::new(&v).0),
        Computed::Score(logit) => {
            let normalize = matches!(key.get(2), Some(KeyArg::Bool(true)));
            crate::rerank::scored(logit, normalize).into_datum()
        }
    };
    datum.expect("a non-NULL result")
}
