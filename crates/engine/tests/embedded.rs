//! The backend conformance suite against the embedded memory + SQLite backend, one fresh data
//! directory per test.

use std::path::Path;
use std::sync::Arc;

use stampede_engine::conformance::Harness;
use stampede_engine::{backend_conformance, Backend, Embedded, EmbeddedOptions};
use tempfile::TempDir;

struct EmbeddedHarness {
    backend: Arc<Embedded>,
    // Dropped last: the directory outlives the backend that writes into it.
    dir: TempDir,
}

impl EmbeddedHarness {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = open(dir.path()).await;
        Self { backend, dir }
    }
}

async fn open(data_dir: &Path) -> Arc<Embedded> {
    let options = EmbeddedOptions { data_dir: data_dir.to_path_buf(), synchronous_full: false };
    Embedded::open(options).await.expect("open embedded backend")
}

impl Harness for EmbeddedHarness {
    async fn backend(&self) -> Arc<dyn Backend> {
        self.backend.clone()
    }

    async fn restart(&mut self) {
        self.backend.shutdown().await;
        self.backend = open(self.dir.path()).await;
    }
}

backend_conformance!(EmbeddedHarness::start);
