//! pg_bge: BGE text embeddings inside PostgreSQL. This crate is the only code that touches
//! pgrx; it parses arguments, reads settings and maps errors. All math lives in bge-engine.
use pgrx::prelude::*;

mod colbert;
mod errors;
mod functions;
mod gucs;
mod operators;
mod registry;
mod sparse;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/pg_bge.sql", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Settings only: models, threads and any device state are created lazily in the backend
    // that first needs them, never in the postmaster.
    gucs::init();
}

/// Required by `cargo pgrx test`; the SQL-level tests live in tests/pg_regress.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
