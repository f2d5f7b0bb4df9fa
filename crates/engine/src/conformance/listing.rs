//! What operators see: every sale and every auction, newest first, and any order by its id.

use stampede_core::{AuctionStatus, OrderStatus, SaleError, SaleStatus};

use super::auctions::{auction_spec, bid};
use super::{assert_sale_error, buy, secs, spec, user, Harness};
use crate::backend::NewSale;

pub async fn sales_are_listed_newest_first(h: &mut impl Harness) {
    let backend = h.backend().await;
    assert!(backend.list_sales(secs(0)).await.expect("list sales").is_empty());
    let oldest = backend.create_sale(spec(5, 1), secs(1)).await.expect("create sale");
    let scheduled = NewSale { starts_at: Some(secs(100)), ..spec(5, 1) };
    let middle = backend.create_sale(scheduled, secs(2)).await.expect("create sale");
    let newest = backend.create_sale(spec(1, 1), secs(3)).await.expect("create sale");
    buy(&*backend, &newest.id, &user("alice"), 1, secs(4)).await;

    let now = secs(5);
    let listed = backend.list_sales(now).await.expect("list sales");
    let ids: Vec<&str> = listed.iter().map(|sale| sale.id.as_str()).collect();
    assert_eq!(ids, [newest.id.as_str(), middle.id.as_str(), oldest.id.as_str()]);
    let statuses: Vec<SaleStatus> = listed.iter().map(|sale| sale.status).collect();
    assert_eq!(statuses, [SaleStatus::SoldOut, SaleStatus::Scheduled, SaleStatus::Live]);
    for sale in &listed {
        assert_eq!(sale, &backend.sale(&sale.id, now).await.expect("get sale"), "a listed sale is its view");
    }

    h.restart().await;
    let backend = h.backend().await;
    assert_eq!(backend.list_sales(now).await.expect("list sales after restart"), listed);
}

pub async fn auctions_are_listed_newest_first_and_lots_are_not_sales(h: &mut impl Harness) {
    let backend = h.backend().await;
    assert!(backend.list_auctions(secs(0)).await.expect("list auctions").is_empty());
    let sale = backend.create_sale(spec(5, 1), secs(1)).await.expect("create sale");
    let won = backend.create_auction(auction_spec(), secs(1)).await.expect("create auction");
    let open = backend.create_auction(auction_spec(), secs(2)).await.expect("create auction");
    bid(&*backend, &won.id, &user("alice"), 4_000, secs(3)).await;
    assert_eq!(backend.close_due_auctions(secs(600)).await.expect("close"), 2);

    let now = secs(601);
    let listed = backend.list_auctions(now).await.expect("list auctions");
    let ids: Vec<&str> = listed.iter().map(|auction| auction.id.as_str()).collect();
    assert_eq!(ids, [open.id.as_str(), won.id.as_str()]);
    assert!(listed.iter().all(|auction| auction.status == AuctionStatus::Ended));
    for auction in &listed {
        assert_eq!(auction, &backend.auction(&auction.id, now).await.expect("get auction"));
    }
    let sales = backend.list_sales(now).await.expect("list sales");
    let sale_ids: Vec<&str> = sales.iter().map(|sale| sale.id.as_str()).collect();
    assert_eq!(sale_ids, [sale.id.as_str()], "the won lot's sale is reached through its auction");
}

pub async fn operators_find_any_order(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = backend.create_sale(spec(5, 2), secs(1)).await.expect("create sale").id;
    let (alice, bob) = (user("alice"), user("bob"));
    let first = buy(&*backend, &sale_id, &alice, 2, secs(2)).await;
    let second = buy(&*backend, &sale_id, &bob, 1, secs(3)).await;
    backend.pay(&second.id, &bob, Some("ref-1".to_owned()), secs(4)).await.expect("pay");

    assert_eq!(backend.any_order(&first.id).await.expect("alice's order"), first);
    let paid = backend.any_order(&second.id).await.expect("bob's order");
    assert_eq!((paid.user_id.as_str(), paid.status), ("bob", OrderStatus::Paid));
    assert_eq!(paid.payment_ref.as_deref(), Some("ref-1"));
    for id in ["", "o_", "o_zz_zz", "o_doesnotexist0000_0", sale_id.as_str(), "🦀"] {
        assert_sale_error(backend.any_order(id).await, SaleError::OrderNotFound);
    }
    let unknown_seq = first.id.rsplit_once('_').map(|(prefix, _)| format!("{prefix}_ff")).expect("order id");
    assert_sale_error(backend.any_order(&unknown_seq).await, SaleError::OrderNotFound);

    h.restart().await;
    let backend = h.backend().await;
    assert_eq!(backend.any_order(&first.id).await.expect("alice's order after restart"), first);
}
