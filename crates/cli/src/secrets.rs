//! Secrets that are generated on first start when not configured, and kept in the data dir.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// The configured value, or the one stored in `data_dir/name`, or a new one stored there.
pub fn configured_or_stored(configured: Option<String>, data_dir: &Path, name: &str) -> anyhow::Result<String> {
    if let Some(value) = configured {
        return Ok(value);
    }
    let path = data_dir.join(name);
    if let Ok(stored) = std::fs::read_to_string(&path) {
        let stored = stored.trim().to_owned();
        if !stored.is_empty() {
            tracing::info!(path = %path.display(), "using the {name} stored in the data dir");
            return Ok(stored);
        }
    }
    let value = stampede_engine::ids::random_token(48);
    write_private(&path, &value).with_context(|| format!("storing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated a new {name}; it is stored in this file");
    Ok(value)
}

fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(value.as_bytes())?;
    file.sync_all()
}
