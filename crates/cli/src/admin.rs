//! Operator commands that talk to a running server over HTTP: sales, auctions, orders and bans.
//! Tables for people by default, the server's JSON with `--json`; a failure prints
//! `error: <code>: <message>` and exits non-zero.

mod client;
mod render;
mod table;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use self::client::{Client, Failure};

/// Where the server is and how to act on it; accepted after any admin command.
#[derive(Args)]
pub struct ServerArgs {
    /// Base URL of the server.
    #[arg(long, global = true, env = "STAMPEDE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The server's admin token.
    #[arg(long, global = true, env = "STAMPEDE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// An admin command group: the server flags, then what to do.
#[derive(Args)]
pub struct On<C: Subcommand> {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: C,
}

#[derive(Subcommand)]
pub enum Command {
    /// Flash sales on a running server: create, get, list.
    Sale(On<SaleCommand>),
    /// Live auctions on a running server: get, list.
    Auction(On<AuctionCommand>),
    /// Any order on a running server, whoever placed it.
    Order(On<OrderCommand>),
    /// Ban or unban a user (limits must be on).
    User(On<SubjectCommand>),
    /// Ban or unban a client address (limits must be on).
    Ip(On<SubjectCommand>),
    /// Bans in force.
    Ban(On<BanCommand>),
}

#[derive(Subcommand)]
pub enum SaleCommand {
    /// Create a sale.
    Create(NewSale),
    /// Show one sale.
    Get { id: String },
    /// List every sale, newest first.
    List(StatusFilter),
}

#[derive(Args)]
pub struct NewSale {
    #[arg(long)]
    name: String,
    #[arg(long)]
    stock: u32,
    /// Price in minor units.
    #[arg(long)]
    price_cents: i64,
    /// RFC 3339 time; now by default.
    #[arg(long)]
    starts_at: Option<String>,
    /// RFC 3339 time; no end by default.
    #[arg(long)]
    ends_at: Option<String>,
    /// Units one user may hold or buy [server default: 1].
    #[arg(long)]
    per_user_limit: Option<u32>,
    /// Seconds a hold lasts before it expires [server default: 600].
    #[arg(long)]
    hold_seconds: Option<u32>,
}

#[derive(Args)]
pub struct StatusFilter {
    /// Only those in this status: scheduled, live, sold_out (sales only) or ended.
    #[arg(long)]
    status: Option<String>,
}

#[derive(Subcommand)]
pub enum AuctionCommand {
    /// Show one auction.
    Get { id: String },
    /// List every auction, newest first.
    List(StatusFilter),
}

#[derive(Subcommand)]
pub enum OrderCommand {
    /// Show one order.
    Get { id: String },
}

#[derive(Subcommand)]
pub enum SubjectCommand {
    /// Ban: every guarded request (purchases, bids, sign-ins) gets 403 `banned`.
    Ban {
        /// The user id, or the address for `ip`.
        who: String,
        /// How long [server default: its automatic ban duration].
        #[arg(long)]
        seconds: Option<u64>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a ban.
    Unban {
        /// The user id, or the address for `ip`.
        who: String,
    },
}

#[derive(Subcommand)]
pub enum BanCommand {
    /// List the bans in force, soonest expiry first.
    List,
}

/// Runs one admin command; returns the process exit code.
pub fn run(command: Command) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return 1;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("{failure}");
            1
        }
    }
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Sale(On { server, command }) => sale(&server, command).await,
        Command::Auction(On { server, command }) => auction(&server, command).await,
        Command::Order(On { server, command: OrderCommand::Get { id } }) => {
            let order = Client::new(&server)?.get(&["v1", "admin", "orders", &id], None).await?;
            show(&server, &order, render::record)
        }
        Command::User(On { server, command }) => subject(&server, "user", command).await,
        Command::Ip(On { server, command }) => subject(&server, "ip", command).await,
        Command::Ban(On { server, command: BanCommand::List }) => {
            let bans = Client::new(&server)?.get(&["v1", "admin", "bans"], None).await?;
            show(&server, &bans, |bans| render::list(bans, "bans", &render::BAN_COLUMNS))
        }
    }
}

async fn sale(server: &ServerArgs, command: SaleCommand) -> Result<(), Failure> {
    let client = Client::new(server)?;
    let sale = match command {
        SaleCommand::Create(new) => client.post(&["v1", "sales"], &new.body()).await?,
        SaleCommand::Get { id } => client.get(&["v1", "sales", &id], None).await?,
        SaleCommand::List(filter) => {
            let sales = client.get(&["v1", "sales"], filter.status.as_deref()).await?;
            return show(server, &sales, |sales| render::list(sales, "sales", &render::SALE_COLUMNS));
        }
    };
    show(server, &sale, render::record)
}

async fn auction(server: &ServerArgs, command: AuctionCommand) -> Result<(), Failure> {
    let client = Client::new(server)?;
    match command {
        AuctionCommand::Get { id } => {
            let auction = client.get(&["v1", "auctions", &id], None).await?;
            show(server, &auction, render::record)
        }
        AuctionCommand::List(filter) => {
            let auctions = client.get(&["v1", "auctions"], filter.status.as_deref()).await?;
            show(server, &auctions, |auctions| render::list(auctions, "auctions", &render::AUCTION_COLUMNS))
        }
    }
}

/// Bans and unbans of `kind:<who>` subjects.
async fn subject(server: &ServerArgs, kind: &str, command: SubjectCommand) -> Result<(), Failure> {
    let client = Client::new(server)?;
    match command {
        SubjectCommand::Ban { who, seconds, reason } => {
            let mut body = Map::new();
            body.insert("subject".to_owned(), json!(format!("{kind}:{who}")));
            optional(&mut body, "seconds", seconds.map(Value::from));
            optional(&mut body, "reason", reason.map(Value::from));
            let ban = client.post(&["v1", "admin", "bans"], &Value::Object(body)).await?;
            show(server, &ban, render::record)
        }
        SubjectCommand::Unban { who } => {
            let subject = format!("{kind}:{who}");
            client.delete(&["v1", "admin", "bans", &subject]).await?;
            if !server.json {
                println!("lifted the ban on {subject}");
            }
            Ok(())
        }
    }
}

impl NewSale {
    fn body(self) -> Value {
        let mut body = Map::new();
        body.insert("name".to_owned(), json!(self.name));
        body.insert("stock".to_owned(), json!(self.stock));
        body.insert("price_cents".to_owned(), json!(self.price_cents));
        optional(&mut body, "starts_at", self.starts_at.map(Value::from));
        optional(&mut body, "ends_at", self.ends_at.map(Value::from));
        optional(&mut body, "per_user_limit", self.per_user_limit.map(Value::from));
        optional(&mut body, "hold_seconds", self.hold_seconds.map(Value::from));
        Value::Object(body)
    }
}

fn optional(body: &mut Map<String, Value>, field: &str, value: Option<Value>) {
    if let Some(value) = value {
        body.insert(field.to_owned(), value);
    }
}

/// Prints the server's answer: as JSON with `--json`, else as `human` renders it.
fn show(server: &ServerArgs, answer: &Value, human: impl Fn(&Value) -> String) -> Result<(), Failure> {
    let text = if server.json {
        serde_json::to_string_pretty(answer).map_err(|error| Failure::Other(error.to_string()))?
    } else {
        human(answer)
    };
    println!("{}", text.trim_end());
    Ok(())
}
