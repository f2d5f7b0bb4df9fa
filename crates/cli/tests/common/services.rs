//! Scale-out helpers: a Redis and a Postgres of the test's own (so it can crash and restart
//! them), databases on the shared test Postgres, and sets of `stampede serve` replicas sharing
//! one Redis + one Postgres.
//!
//! Nothing here passes silently: a missing service variable or binary is a panic that says what
//! to set. Every process started here is killed on drop, also when the test fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{tail, unique, wait_for_listening, Api};

const REDIS_START_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 5;

/// The value of a service variable set by `scripts/test`; panics without it.
pub fn service(variable: &str) -> String {
    std::env::var(variable).ok().filter(|value| !value.is_empty()).unwrap_or_else(|| {
        panic!("{variable} is not set: run the tests with scripts/test, which starts private Redis and Postgres")
    })
}

/// A port nothing listens on right now (another process may still take it: callers retry).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A Redis key namespace no other test run uses.
pub fn fresh_namespace(prefix: &str) -> String {
    unique(prefix)
}

/// Creates database `name` through the superuser URL `admin_url` (`.../postgres`); returns the
/// new database's URL.
pub async fn create_database(admin_url: &str, name: &str) -> String {
    let mut conn = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|error| panic!("connect to postgres at {admin_url}: {error}"));
    conn.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
    conn.close().await.ok();
    let (base, _) = admin_url.rsplit_once('/').expect("postgres url with a database path");
    format!("{base}/{name}")
}

/// A fresh database on the shared test Postgres (`STAMPEDE_TEST_POSTGRES_URL`).
pub async fn fresh_shared_database() -> String {
    let name = format!("stampede_bb_{}", unique("db").replace('-', "_"));
    create_database(&service("STAMPEDE_TEST_POSTGRES_URL"), &name).await
}

/// Where a set of replicas keeps its state.
#[derive(Debug, Clone)]
pub struct Backends {
    pub redis_url: String,
    pub postgres_url: String,
    pub namespace: String,
}

impl Backends {
    /// The shared test Redis, a fresh database on the shared test Postgres, a fresh namespace.
    pub async fn shared() -> Backends {
        Backends {
            redis_url: service("STAMPEDE_TEST_REDIS_URL"),
            postgres_url: fresh_shared_database().await,
            namespace: fresh_namespace("bb"),
        }
    }

