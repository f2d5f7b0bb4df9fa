//! Creating sales, reading them back and their status over time.

use stampede_core::{RoomMode, RoomSettings, SaleStatus, Timestamp, UserId};

use super::{assert_sale_not_found, buy, command, secs, spec, units, user, Harness, T0};
use crate::backend::{Backend, NewSale};

pub async fn create_and_get_sale(h: &mut impl Harness) {
    let backend = h.backend().await;
    let new = NewSale {
        name: "launch day".to_owned(),
        stock: 25,
        price_cents: 4_999,
        starts_at: Some(secs(10)),
        ends_at: Some(secs(3600)),
        per_user_limit: 3,
        hold_seconds: 90,
        stock_buckets: 1,
        room: None,
        proof_of_work: false,
    };
    let created = backend.create_sale(new.clone(), T0).await.expect("create sale");
    assert!(!created.id.is_empty());
    assert_eq!(created.name, "launch day");
    assert_eq!(created.price_cents, 4_999);
    assert_eq!((created.stock, created.available, created.held, created.sold), (25, 25, 0, 0));
    assert_eq!((created.per_user_limit, created.hold_seconds), (3, 90));
    assert_eq!((created.starts_at, created.ends_at), (secs(10), Some(secs(3600))));
    assert_eq!((created.status, created.waitlisted), (SaleStatus::Scheduled, 0));

    let fetched = backend.sale(&created.id, T0).await.expect("get sale");
    assert_eq!(fetched, created);
    let other = backend.create_sale(new, T0).await.expect("create second sale");
    assert_ne!(other.id, created.id, "every sale gets its own id");
}

pub async fn sale_starts_at_creation_by_default(h: &mut impl Harness) {
    let backend = h.backend().await;
    let created = backend.create_sale(spec(5, 1), secs(7)).await.expect("create sale");
    assert_eq!((created.starts_at, created.ends_at), (secs(7), None));
    assert_eq!(created.status, SaleStatus::Live);
    let far_future = secs(400 * 24 * 3600);
    assert_eq!(backend.sale(&created.id, far_future).await.expect("get sale").status, SaleStatus::Live);
}

pub async fn unknown_sale_is_not_found(h: &mut impl Harness) {
    let backend = h.backend().await;
    let alice = user("alice");
    for id in ["s_doesnotexist0000", "", "x", "🦀"] {
        assert_sale_not_found(backend.sale(id, T0).await);
        assert_sale_not_found(backend.purchase(command(id, &alice, 1, None), T0).await);
        assert_sale_not_found(backend.join_waitlist(id, &alice, units(1), T0).await);
        assert_sale_not_found(backend.ledger(id).await);
    }
}

pub async fn sale_status_follows_the_clock(h: &mut impl Harness) {
    let backend = h.backend().await;
    let new = NewSale { starts_at: Some(secs(10)), ends_at: Some(secs(60)), ..spec(1, 1) };
    let id = backend.create_sale(new, T0).await.expect("create sale").id;
    let status = |now| status_at(&*backend, &id, now);

    assert_eq!(status(T0).await, SaleStatus::Scheduled);
    assert_eq!(status(secs(10).plus_millis(-1)).await, SaleStatus::Scheduled);
    assert_eq!(status(secs(10)).await, SaleStatus::Live);
    assert_eq!(status(secs(60).plus_millis(-1)).await, SaleStatus::Live);
    assert_eq!(status(secs(60)).await, SaleStatus::Ended);

    let alice: UserId = user("alice");
    let order = buy(&*backend, &id, &alice, 1, secs(20)).await;
    assert_eq!(status(secs(20)).await, SaleStatus::SoldOut);
    assert_eq!(status(secs(60)).await, SaleStatus::Ended, "ended wins over sold out");
    backend.cancel(&order.id, &alice, secs(21)).await.expect("cancel");
    assert_eq!(status(secs(21)).await, SaleStatus::Live, "cancelled units make the sale live again");
}

async fn status_at(backend: &dyn Backend, sale_id: &str, now: Timestamp) -> SaleStatus {
    backend.sale(sale_id, now).await.expect("get sale").status
}

/// A sale's waiting room settings and proof-of-work requirement are stored with it.
pub async fn sale_defenses_are_kept(h: &mut impl Harness) {
    let backend = h.backend().await;
    let room = RoomSettings {
        mode: RoomMode::Shuffled,
        opens_at: Some(T0.plus_seconds(5)),
        admit_per_minute: 1_200,
        max_active: 75,
        pass_seconds: 90,
    };
    let new = NewSale { room: Some(room.clone()), proof_of_work: true, starts_at: Some(secs(60)), ..spec(10, 1) };
    let created = backend.create_sale(new, T0).await.expect("create sale");
    assert_eq!((created.room.as_ref(), created.proof_of_work), (Some(&room), true));
    let plain = backend.create_sale(spec(10, 1), T0).await.expect("create plain sale");
    assert_eq!((plain.room.as_ref(), plain.proof_of_work), (None, false));
    drop(backend);
    h.restart().await;
    let backend = h.backend().await;
    let again = backend.sale(&created.id, T0).await.expect("get sale");
    assert_eq!((again.room, again.proof_of_work), (Some(room), true));
    let plain = backend.sale(&plain.id, T0).await.expect("get plain sale");
    assert_eq!((plain.room, plain.proof_of_work), (None, false));
}
