//! `stampede serve`: opens the backend, starts the background jobs and the HTTP server, and
//! shuts all of it down in order on SIGTERM or Ctrl-C.

use std::sync::Arc;

use anyhow::Context;
use stampede_engine::limits::{Limits, MemoryLimits, RedisLimits};
use stampede_engine::rooms::{MemoryRooms, RedisRooms, Rooms};
use stampede_engine::{Backend, Embedded, EmbeddedOptions, RedisTarget, ScaleOut, ScaleOutOptions};
use stampede_server::{AppState, Defenses, HttpSettings};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, Switch, SyncMode};
use crate::secrets;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let (backend, jwt_secret, admin_token) = match &config.scale_out {
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
            let jwt_secret = secrets::configured_or_stored(config.jwt_secret.clone(), &config.data_dir, "jwt-secret")?;
            let admin_token =
                secrets::configured_or_stored(config.admin_token.clone(), &config.data_dir, "admin-token")?;
            let options =
                EmbeddedOptions { data_dir: config.data_dir.clone(), synchronous_full: config.sync == SyncMode::Full };
            let embedded = Embedded::open(options).await.context("opening the embedded store")?;
            tracing::info!(data_dir = %config.data_dir.display(), "embedded store ready");
            (embedded as Arc<dyn Backend>, jwt_secret, admin_token)
        }
        Some(scale_out) => {
            // Every replica must accept every token: the secrets cannot be generated per replica.
            let shared = |value: &Option<String>, name: &str| {
                value.clone().with_context(|| format!("scale-out mode needs {name} set, the same on every replica"))
            };
            let jwt_secret = shared(&config.jwt_secret, "STAMPEDE_JWT_SECRET (--jwt-secret)")?;
            let admin_token = shared(&config.admin_token, "STAMPEDE_ADMIN_TOKEN (--admin-token)")?;
            let options = ScaleOutOptions {
                redis: RedisTarget { urls: scale_out.redis_urls.clone(), cluster: scale_out.redis_cluster },
                postgres_url: scale_out.postgres.clone(),
                namespace: scale_out.namespace.clone(),
            };
            let backend = ScaleOut::open(options).await.context("connecting to Redis and Postgres")?;
            tracing::info!(cluster = scale_out.redis_cluster, namespace = %scale_out.namespace, "scale-out backend ready");
            (backend as Arc<dyn Backend>, jwt_secret, admin_token)
        }
    };
    let expired = backend.expire_due(stampede_core::Timestamp::now()).await?;
    tracing::info!(expired, "holds that fell due while stopped expired");
    let limits = open_limits(&config).await?;

    raise_open_files_limit(config.max_connections);
    let (stop_jobs, jobs_stopped) = watch::channel(false);
    let expiry = tokio::spawn(stampede_engine::expiry::run(backend.clone(), jobs_stopped));

    let settings = HttpSettings {
        request_timeout: config.request_timeout,
        header_read_timeout: config.header_timeout,
        max_connections: config.max_connections,
        max_streams: config.max_streams,
        max_in_flight: config.max_in_flight,
        max_queue_wait: config.max_queue_wait,
        trusted_proxies: config.trusted_proxies.clone(),
        session_ttl_seconds: config.session_ttl_seconds,
        metrics: config.metrics == Switch::On,
        ..HttpSettings::default()
    };
    let rooms = open_rooms(&config).await?;
    let defenses = Defenses { limits, policy: config.policy, rooms: Some(rooms) };
    let state = AppState::with_defenses(backend.clone(), &jwt_secret, &admin_token, settings, defenses);
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    println!("listening on {addr}");
    stampede_server::serve(listener, state, shutdown_signal()).await;

    tracing::info!("stopping: in-flight requests are done, flushing the journal");
    let _ = stop_jobs.send(true);
    if let Err(error) = expiry.await {
        tracing::error!(%error, "the expiry job ended abnormally");
    }
    backend.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The limits behind bans, rate limits and proof of work: in this process for the embedded
/// mode, in Redis (shared by every replica) for scale-out; none when they are off.
async fn open_limits(config: &Config) -> anyhow::Result<Option<Arc<dyn Limits>>> {
    if config.limits == Switch::Off {
        tracing::info!("limits are off: no rate limits, bans or proof-of-work");
        return Ok(None);
    }
    let policy = config.policy.clone();
    let limits: Arc<dyn Limits> = match &config.scale_out {
        None => Arc::new(MemoryLimits::new(policy)),
        Some(scale_out) => {
            let target = RedisTarget { urls: scale_out.redis_urls.clone(), cluster: scale_out.redis_cluster };
            let limits = RedisLimits::open(&target, &scale_out.namespace, policy).await;
            Arc::new(limits.context("connecting the limits to Redis")?)
        }
    };
    Ok(Some(limits))
}

/// Waiting rooms: in this process for the embedded mode, in Redis (one queue for every
/// replica) for scale-out.
async fn open_rooms(config: &Config) -> anyhow::Result<Arc<dyn Rooms>> {
    let Some(scale_out) = &config.scale_out else {
        return Ok(Arc::new(MemoryRooms::default()));
    };
    let target = RedisTarget { urls: scale_out.redis_urls.clone(), cluster: scale_out.redis_cluster };
    let rooms =
        RedisRooms::open(&target, &scale_out.namespace).await.context("connecting the waiting rooms to Redis")?;
    Ok(Arc::new(rooms))
}

/// Every connection is a file descriptor: lift the soft limit to the hard one, and say so when
/// even that is below what `max_connections` asks for (connections beyond it wait in the kernel
/// backlog, and accept errors are logged).
fn raise_open_files_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
        let raised = unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
            }
        };
        let wanted = max_connections as u64 + 1024;
        if !raised || limit.rlim_cur < wanted {
            tracing::warn!(open_files = limit.rlim_cur, wanted, "the open-files limit is below max_connections");
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
