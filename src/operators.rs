//! Distance functions on real[] behind the operators <=>, <#> and <-> (sql/pg_bge.sql).
//! Accumulated in f64; the result is double precision, as pgvector's.
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::raise_with;

fn values<'a>(a: &'a Array<'_, f32>, side: &str) -> &'a [f32] {
    if a.contains_nulls() {
        raise_with(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{side} vector contains NULL elements"),
            "Embeddings have no NULL elements; remove them or use COALESCE on the elements.",
        );
    }
    a.as_slice().unwrap_or_else(|e| raise_with(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, format!("{side} vector is unreadable: {e:?}"), "Pass a real[]."))
}

fn pair<'a>(a: &'a Array<'_, f32>, b: &'a Array<'_, f32>) -> (&'a [f32], &'a [f32]) {
    let (x, y) = (values(a, "left"), values(b, "right"));
    if x.len() != y.len() {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("vectors have different lengths: {} and {}", x.len(), y.len()),
            "Compare embeddings of the same model; their lengths are the model's dimensions (see bge_models()).",
        );
    }
    (x, y)
}

fn dot(x: &[f32], y: &[f32]) -> f64 {
    x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum()
}

#[pg_extern(immutable, strict, parallel_safe)]
fn bge_cosine_distance(a: Array<'_, f32>, b: Array<'_, f32>) -> f64 {
    let (x, y) = pair(&a, &b);
    1.0 - dot(x, y) / (dot(x, x).sqrt() * dot(y, y).sqrt())
}

#[pg_extern(immutable, strict, parallel_safe)]
fn bge_negative_inner_product(a: Array<'_, f32>, b: Array<'_, f32>) -> f64 {
    let (x, y) = pair(&a, &b);
    -dot(x, y)
}

#[pg_extern(immutable, strict, parallel_safe)]
fn bge_l2_distance(a: Array<'_, f32>, b: Array<'_, f32>) -> f64 {
    let (x, y) = pair(&a, &b);
    x.iter().zip(y).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>().sqrt()
}
