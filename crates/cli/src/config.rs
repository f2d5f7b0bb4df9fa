//! Typed configuration, layered: config file < `STAMPEDE_*` environment < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use stampede_engine::limits::{Policy, Quota};
use stampede_server::defense::client_ip::IpRange;

/// Flags of `stampede serve`. Each also reads its `STAMPEDE_*` variable; unset ones fall back
/// to the config file, then to the default.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file (keys as the long flags, with underscores).
    #[arg(long, env = "STAMPEDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "STAMPEDE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where the embedded store and generated secrets live [default: ./stampede-data].
    #[arg(long, env = "STAMPEDE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HS256 secret for user tokens; generated into the data dir when unset.
    #[arg(long, env = "STAMPEDE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Bearer token of the admin endpoints; generated into the data dir when unset.
    #[arg(long, env = "STAMPEDE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Request time limit in milliseconds [default: 10000].
    #[arg(long, env = "STAMPEDE_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Time a client has to send a request's headers, in milliseconds; also closes kept-alive
    /// connections that idle that long [default: 30000].
    #[arg(long, env = "STAMPEDE_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// Open connections at most, live streams included [default: 300000]. The open-files limit
    /// is raised to its hard limit at start; the log says when that is lower.
    #[arg(long, env = "STAMPEDE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Live streams (SSE and WebSocket) open at most; one more gets 503 [default: 250000].
    #[arg(long, env = "STAMPEDE_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Requests handled at once; more wait for a place (see --max-queue-ms) [default: 1024].
    #[arg(long, env = "STAMPEDE_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Longest wait for a place before a request is shed with 503 and `Retry-After`, in
    /// milliseconds [default: 100].
    #[arg(long, env = "STAMPEDE_MAX_QUEUE_MS")]
    pub max_queue_ms: Option<u64>,
    /// Proxies whose `X-Forwarded-For` is believed, comma-separated addresses or CIDR ranges
    /// [default: none: the peer address is the client].
    #[arg(long, env = "STAMPEDE_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Lifetime of session tokens from POST /v1/sessions, in seconds [default: 86400].
    #[arg(long, env = "STAMPEDE_SESSION_TTL_SECONDS")]
    pub session_ttl_seconds: Option<u64>,
    /// `full` fsyncs every commit (survives power loss); `normal` survives process death only
    /// [default: full].
    #[arg(long, env = "STAMPEDE_SYNC")]
    pub sync: Option<SyncMode>,
    /// `off` turns off rate limits, automatic bans and proof-of-work [default: on].
    #[arg(long, env = "STAMPEDE_LIMITS")]
    pub limits: Option<Switch>,
    /// `off` turns off request metrics and `GET /metrics` [default: on].
    #[arg(long, env = "STAMPEDE_METRICS")]
    pub metrics: Option<Switch>,
    /// Rate limit per user on mutating requests, `PER_SECOND[:BURST]`, 0 = none [default: 10:20].
    #[arg(long, env = "STAMPEDE_RATE_USER")]
    pub rate_user: Option<String>,
    /// Rate limit per client address [default: 50:100].
    #[arg(long, env = "STAMPEDE_RATE_IP")]
    pub rate_ip: Option<String>,
    /// Rate limit per sale [default: 0, none].
    #[arg(long, env = "STAMPEDE_RATE_SALE")]
    pub rate_sale: Option<String>,
    /// More mutating requests than this from one user or address within the ban window ban it
    /// (0 = no automatic bans) [default: 50].
    #[arg(long, env = "STAMPEDE_BAN_THRESHOLD")]
    pub ban_threshold: Option<u32>,
    /// The sliding window of the automatic bans, in seconds [default: 10].
    #[arg(long, env = "STAMPEDE_BAN_WINDOW_SECONDS")]
    pub ban_window_seconds: Option<u64>,
    /// How long an automatic ban lasts, in seconds [default: 600].
    #[arg(long, env = "STAMPEDE_BAN_SECONDS")]
    pub ban_seconds: Option<u64>,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the scale-out mode keeps its state (shared by `serve` and `reconcile`).