    /// The scale-out environment of `stampede serve` and `stampede reconcile`.
    pub fn env(&self) -> [(&'static str, &str); 3] {
        [
            ("STAMPEDE_REDIS", self.redis_url.as_str()),
            ("STAMPEDE_POSTGRES", self.postgres_url.as_str()),
            ("STAMPEDE_REDIS_NAMESPACE", self.namespace.as_str()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A redis-server of the test's own: AOF with fsync always, so `kill -9` loses nothing it
/// acknowledged and `restart` replays it.
pub struct OwnRedis {
    server: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    generation: u32,
}

impl OwnRedis {
    /// Starts redis-server (`STAMPEDE_TEST_REDIS_SERVER`, else `redis-server` on PATH) on a free
    /// port with its data in `dir`, and waits until it answers PING.
    pub async fn start(dir: &Path) -> OwnRedis {
        let server = redis_server_binary();
        let mut redis = OwnRedis { server, dir: dir.to_path_buf(), port: 0, child: None, generation: 0 };
        for attempt in 1..=START_ATTEMPTS {
            redis.port = free_port();
            if redis.spawn().await {
                return redis;
            }
            eprintln!("redis-server did not start on port {} (attempt {attempt}), retrying", redis.port);
        }
        panic!("redis-server failed to start {START_ATTEMPTS} times; log:\n{}", redis.log_tail());
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Kills it if it still runs, then starts it again on the same port and dir; returns once it
    /// answers PING, that is once the AOF is replayed.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.generation += 1;
        // The old process is reaped, but give a lingering socket a few tries.
        for _ in 0..START_ATTEMPTS {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("redis-server did not restart on port {}; log:\n{}", self.port, self.log_tail());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn log_tail(&self) -> String {
        tail(&self.log_path(), 30)
    }

    /// Spawns on `self.port`; false when the process died before answering (port taken).
    async fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("redis log");
        let log_err = log.try_clone().expect("clone log handle");
        let child = Command::new(&self.server)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--dir"])
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"])
            .args(["--dbfilename", &format!("dump-{}.rdb", self.port)])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", self.server.display()));
        let pid = child.id().expect("redis-server pid");
        self.child = Some(child);
        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        loop {
            if ping(self.port, pid).await {
                return true;
            }
            let child = self.child.as_mut().expect("child just spawned");
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return false;
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server did not answer PING on {} within {REDIS_START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- own redis log (last lines) ---\n{}", self.log_tail());
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

fn redis_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STAMPEDE_TEST_REDIS_SERVER").filter(|path| !path.is_empty()) {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!("no redis-server: set STAMPEDE_TEST_REDIS_SERVER (scripts/test does) or install redis-server")
    })
}

/// True when the Redis on `port` is process `pid` (not another one that took the port first)
/// and answers PING with PONG (not LOADING: the AOF is replayed).
async fn ping(port: u16, pid: u32) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\nINFO server\r\n").await.ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            reply.extend_from_slice(&chunk[..read]);
            let text = String::from_utf8_lossy(&reply);
            if let Some((_, rest)) = text.split_once("process_id:") {
                if let Some((found, _)) = rest.split_once("\r\n") {
                    return Some(text.starts_with("+PONG") && found.trim() == pid.to_string());
                }
            }
            if !text.starts_with("+PONG") && text.contains("\r\n") {
                return Some(false); // -LOADING or another error
            }
        }
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(true)))
}

// ---------------------------------------------------------------------------------------------
// Postgres

/// A Postgres of the test's own, run through `scripts/pg-instance` (which handles running as
/// root). Its data lives in `dir`, which must be reachable by the `postgres` OS user when the
/// tests run as root (a fresh temp dir under /tmp is).
pub struct OwnPostgres {
    dir: PathBuf,
    port: u16,
}

impl OwnPostgres {
    /// A fresh temp dir for `start` that the `postgres` OS user can reach when the tests run as
    /// root: under /tmp, as a private $TMPDIR (say /root/tmp) would block it.
    pub fn temp_dir() -> TempDir {
        let base = Path::new("/tmp");
        let base = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };
        tempfile::Builder::new().prefix("stampede-pg-").tempdir_in(base).expect("create postgres temp dir")
    }

    /// `initdb` into `dir`, then start on a free port.
    pub async fn start(dir: &Path) -> OwnPostgres {
        pg_instance(&["init".as_ref(), dir.as_os_str()]).await.unwrap_or_else(|error| panic!("{error}"));
        let mut postgres = OwnPostgres { dir: dir.to_path_buf(), port: 0 };
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            postgres.port = free_port();
            match postgres.run_start().await {
                Ok(()) => return postgres,
                Err(error) => last_error = error,
            }
        }
        panic!("own postgres failed to start {START_ATTEMPTS} times: {last_error}");
    }

    /// The URL of database `db` (superuser, trust authentication).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name`; returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        create_database(&self.url("postgres"), name).await
    }

    /// Immediate shutdown (no checkpoint, crash recovery at start), then start on the same port.
    pub async fn restart(&mut self) {
        self.stop_immediate().await;
        self.run_start().await.unwrap_or_else(|error| panic!("restarting own postgres: {error}"));
    }

    /// `kill -9` of the postmaster (its backends follow).
    pub async fn kill9(&mut self) {
        pg_instance(&["kill".as_ref(), self.dir.as_os_str()]).await.unwrap_or_else(|error| panic!("{error}"));
    }

    pub async fn stop_immediate(&mut self) {
        pg_instance(&["stop".as_ref(), self.dir.as_os_str()]).await.unwrap_or_else(|error| panic!("{error}"));
    }

    /// Starts on `self.port` (again); a stopped or killed instance recovers from its WAL.
    pub async fn start_again(&mut self) {
        self.run_start().await.unwrap_or_else(|error| panic!("starting own postgres: {error}"));
    }

    async fn run_start(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        pg_instance(&["start".as_ref(), self.dir.as_os_str(), port.as_ref()]).await
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- own postgres log (last lines) ---\n{}", tail(&self.dir.join("postgres.log"), 30));
        }
        // Also after a failed or timed-out start; a no-op when nothing runs.
        let _ = std::process::Command::new(pg_instance_script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn pg_instance_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-instance")
}

/// Runs `scripts/pg-instance ARGS`; the error carries its output.
async fn pg_instance(args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let script = pg_instance_script();
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|error| panic!("run {}: {error}", script.display()));
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "scripts/pg-instance {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

// ---------------------------------------------------------------------------------------------
// Replicas

/// One `stampede serve` process in scale-out mode; its dirs outlive restarts.
struct Replica {
    child: Child,
    base: String,
    logs: TempDir,
    data: TempDir,
    generation: u32,
}

impl Replica {
    async fn start(backends: Backends, api: Api, env: Vec<(String, String)>) -> Replica {
        let logs = TempDir::new().expect("create replica log dir");
        let data = TempDir::new().expect("create replica data dir");
        let (child, base) = spawn_replica(&backends, &api, &env, logs.path(), data.path(), 0).await;
        Replica { child, base, logs, data, generation: 0 }
    }

