-- Live auctions. The configuration is written once; ends_at, extensions and the outcome change.
CREATE TABLE auctions (
    id                   TEXT PRIMARY KEY,
    title                TEXT NOT NULL,
    seller_id            TEXT NOT NULL,
    starting_price_cents INTEGER NOT NULL,
    reserve_price_cents  INTEGER,
    buy_now_price_cents  INTEGER,
    starts_at            INTEGER NOT NULL,
    scheduled_end        INTEGER NOT NULL,
    soft_close_seconds   INTEGER NOT NULL,
    extend_seconds       INTEGER NOT NULL,
    max_extensions       INTEGER,
    ladder               TEXT NOT NULL,
    payment_seconds      INTEGER NOT NULL,
    created_at           INTEGER NOT NULL,
    ends_at              INTEGER NOT NULL,
    extensions           INTEGER NOT NULL,
    ended_at             INTEGER,
    end_reason           TEXT,
    winner_id            TEXT,
    final_price_cents    INTEGER
);

-- Every accepted bid, with the answer it got. Replaying them in seq order rebuilds the auction.
CREATE TABLE bids (
    auction_id        TEXT NOT NULL,
    seq               INTEGER NOT NULL,
    user_id           TEXT NOT NULL,
    max_amount_cents  INTEGER NOT NULL,
    placed_at         INTEGER NOT NULL,
    idempotency_key   TEXT,
    status            TEXT NOT NULL,
    price_after_cents INTEGER NOT NULL,
    leader_after      TEXT NOT NULL,
    PRIMARY KEY (auction_id, seq)
) WITHOUT ROWID;
