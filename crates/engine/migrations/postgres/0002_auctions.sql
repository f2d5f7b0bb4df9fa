-- Auctions and their bids in the system of record. Rows arrive from the auctions' Redis streams
-- through the order sink, like orders: an auction row is replaced only by a newer version of
-- itself (every row on the stream is whole, so rows written out of order end up right); a bid
-- never changes once accepted. The winner's order is an ordinary order of the lot's sale.

CREATE TABLE auctions (
    id                   TEXT PRIMARY KEY,
    title                BYTEA   NOT NULL,
    seller_id            BYTEA   NOT NULL,
    starting_price_cents BIGINT  NOT NULL,
    reserve_price_cents  BIGINT,
    buy_now_price_cents  BIGINT,
    starts_at            BIGINT  NOT NULL,
    scheduled_ends_at    BIGINT  NOT NULL,
    soft_close_seconds   INTEGER NOT NULL,
    extend_seconds       INTEGER NOT NULL,
    max_extensions       INTEGER,
    -- [[from_cents, increment_cents], ...]
    increments           TEXT    NOT NULL,
    payment_seconds      INTEGER NOT NULL,
    created_at           BIGINT  NOT NULL,
    ends_at              BIGINT  NOT NULL,
    extensions           INTEGER NOT NULL,
    current_price_cents  BIGINT  NOT NULL,
    leader_id            BYTEA,
    bid_count            INTEGER NOT NULL,
    ended_at             BIGINT,
    end_reason           TEXT CHECK (end_reason IN ('closed', 'bought_now')),
    winner_id            BYTEA,
    final_price_cents    BIGINT,
    version              BIGINT  NOT NULL
);

CREATE TABLE bids (
    auction_id        TEXT    NOT NULL,
    seq               INTEGER NOT NULL,
    user_id           BYTEA   NOT NULL,
    max_amount_cents  BIGINT  NOT NULL,
    placed_at         BIGINT  NOT NULL,
    idempotency_key   BYTEA,
    status            TEXT    NOT NULL CHECK (status IN ('leading', 'outbid')),
    price_after_cents BIGINT  NOT NULL,
    leader_after      BYTEA   NOT NULL,
    PRIMARY KEY (auction_id, seq)
);

CREATE INDEX bids_by_user ON bids (user_id);
