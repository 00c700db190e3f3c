//! BGE-M3 ColBERT vectors in SQL (a 2-D real[], one row per token) and late-interaction
//! scoring of two such arrays. The math lives in bge_engine::colbert.
use bge_engine::heads::colbert::{maxsim, ColbertVectors};
use pgrx::callconv::{BoxRet, FcInfo};
use pgrx::pgrx_sql_entity_graph::metadata::{ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use crate::errors::{raise_with, OrRaise};
use crate::compute::check_interrupts;
use crate::operators::float4_array;

/// A 2-D real[] ([rows, cols], lower bounds 1) returned to SQL; its SQL type is Vec<f32>'s
/// (real[]), which pgrx only builds one-dimensional.
pub(crate) struct RealMatrix(pub(crate) pg_sys::Datum);

impl RealMatrix {
    pub(crate) fn new(v: &ColbertVectors) -> RealMatrix {
        let mut datums: Vec<pg_sys::Datum> = v.data.iter().map(|x| x.into_datum().expect("float4 datum")).collect();
        let mut dims = [v.rows() as i32, v.dim as i32];
        let mut lower_bounds = [1, 1];
        // SAFETY: datums hold rows × cols float4 values (by value); dims and bounds describe
        // them; the array is palloc'd in the function's memory context.
        let array = unsafe {
            pg_sys::construct_md_array(
                datums.as_mut_ptr(),
                std::ptr::null_mut(),
                2,
                dims.as_mut_ptr(),
                lower_bounds.as_mut_ptr(),
                pg_sys::FLOAT4OID,
                4,
                true,
                pg_sys::TYPALIGN_INT as std::ffi::c_char,
            )
        };
        RealMatrix(pg_sys::Datum::from(array))
    }
}

unsafe impl SqlTranslatable for RealMatrix {
    const TYPE_IDENT: &'static str = <Vec<f32> as SqlTranslatable>::TYPE_IDENT;
    const TYPE_ORIGIN: TypeOrigin = <Vec<f32> as SqlTranslatable>::TYPE_ORIGIN;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = <Vec<f32> as SqlTranslatable>::ARGUMENT_SQL;
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = <Vec<f32> as SqlTranslatable>::RETURN_SQL;
}

unsafe impl BoxRet for RealMatrix {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        // SAFETY: a float4[] datum built for this call's result.
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

fn colbert(input: &str, model: Option<&str>) -> RealMatrix {
    RealMatrix::new(&crate::compute::Call::new(model).colbert(&[input]).or_raise().remove(0))
}

#[pg_extern(stable, strict, parallel_safe, name = "bge_embed_colbert")]
fn bge_embed_colbert(input: &str) -> RealMatrix {
    colbert(input, None)
}

#[pg_extern(immutable, strict, parallel_safe, name = "bge_embed_colbert")]
fn bge_embed_colbert_model(input: &str, model: &str) -> RealMatrix {
    colbert(input, Some(model))
}

/// The vectors of a real[]: a 2-D array is [vectors, dimensions]; a 1-D array is one vector.
fn vectors<'a>(array: Array<'a, f32>, side: &str) -> (&'a [f32], usize) {
    let (dims, values) = float4_array(array);
    let dim = match dims.as_slice() {
        [n] | [_, n] if *n > 0 => *n as usize,
        [] => raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("{side} array has no vectors"),
            "Pass the output of bge_embed_colbert: a 2-D real[] with one row per token.",
        ),
        _ => raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("{side} array has {} dimensions", dims.len()),
            "Pass the output of bge_embed_colbert: a 2-D real[] with one row per token.",
        ),
    };
    let values = values.unwrap_or_else(|| {
        raise_with(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{side} array contains NULL elements"),
            "ColBERT vectors have no NULL elements.",
        )
    });
    (values, dim)
}

/// Late-interaction (MaxSim) score, averaged over the query's vectors (see
/// bge_engine::heads::colbert::maxsim).
#[pg_extern(immutable, strict, parallel_safe)]
fn bge_maxsim(query: Array<'_, f32>, document: Array<'_, f32>) -> f64 {
    let (q, q_dim) = vectors(query, "query");
    let (d, d_dim) = vectors(document, "document");
    if q_dim != d_dim {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("query vectors have {q_dim} dimensions and document vectors {d_dim}"),
            "Score ColBERT vectors of the same model (bge_embed_colbert with the same model on both sides).",
        );
    }
    maxsim(q, d, q_dim, &mut check_interrupts)
}