    fn stderr_tail(&self) -> String {
        tail(&self.logs.path().join(format!("stderr-{}.log", self.generation)), 40)
    }
}

/// Resolves replica index -> current base URL; cheap to clone into load tasks, and follows
/// restarts (a restarted replica listens on a new port).
#[derive(Clone)]
pub struct Router {
    api: Api,
    bases: Arc<RwLock<Vec<String>>>,
}

impl Router {
    /// The client bound to replica `index` (modulo the number of replicas).
    pub fn api(&self, index: usize) -> Api {
        let bases = self.bases.read().unwrap_or_else(PoisonError::into_inner);
        self.api.with_base(bases[index % bases.len()].clone())
    }

    pub fn len(&self) -> usize {
        self.bases.read().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Replicas sharing one Redis + one Postgres, the same secrets and namespace.
pub struct Replicas {
    backends: Backends,
    api: Api,
    replicas: Vec<Replica>,
    bases: Arc<RwLock<Vec<String>>>,
    /// Extra environment of every replica, restarts included.
    env: Vec<(String, String)>,
}

impl Replicas {
    /// Starts `count` replicas at once (they run the migrations concurrently, as a deployment
    /// would) and waits until each listens.
    pub async fn start(count: usize, backends: &Backends) -> Replicas {
        Replicas::start_with_env(count, backends, &[]).await
    }

    /// As `start`, with `env` on top of the test settings of every replica (for example
    /// `STAMPEDE_LIMITS=on`); restarts keep it.
    pub async fn start_with_env(count: usize, backends: &Backends, env: &[(&str, &str)]) -> Replicas {
        let api = Api::new(unique("secret"), unique("admin"));
        let env: Vec<(String, String)> =
            env.iter().map(|&(name, value)| (name.to_string(), value.to_string())).collect();
        let starts: Vec<_> =
            (0..count).map(|_| tokio::spawn(Replica::start(backends.clone(), api.clone(), env.clone()))).collect();
        let mut replicas = Vec::new();
        for start in starts {
            replicas.push(start.await.expect("replica start panicked"));
        }
        let bases = Arc::new(RwLock::new(replicas.iter().map(|replica| replica.base.clone()).collect()));
        Replicas { backends: backends.clone(), api, replicas, bases, env }
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// The client bound to replica `index`.
    pub fn api(&self, index: usize) -> Api {
        self.api.with_base(self.replicas[index].base.clone())
    }

    /// A client for any replica that follows restarts.
    pub fn router(&self) -> Router {
        Router { api: self.api.clone(), bases: self.bases.clone() }
    }

    /// SIGKILL and reap replica `index`.
    pub async fn kill9(&mut self, index: usize) {
        let _ = self.replicas[index].child.kill().await;
    }

    /// Starts replica `index` again (killing it first if it still runs) on a new port; the
    /// router follows.
    pub async fn restart(&mut self, index: usize) {
        self.kill9(index).await;
        let replica = &mut self.replicas[index];
        replica.generation += 1;
        let (child, base) = spawn_replica(
            &self.backends,
            &self.api,
            &self.env,
            replica.logs.path(),
            replica.data.path(),
            replica.generation,
        )
        .await;
        replica.child = child;
        replica.base = base.clone();
        self.bases.write().unwrap_or_else(PoisonError::into_inner)[index] = base;
    }

    /// Runs `stampede reconcile` against these backends (the same binary as the replicas);
    /// returns its output.
    pub async fn reconcile(&self) -> std::process::Output {
        let run = Command::new(env!("CARGO_BIN_EXE_stampede"))
            .arg("reconcile")
            .envs(self.backends.env())
            .env("STAMPEDE_JWT_SECRET", self.api.secret())
            .env("STAMPEDE_ADMIN_TOKEN", &self.api.admin_token)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), run).await;
        output.expect("stampede reconcile did not finish within 60 s").expect("run stampede reconcile")
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for (index, replica) in self.replicas.iter_mut().enumerate() {
            if std::thread::panicking() {
                eprintln!("--- replica {index} stderr (last lines) ---\n{}", replica.stderr_tail());
            }
            let _ = replica.child.start_kill();
        }
    }
}

/// Spawns `stampede serve` in scale-out mode and waits for its `listening on` line; returns
/// the process and its base URL.
async fn spawn_replica(
    backends: &Backends,
    api: &Api,
    extra: &[(String, String)],
    logs: &Path,
    data: &Path,
    generation: u32,
) -> (Child, String) {
    let mut env: Vec<(&str, &str)> = extra.iter().map(|(name, value)| (name.as_str(), value.as_str())).collect();
    env.extend(backends.env());
    let (child, addr) = super::spawn_with(data, api, logs, generation, &env).await;
    (child, format!("http://{addr}"))
}