#[derive(Debug, Args, Default)]
pub struct StoreArgs {
    /// Scale-out mode: Redis URL, or the comma-separated seed URLs of a Redis Cluster. Needs
    /// --postgres, and the same --jwt-secret and --admin-token on every replica.
    #[arg(long, env = "STAMPEDE_REDIS")]
    pub redis: Option<String>,
    /// Treat --redis as a Redis Cluster even with one seed URL [default: only with several URLs].
    #[arg(long, env = "STAMPEDE_REDIS_CLUSTER")]
    pub redis_cluster: Option<bool>,
    /// Prefix of every Redis key, so deployments can share a Redis [default: stampede].
    #[arg(long, env = "STAMPEDE_REDIS_NAMESPACE")]
    pub redis_namespace: Option<String>,
    /// Scale-out mode: Postgres URL of the system of record (migrated at start-up).
    #[arg(long, env = "STAMPEDE_POSTGRES", hide_env_values = true)]
    pub postgres: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Full,
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    On,
    Off,
}

/// The config file: the same keys as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    jwt_secret: Option<String>,
    admin_token: Option<String>,
    request_timeout_ms: Option<u64>,
    header_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_streams: Option<usize>,
    max_in_flight: Option<usize>,
    max_queue_ms: Option<u64>,
    trusted_proxies: Option<String>,
    session_ttl_seconds: Option<u64>,
    sync: Option<SyncMode>,
    limits: Option<Switch>,
    metrics: Option<Switch>,
    rate_user: Option<String>,
    rate_ip: Option<String>,
    rate_sale: Option<String>,
    ban_threshold: Option<u32>,
    ban_window_seconds: Option<u64>,
    ban_seconds: Option<u64>,
    redis: Option<String>,
    redis_cluster: Option<bool>,
    redis_namespace: Option<String>,
    postgres: Option<String>,
}

/// The resolved configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub jwt_secret: Option<String>,
    pub admin_token: Option<String>,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub max_streams: usize,
    pub max_in_flight: usize,
    pub max_queue_wait: Duration,
    pub trusted_proxies: Vec<IpRange>,
    pub session_ttl_seconds: u64,
    pub sync: SyncMode,
    pub limits: Switch,
    pub metrics: Switch,
    pub policy: Policy,
    /// `None`: the embedded store.
    pub scale_out: Option<ScaleOutConfig>,
}

/// Where the scale-out mode keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOutConfig {
    pub redis_urls: Vec<String>,
    pub redis_cluster: bool,
    pub namespace: String,
    pub postgres: String,
}

/// `PER_SECOND[:BURST]`; the burst defaults to twice the rate.
fn quota(field: &str, text: Option<String>, default: Quota) -> anyhow::Result<Quota> {
    let Some(text) = text else { return Ok(default) };
    let (rate, burst) = text.split_once(':').map_or((text.as_str(), None), |(r, b)| (r, Some(b)));
    let bad = || anyhow::anyhow!("{field}: expected PER_SECOND[:BURST], got {text:?}");
    let per_second: u32 = rate.trim().parse().map_err(|_| bad())?;
    let burst = match burst {
        Some(burst) => burst.trim().parse().map_err(|_| bad())?,
        None => per_second.saturating_mul(2),
    };
    Ok(Quota { per_second, burst })
}

fn seconds(value: Option<u64>, default: Duration) -> Duration {
    value.map_or(default, Duration::from_secs)
}

fn parse_ranges(text: &str) -> anyhow::Result<Vec<IpRange>> {
    let parts = text.split(',').map(str::trim).filter(|part| !part.is_empty());
    parts.map(|part| part.parse::<IpRange>().map_err(|error| anyhow::anyhow!("trusted_proxies: {error}"))).collect()
}

