//! The engine's metrics, recorded through the `metrics` facade (a no-op until the server installs
//! a recorder): journal commits of the embedded backend, the scale-out order sink's writes to
//! Postgres, and the background jobs' work.

/// Records per journal commit (histogram).
pub const JOURNAL_BATCH: &str = "stampede_journal_commit_records";
/// Seconds per journal commit, fsync included (histogram).
pub const JOURNAL_SECONDS: &str = "stampede_journal_commit_seconds";
/// Journal commits that failed and were retried (counter).
pub const JOURNAL_FAILURES: &str = "stampede_journal_commit_failures_total";
/// Events written to Postgres per order-sink batch, scale-out mode (histogram).
pub const SINK_BATCH: &str = "stampede_sink_batch_events";
/// Seconds per order-sink write to Postgres (histogram).
pub const SINK_SECONDS: &str = "stampede_sink_write_seconds";
/// Order-sink writes that failed and will be retried (counter).
pub const SINK_FAILURES: &str = "stampede_sink_write_failures_total";
/// Holds ended by their deadline (counter; per process: in scale-out each replica counts the
/// holds its own expiry job ended).
pub const HOLD_EXPIRIES: &str = "stampede_hold_expiries_total";
/// Auctions ended by their close time (counter).
pub const AUCTIONS_CLOSED: &str = "stampede_auctions_closed_total";

pub fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_histogram!(JOURNAL_BATCH, Unit::Count, "Records written per journal commit (one transaction, one fsync)");
    describe_histogram!(JOURNAL_SECONDS, Unit::Seconds, "Time of one journal commit, fsync included");
    describe_counter!(JOURNAL_FAILURES, "Journal commits that failed and were retried");
    describe_histogram!(SINK_BATCH, Unit::Count, "Events written to Postgres per order-sink batch (scale-out)");
    describe_histogram!(SINK_SECONDS, Unit::Seconds, "Time of one order-sink write to Postgres (scale-out)");
    describe_counter!(SINK_FAILURES, "Order-sink writes that failed and will be retried (scale-out)");
    describe_counter!(HOLD_EXPIRIES, "Unpaid holds ended by their deadline");
    describe_counter!(AUCTIONS_CLOSED, "Auctions ended at their close time");
}
