//! The `stampede` binary: the server and the tools around it.

mod admin;
mod allocator;
mod bench;
mod config;
mod reconcile;
mod secrets;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "stampede", version, about = "Flash sales and live auctions under stampedes of traffic")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded store by default).
    Serve(Box<config::ServeArgs>),
    /// Load-test a running server: healthz baseline, then purchases or bids from distinct users;
    /// or idle live-stream subscribers (memory per stream, fan-out latency).
    Bench(bench::BenchArgs),
    /// Scale-out mode: compare Redis counters with Postgres orders for every sale; exits 1 on a
    /// mismatch.
    Reconcile(reconcile::ReconcileArgs),
    #[command(flatten)]
    Admin(admin::Command),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STAMPEDE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Serve(args) => {
            allocator::tune();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(serve::run(config::Config::resolve(*args)?))
        }
        Command::Reconcile(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            if runtime.block_on(reconcile::run(args))? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Admin(command) => std::process::exit(admin::run(command)),
        // One thread: the load generator shares the machine with the server it measures.
        Command::Bench(args) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(bench::run(args))
        }
    }
}
