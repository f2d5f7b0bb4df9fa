-- The system of record of the scale-out mode. Rows arrive from the sales' Redis streams through
-- the order sink, each write idempotent: a row is replaced only by a newer version of itself.
-- Text that comes from clients (names, user ids, keys, payment refs) is stored as bytes: it may
-- hold any character, including NUL, which Postgres text cannot.

CREATE TABLE sales (
    id             TEXT PRIMARY KEY,
    name           BYTEA   NOT NULL,
    stock          INTEGER NOT NULL,
    price_cents    BIGINT  NOT NULL,
    per_user_limit INTEGER NOT NULL,
    hold_seconds   INTEGER NOT NULL,
    starts_at      BIGINT  NOT NULL,
    ends_at        BIGINT,
    created_at     BIGINT  NOT NULL
);

CREATE TABLE orders (
    sale_id         TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    user_id         BYTEA   NOT NULL,
    quantity        INTEGER NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('held', 'paid', 'cancelled', 'expired')),
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    idempotency_key BYTEA,
    payment_ref     BYTEA,
    version         INTEGER NOT NULL,
    PRIMARY KEY (sale_id, seq)
);

CREATE INDEX orders_by_user ON orders (user_id);

CREATE TABLE waitlist (
    sale_id     TEXT    NOT NULL,
    position    INTEGER NOT NULL,
    user_id     BYTEA   NOT NULL,
    quantity    INTEGER NOT NULL,
    joined_at   BIGINT  NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('waiting', 'granted', 'dropped')),
    granted_seq INTEGER,
    version     INTEGER NOT NULL,
    PRIMARY KEY (sale_id, position)
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      BYTEA  NOT NULL UNIQUE,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);
