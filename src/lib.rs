//! pg_bge: BGE text embeddings inside PostgreSQL. This crate is the only code that touches
//! pgrx; it parses arguments, reads settings and maps errors. All math lives in bge-engine.
use pgrx::prelude::*;

mod batch;
mod chunk;
mod colbert;
mod compute;
mod errors;
mod functions;
mod gucs;
mod operators;
mod planner;
mod registry;
mod rerank;
mod server;
mod sparse;
mod vectorize;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/pg_bge.sql", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // First: no Rust backtrace ever reaches a client (errors::install_panic_hook).
    errors::install_panic_hook();
    // Settings, the planner hook and (when preloaded) the model server's shared memory and
    // worker: models, threads and any device state are created lazily in the process that
    // first needs them, never in the postmaster.
    // SAFETY: a plain read of a postmaster flag.
    let preloading = unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress };
    gucs::init(preloading);
    planner::init();
    batch::init();
    if preloading {
        server::init();
        vectorize::worker::register_launcher();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// `cargo pgrx test` harness: the test models are copied to a directory the server's user can
/// read (the checkout may be private to root), and bge.model_dir points there.
#[cfg(test)]
pub mod pg_test {
    macro_rules! model_dir {
        () => {
            "/tmp/pg_bge_pg_test_models"
        };
    }
    const MODEL_DIR: &str = model_dir!();

    pub fn setup(_options: Vec<&str>) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let dest = std::path::Path::new(MODEL_DIR);
            let _ = std::fs::remove_dir_all(dest);
            for (src, name) in [(root.join("models/all-MiniLM-L6-v2"), "all-MiniLM-L6-v2"), (root.join("engine/tests/models/tiny-bge-m3"), "tiny-bge-m3")] {
                assert!(src.join("config.json").is_file(), "{} missing: run scripts/setup.sh first", src.display());
                copy_dir(&src, &dest.join(name));
            }
        });
    }

    fn copy_dir(src: &std::path::Path, dest: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dest).unwrap();
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755)).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let path = entry.unwrap().path();
            let target = dest.join(path.file_name().unwrap());
            if path.is_dir() {
                copy_dir(&path, &target);
            } else {
                std::fs::copy(&path, &target).unwrap();
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
    }

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![concat!("bge.model_dir = '", model_dir!(), "'")]
    }
}
