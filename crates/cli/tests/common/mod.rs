//! Black-box harness: runs the real `stampede` binary on port 0 and talks to it over HTTP.
#![allow(dead_code, unused_imports)]

mod api;
mod pool;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use tokio::process::{Child, Command};

pub use api::{count, leading_zero_bits, now_secs, parse_rfc3339, rfc3339_after, solve_pow, Api, Reply};
pub use pool::for_each_concurrent;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const READY_PREFIX: &str = "listening on ";

/// One running server process plus the data dir it owns across restarts.
pub struct Server {
    child: Child,
    api: Api,
    data_dir: PathBuf,
    logs: TempDir,
    generation: u32,
    /// Extra environment for every process of this server, restarts included.
    env: Vec<(String, String)>,
    _data: Option<TempDir>,
}

impl Server {
    /// Starts a server on a fresh temporary data dir.
    pub async fn start() -> Server {
        let data = TempDir::new().expect("create temp data dir");
        let data_dir = data.path().to_path_buf();
        let mut server = Server::start_in(&data_dir).await;
        server._data = Some(data);
        server
    }

    /// Starts a server on a caller-owned data dir.
    pub async fn start_in(data_dir: &Path) -> Server {
        let api = Api::new(unique("secret"), unique("admin"));
        let logs = TempDir::new().expect("create temp log dir");
        let (child, addr) = spawn(data_dir, &api, logs.path(), 0).await;
        Server {
            child,
            api: api.with_base(format!("http://{addr}")),
            data_dir: data_dir.to_path_buf(),
            logs,
            generation: 0,
            env: Vec::new(),
            _data: None,
        }
    }

    /// Starts a server on a fresh temporary data dir with `env` on top of the test settings
    /// (for example `STAMPEDE_MAX_STREAMS`); restarts keep it.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Server {
        let data = TempDir::new().expect("create temp data dir");
        let api = Api::new(unique("secret"), unique("admin"));
        let logs = TempDir::new().expect("create temp log dir");
        let (child, addr) = spawn_with(data.path(), &api, logs.path(), 0, env).await;
        Server {
            child,
            api: api.with_base(format!("http://{addr}")),
            data_dir: data.path().to_path_buf(),
            logs,
            generation: 0,
            env: env.iter().map(|&(name, value)| (name.to_string(), value.to_string())).collect(),
            _data: Some(data),
        }
    }

    /// The HTTP client bound to the current process; fetch it again after `restart`.
    pub fn api(&self) -> &Api {
        &self.api
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// SIGKILL (`Child::kill` is SIGKILL on unix) and reap the process.
    pub async fn kill9(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM (through `kill(1)`, to avoid a libc dependency) and wait for a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("server still running").to_string();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let exited = tokio::time::timeout(STARTUP_TIMEOUT, self.child.wait()).await;
        exited.expect("server did not exit after SIGTERM").expect("wait for server")
    }

    /// Kills the process if it still runs, then starts a new one on the same data dir.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.generation += 1;
        let env: Vec<(&str, &str)> = self.env.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
        let (child, addr) = spawn_with(&self.data_dir, &self.api, self.logs.path(), self.generation, &env).await;
        self.child = child;
        self.api = self.api.with_base(format!("http://{addr}"));
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stderr_tail(&self) -> String {
        let path = self.logs.path().join(format!("stderr-{}.log", self.generation));
        tail(&path, 40)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- stampede stderr (last lines) ---\n{}", self.stderr_tail());
        }
        let _ = self.child.start_kill();
    }
}

async fn spawn(data_dir: &Path, api: &Api, logs: &Path, generation: u32) -> (Child, String) {
    spawn_with(data_dir, api, logs, generation, &[]).await
}

/// Spawns `stampede serve` on a free port with the test secrets and `env` on top, and waits
/// for its `listening on` line; returns the process and its address.
pub(crate) async fn spawn_with(
    data_dir: &Path,
    api: &Api,
    logs: &Path,
    generation: u32,
    env: &[(&str, &str)],
) -> (Child, String) {
    let stdout_path = logs.join(format!("stdout-{generation}.log"));
    let stderr_path = logs.join(format!("stderr-{generation}.log"));
    let stdout = std::fs::File::create(&stdout_path).expect("create stdout log");
    let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        // Limits off unless `env` turns them on: most tests send everything from one address.
        .env("STAMPEDE_LIMITS", "off")
        .envs(env.iter().copied())
        .env("STAMPEDE_JWT_SECRET", api.secret())
        .env("STAMPEDE_ADMIN_TOKEN", &api.admin_token)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn stampede binary");
    let addr = wait_for_listening(&mut child, &stdout_path, &stderr_path).await;
    (child, addr)
}

/// Polls the stdout log for the readiness line; fails fast when the process exits.
async fn wait_for_listening(child: &mut Child, stdout: &Path, stderr: &Path) -> String {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(addr) = listening_addr(stdout) {
            return addr;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("stampede exited before listening ({status}); stderr:\n{}", tail(stderr, 40));
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            panic!("stampede did not print `listening on` within {STARTUP_TIMEOUT:?}; stderr:\n{}", tail(stderr, 40));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn listening_addr(stdout: &Path) -> Option<String> {
    let text = std::fs::read_to_string(stdout).ok()?;
    let line = text.lines().find(|line| line.contains(READY_PREFIX))?;
    let (_, rest) = line.split_once(READY_PREFIX)?;
    let addr = rest.split_whitespace().next()?;
    Some(addr.trim_start_matches("http://").to_string())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A value unique within this machine, good enough for secrets and keys in tests.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// Polls `check` every 100 ms until it returns `Some` or `limit` has passed.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
