//! The operators <=>, <#> and <-> on real[] (sql/pg_bge.sql): argument checks and errors; the
//! math is bge_engine::distance. The result is double precision, as pgvector's. Embeddings are
//! one-dimensional arrays; anything else, NULL elements, different lengths, and the cosine
//! distance of a zero vector (undefined) are errors.
use std::ptr::NonNull;

use bge_engine::distance;

use pgrx::array::RawArray;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::compute::check_interrupts;
use crate::errors::raise_with;

/// A float4[] argument's dimensions and, unless it holds NULL elements, its values in order.
pub(crate) fn float4_array(array: Array<'_, f32>) -> (Vec<i32>, Option<&[f32]>) {
    // SAFETY: a detoasted float4[] argument, alive for this call; read-only below.
    let mut raw = unsafe { RawArray::from_array(array) }.expect("array argument");
    let dims = raw.dims().to_vec();
    // SAFETY: as above.
    if unsafe { raw.any_nulls() } {
        return (dims, None);
    }
    let data: NonNull<[f32]> = raw.data();
    // SAFETY: no NULLs, so the data are len() consecutive float4 values.
    (dims, Some(unsafe { data.as_ref() }))
}

fn values<'a>(a: Array<'a, f32>, side: &str) -> &'a [f32] {
    let (dims, values) = float4_array(a);
    if dims.len() > 1 {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("{side} vector is a {}-dimensional array", dims.len()),
            "Embeddings are one-dimensional real[]; for ColBERT's 2-D arrays use bge_maxsim.",
        );
    }
    values.unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{side} vector contains NULL elements"),
            "Embeddings have no NULL elements; remove them or use COALESCE on the elements.",
        )
    })
}

fn pair<'a>(a: Array<'a, f32>, b: Array<'a, f32>) -> (&'a [f32], &'a [f32]) {
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

#[pg_extern(immutable, strict, parallel_safe)]
fn bge_cosine_distance(a: Array<'_, f32>, b: Array<'_, f32>) -> f64 {
    let (x, y) = pair(a, b);
    distance::cosine_distance(x, y, &mut check_interrupts).unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            "cosine distance is undefined for a zero vector".into(),
            "Embeddings are never zero vectors; filter rows with a zero vector out, or rank them with <#> or <->.",
        )
    })
}

#[pg_extern(immutable, strict, parallel_safe)]
fn bge_negative_inner_product(a: Array<'_, f32>, b: Array<'_, f32>) -> f64 {
    let (x, y) = pair(a, b);
    distance::negative_inner_product(x, y, &mut check_interrupts)
}

#[pg_extern(immutable, strict, parallel_safe)]
fn bge_l2_distance(a: Array<'_, f32>, b: Array<'_, f32>) -> f64 {
    let (x, y) = pair(a, b);
    distance::l2_distance(x, y, &mut check_interrupts)
}