impl Config {
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = Policy::default();
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("stampede-data")),
            jwt_secret: args.jwt_secret.or(file.jwt_secret).filter(|s| !s.is_empty()),
            admin_token: args.admin_token.or(file.admin_token).filter(|s| !s.is_empty()),
            request_timeout: Duration::from_millis(
                args.request_timeout_ms.or(file.request_timeout_ms).unwrap_or(10_000),
            ),
            header_timeout: Duration::from_millis(args.header_timeout_ms.or(file.header_timeout_ms).unwrap_or(30_000)),
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(300_000),
            max_streams: args.max_streams.or(file.max_streams).unwrap_or(250_000),
            max_in_flight: args.max_in_flight.or(file.max_in_flight).unwrap_or(1_024),
            max_queue_wait: Duration::from_millis(args.max_queue_ms.or(file.max_queue_ms).unwrap_or(100)),
            trusted_proxies: parse_ranges(args.trusted_proxies.or(file.trusted_proxies).as_deref().unwrap_or(""))?,
            session_ttl_seconds: args.session_ttl_seconds.or(file.session_ttl_seconds).unwrap_or(86_400),
            sync: args.sync.or(file.sync).unwrap_or(SyncMode::Full),
            limits: args.limits.or(file.limits).unwrap_or(Switch::On),
            metrics: args.metrics.or(file.metrics).unwrap_or(Switch::On),
            policy: Policy {
                user: quota("rate_user", args.rate_user.or(file.rate_user), defaults.user)?,
                ip: quota("rate_ip", args.rate_ip.or(file.rate_ip), defaults.ip)?,
                sale: quota("rate_sale", args.rate_sale.or(file.rate_sale), defaults.sale)?,
                ban_threshold: args.ban_threshold.or(file.ban_threshold).unwrap_or(defaults.ban_threshold),
                ban_window: seconds(args.ban_window_seconds.or(file.ban_window_seconds), defaults.ban_window),
                ban_duration: seconds(args.ban_seconds.or(file.ban_seconds), defaults.ban_duration),
            },
            scale_out: scale_out(
                args.store.redis.or(file.redis),
                args.store.redis_cluster.or(file.redis_cluster),
                args.store.redis_namespace.or(file.redis_namespace),
                args.store.postgres.or(file.postgres),
            )?,
        })
    }
}

fn scale_out(
    redis: Option<String>,
    cluster: Option<bool>,
    namespace: Option<String>,
    postgres: Option<String>,
) -> anyhow::Result<Option<ScaleOutConfig>> {
    let redis = redis.filter(|url| !url.trim().is_empty());
    let postgres = postgres.filter(|url| !url.trim().is_empty());
    let (redis, postgres) = match (redis, postgres) {
        (None, None) => return Ok(None),
        (Some(redis), Some(postgres)) => (redis, postgres),
        _ => anyhow::bail!("scale-out mode needs both --redis and --postgres"),
    };
    let redis_urls: Vec<String> = redis.split(',').map(|url| url.trim().to_owned()).filter(|u| !u.is_empty()).collect();
    let namespace = namespace.unwrap_or_else(|| "stampede".to_owned());
    let well_formed =
        !namespace.is_empty() && namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    anyhow::ensure!(well_formed, "--redis-namespace must be letters, digits, '-' or '_'");
    Ok(Some(ScaleOutConfig { redis_cluster: cluster.unwrap_or(redis_urls.len() > 1), redis_urls, namespace, postgres }))
}

/// The scale-out store of `reconcile`: the config file's keys, under flags and environment.
pub fn resolve_store(config: Option<&Path>, args: StoreArgs) -> anyhow::Result<Option<ScaleOutConfig>> {
    let file = match config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    scale_out(
        args.redis.or(file.redis),
        args.redis_cluster.or(file.redis_cluster),
        args.redis_namespace.or(file.redis_namespace),
        args.postgres.or(file.postgres),
    )
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = std::env::temp_dir().join(format!("stampede-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stampede.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\nmax_connections = 7\nsync = \"normal\"\n").unwrap();
        let args = ServeArgs { config: Some(path), max_connections: Some(9), ..ServeArgs::default() };
        let config = Config::resolve(args).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.max_connections, 9);
        assert_eq!(config.sync, SyncMode::Normal);
        assert_eq!(config.data_dir, PathBuf::from("stampede-data"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn scale_out_needs_redis_and_postgres() {
        assert_eq!(scale_out(None, None, None, None).unwrap(), None);
        assert!(scale_out(Some("redis://r/".into()), None, None, None).is_err());
        assert!(scale_out(None, None, None, Some("postgres://p/db".into())).is_err());
        let cluster = scale_out(Some("redis://a/, redis://b/".into()), None, None, Some("postgres://p/db".into()));
        let cluster = cluster.unwrap().unwrap();
        assert_eq!(cluster.redis_urls, ["redis://a/", "redis://b/"]);
        assert!(cluster.redis_cluster);
        assert_eq!(cluster.namespace, "stampede");
        assert!(scale_out(Some("redis://a/".into()), None, Some("a:b".into()), Some("postgres://p".into())).is_err());
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }
}
