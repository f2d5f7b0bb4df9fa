-- Durable state of the embedded backend. Times are Unix milliseconds (UTC).
CREATE TABLE sales (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    stock          INTEGER NOT NULL,
    price_cents    INTEGER NOT NULL,
    starts_at      INTEGER NOT NULL,
    ends_at        INTEGER,
    per_user_limit INTEGER NOT NULL,
    hold_seconds   INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
);

-- One row per order; its latest state. `key` is handed out in creation order across all sales,
-- so new rows are appended at the end of the table; `seq` is the order's index inside its sale.
-- No index by sale on purpose: it would dirty one page per sale in every commit.
CREATE TABLE orders (
    key             INTEGER PRIMARY KEY,
    sale_id         TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    user_id         TEXT NOT NULL,
    quantity        INTEGER NOT NULL,
    status          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    idempotency_key TEXT,
    payment_ref     TEXT
);

CREATE TABLE waitlist (
    sale_id    TEXT NOT NULL,
    position   INTEGER NOT NULL,
    user_id    TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    joined_at  INTEGER NOT NULL,
    status     TEXT NOT NULL,
    order_seq  INTEGER,
    PRIMARY KEY (sale_id, position)
) WITHOUT ROWID;

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
