//! The stock ledger after a mix of every kind of change, in both the live and the stored view.

use stampede_core::SaleError;

use super::{assert_sale_error, assert_units, buy, open_sale, secs, user, Harness};

pub async fn ledger_tracks_a_mix_of_operations(h: &mut impl Harness) {
    let backend = h.backend().await;
    let sale_id = open_sale(&*backend, 20, 5).await;
    let [alice, bob, carol, dave, erin, frank, gina] =
        ["alice", "bob", "carol", "dave", "erin", "frank", "gina"].map(user);

    let alices = buy(&*backend, &sale_id, &alice, 3, secs(1)).await;
    backend.pay(&alices.id, &alice, Some("psp-a".to_owned()), secs(2)).await.expect("pay");
    let bobs = buy(&*backend, &sale_id, &bob, 2, secs(3)).await;
    backend.cancel(&bobs.id, &bob, secs(4)).await.expect("cancel");
    assert_units(&*backend, &sale_id, 17, 0, 3).await;

    buy(&*backend, &sale_id, &carol, 4, secs(5)).await;
    let erins = buy(&*backend, &sale_id, &erin, 1, secs(6)).await;
    let franks = buy(&*backend, &sale_id, &frank, 2, secs(7)).await;
    let ginas = buy(&*backend, &sale_id, &gina, 1, secs(8)).await;
    backend.pay(&ginas.id, &gina, None, secs(9)).await.expect("pay");
    assert_units(&*backend, &sale_id, 9, 7, 4).await;

    assert_eq!(backend.expire_due(secs(125)).await.expect("expire due"), 1);
    assert_sale_error(backend.pay(&erins.id, &erin, None, erins.expires_at).await, SaleError::HoldExpired);
    buy(&*backend, &sale_id, &dave, 5, secs(126)).await;
    backend.pay(&franks.id, &frank, None, franks.expires_at.plus_millis(-1)).await.expect("pay");

    let ledger = assert_units(&*backend, &sale_id, 9, 5, 6).await;
    assert_eq!(ledger.stock, 20);
    assert_eq!((ledger.cancelled, ledger.expired, ledger.orders), (2, 5, 7));
}
