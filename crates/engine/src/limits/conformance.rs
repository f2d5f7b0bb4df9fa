//! The limits conformance suite: one set of cases every [`Limits`] implementation must pass,
//! instantiated per implementation with [`limits_conformance!`](crate::limits_conformance).
//!
//! Cases pass `now` explicitly (from `T0`, a whole second, so with the 10 s window every second
//! is one bucket): expiry and refills are driven without sleeping. Each case opens a fresh,
//! empty instance with the policy it needs.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use stampede_core::{Timestamp, UserId};
use tokio::sync::Barrier;

use super::{Ban, Limits, Policy, Quota, Request, Risk, Subject, Verdict};

/// What an implementation provides to run the suite.
pub trait Harness: Sized {
    /// A fresh instance with no state, enforcing `policy`.
    fn open(policy: Policy) -> impl Future<Output = Self>;
    fn limits(&self) -> Arc<dyn Limits>;
    /// A second instance on the same shared state, as another replica would open it (the same
    /// instance for an implementation that cannot share state).
    fn replica(&self) -> impl Future<Output = Arc<dyn Limits>>;
}

/// Instantiates every case as a `#[tokio::test]` for one implementation, e.g.
/// `limits_conformance!(MemoryHarness);`. The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
#[macro_export]
macro_rules! limits_conformance {
    ($harness:ty) => {
        $crate::limits_conformance!(@cases $harness;
            gcra_allows_the_burst_then_refuses_with_the_wait,
            limits_are_per_user_per_ip_and_per_sale,
            the_longest_wait_is_reported,
            crossing_the_threshold_bans_at_once,
            requests_spread_beyond_the_window_do_not_ban,
            bans_refuse_admit_and_ban_of_until_they_expire,
            admins_ban_lift_and_list,
            spend_once_is_single_use_until_expiry,
            risk_counts_requests_and_refusals,
            replicas_share_limits_and_bans,
            concurrent_admits_pass_at_most_the_burst,
            concurrent_admits_ban_past_the_threshold,
            a_ban_settles_the_requests_that_caused_it,
            clocks_read_out_of_order_still_pass_the_burst,
        );
    };
    (@cases $harness:ty; $($case:ident),* $(,)?) => {
        $(
            // Multi-threaded so the concurrent cases race for real.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::limits::conformance::$case::<$harness>().await;
            }
        )*
    };
}

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn at(millis: i64) -> Timestamp {
    T0.plus_millis(millis)
}

fn user(name: &str) -> UserId {
    UserId::new(name).expect("valid user id")
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

fn quota(per_second: u32, burst: u32) -> Quota {
    Quota { per_second, burst }
}

/// No limits at all; cases switch on what they test.
fn open_policy() -> Policy {
    Policy {
        user: Quota::UNLIMITED,
        ip: Quota::UNLIMITED,
        sale: Quota::UNLIMITED,
        ban_threshold: 0,
        ban_window: Duration::from_secs(10),
        ban_duration: Duration::from_secs(60),
    }
}

fn wait(millis: u64) -> Verdict {
    Verdict::Limited { retry_after: Duration::from_millis(millis) }
}

async fn admit(limits: &dyn Limits, who: Option<&UserId>, from: IpAddr, sale: Option<&str>, now: Timestamp) -> Verdict {
    let request = Request { user: who, ip: from, sale };
    limits.admit(&request, now).await.expect("admit")
}

#[track_caller]
fn assert_banned(verdict: &Verdict, subject: &Subject) -> Ban {
    match verdict {
        Verdict::Banned(ban) if &ban.subject == subject => ban.clone(),
        other => panic!("expected a ban of {subject}, got {other:?}"),
    }
}

pub async fn gcra_allows_the_burst_then_refuses_with_the_wait<H: Harness>() {
    let h = H::open(Policy { user: quota(10, 5), ..open_policy() }).await;
    let (limits, alice) = (h.limits(), user("alice"));
    for i in 0..5 {
        assert_eq!(admit(&*limits, Some(&alice), ip(1), None, T0).await, Verdict::Allowed, "request {i} of the burst");
    }
    assert_eq!(admit(&*limits, Some(&alice), ip(1), None, T0).await, wait(100));
    assert_eq!(admit(&*limits, Some(&alice), ip(1), None, at(60)).await, wait(40));
    assert_eq!(admit(&*limits, Some(&alice), ip(1), None, at(100)).await, Verdict::Allowed, "one cell refilled");
    assert_eq!(admit(&*limits, Some(&alice), ip(1), None, at(100)).await, wait(100));
    for i in 0..5 {
        assert_eq!(admit(&*limits, Some(&alice), ip(1), None, at(2_000)).await, Verdict::Allowed, "refilled {i}");
    }
    assert_eq!(admit(&*limits, Some(&alice), ip(1), None, at(2_000)).await, wait(100));
}

pub async fn limits_are_per_user_per_ip_and_per_sale<H: Harness>() {
    let policy = Policy { user: quota(1, 2), ip: quota(1, 3), sale: quota(1, 4), ..open_policy() };
    let h = H::open(policy).await;
    let limits = &*h.limits();
    let (alice, bob) = (user("alice"), user("bob"));
    // A user's limit follows the user across addresses.
    assert_eq!(admit(limits, Some(&alice), ip(1), None, T0).await, Verdict::Allowed);
    assert_eq!(admit(limits, Some(&alice), ip(2), None, T0).await, Verdict::Allowed);
    assert_eq!(admit(limits, Some(&alice), ip(3), None, T0).await, wait(1_000));
    assert_eq!(admit(limits, Some(&bob), ip(4), None, T0).await, Verdict::Allowed, "another user is not limited");
    // An address's limit covers every request from it, signed in or not.
    for _ in 0..3 {
        assert_eq!(admit(limits, None, ip(10), None, T0).await, Verdict::Allowed);
    }
    assert_eq!(admit(limits, None, ip(10), None, T0).await, wait(1_000));
    assert_eq!(admit(limits, None, ip(11), None, T0).await, Verdict::Allowed, "another address is not limited");
    // A sale's limit covers everyone buying in it, and only it.
    for i in 0..4 {
        let buyer = user(&format!("buyer-{i}"));
        assert_eq!(admit(limits, Some(&buyer), ip(20 + i), Some("s1"), T0).await, Verdict::Allowed);
    }
    let late = user("late");
    assert_eq!(admit(limits, Some(&late), ip(30), Some("s1"), T0).await, wait(1_000));
    assert_eq!(admit(limits, Some(&late), ip(31), Some("s2"), T0).await, Verdict::Allowed, "another sale");
    assert_eq!(admit(limits, Some(&user("later")), ip(32), None, T0).await, Verdict::Allowed, "no sale");
}

pub async fn the_longest_wait_is_reported<H: Harness>() {
    let h = H::open(Policy { user: quota(1, 1), ip: quota(4, 1), sale: quota(2, 1), ..open_policy() }).await;
    let (limits, alice) = (h.limits(), user("alice"));
    assert_eq!(admit(&*limits, Some(&alice), ip(1), Some("s"), T0).await, Verdict::Allowed);
    assert_eq!(admit(&*limits, Some(&alice), ip(1), Some("s"), T0).await, wait(1_000), "user 1 s > sale 0.5 s > ip");
    assert_eq!(admit(&*limits, Some(&user("bob")), ip(1), Some("s"), at(250)).await, wait(250), "the sale still waits");
}

pub async fn crossing_the_threshold_bans_at_once<H: Harness>() {
    let h = H::open(Policy { ban_threshold: 5, ..open_policy() }).await;
    let limits = &*h.limits();
    let alice = user("alice");
    for second in 0..5 {
        let verdict = admit(limits, Some(&alice), ip(second as u8), None, at(second * 1_000)).await;
        assert_eq!(verdict, Verdict::Allowed, "request {second}");
    }
    let sixth = admit(limits, Some(&alice), ip(9), None, at(9_000)).await;
    let ban = assert_banned(&sixth, &Subject::User(alice.clone()));
    assert_eq!(ban.until, at(69_000), "banned for the ban duration from the crossing request");
    assert!(ban.reason.starts_with("automatic"), "{ban:?}");
    assert_eq!(admit(limits, Some(&alice), ip(9), None, at(9_001)).await, Verdict::Banned(ban.clone()));
    assert_eq!(limits.ban_of(&Subject::Ip(ip(9)), at(9_001)).await.expect("ban_of"), None, "the address is not banned");
    assert_eq!(limits.bans(at(9_001)).await.expect("bans"), vec![ban], "automatic bans are listed");

    let bot = ip(200);
    for _ in 0..5 {
        assert_eq!(admit(limits, None, bot, None, at(20_000)).await, Verdict::Allowed);
    }
    assert_banned(&admit(limits, None, bot, None, at(20_500)).await, &Subject::Ip(bot));
    let (bob, bot_ban) = (user("bob"), Subject::Ip(bot));
    assert_banned(&admit(limits, Some(&bob), bot, None, at(21_000)).await, &bot_ban);
}

pub async fn requests_spread_beyond_the_window_do_not_ban<H: Harness>() {
    let h = H::open(Policy { ban_threshold: 5, ..open_policy() }).await;
    let limits = &*h.limits();
    let alice = user("alice");
    for step in 0..20 {
        let verdict = admit(limits, Some(&alice), ip(1), None, at(step * 2_000)).await;
        assert_eq!(verdict, Verdict::Allowed, "at most 5 requests in any 10 s (request {step})");
    }
    let bob = user("bob");
    for _ in 0..5 {
        assert_eq!(admit(limits, Some(&bob), ip(2), None, at(100_000)).await, Verdict::Allowed);
    }
    assert_eq!(admit(limits, Some(&bob), ip(3), None, at(110_000)).await, Verdict::Allowed, "10 s later");
    assert_eq!(limits.bans(at(110_000)).await.expect("bans"), vec![]);
}

pub async fn bans_refuse_admit_and_ban_of_until_they_expire<H: Harness>() {
    let h = H::open(Policy { ban_threshold: 2, ban_duration: Duration::from_secs(20), ..open_policy() }).await;
    let limits = &*h.limits();
    let alice = Subject::User(user("alice"));
    let ban = Ban { subject: alice.clone(), until: at(30_000), reason: "admin: chargebacks".to_owned() };
    limits.ban(ban.clone(), T0).await.expect("ban");
    assert_eq!(admit(limits, Some(&user("alice")), ip(1), None, at(1)).await, Verdict::Banned(ban.clone()));
    assert_eq!(limits.ban_of(&alice, at(29_999)).await.expect("ban_of"), Some(ban.clone()));
    assert_eq!(limits.ban_of(&alice, at(30_000)).await.expect("ban_of"), None, "expired at until");
    assert_eq!(admit(limits, Some(&user("alice")), ip(1), None, at(30_000)).await, Verdict::Allowed);

    let proxy = Subject::Ip(ip(7));
    let ip_ban = Ban { subject: proxy.clone(), until: at(5_000), reason: "admin: open proxy".to_owned() };
    limits.ban(ip_ban.clone(), T0).await.expect("ban ip");
    assert_eq!(admit(limits, Some(&user("bob")), ip(7), None, at(1)).await, Verdict::Banned(ip_ban), "banned ip");

    let carol = user("carol");
    for _ in 0..2 {
        assert_eq!(admit(limits, Some(&carol), ip(8), None, at(40_000)).await, Verdict::Allowed);
    }
    let auto =
        assert_banned(&admit(limits, Some(&carol), ip(9), None, at(40_000)).await, &Subject::User(carol.clone()));
    assert_eq!(auto.until, at(60_000));
    assert_eq!(admit(limits, Some(&carol), ip(10), None, at(59_999)).await, Verdict::Banned(auto));
    assert_eq!(admit(limits, Some(&carol), ip(11), None, at(60_000)).await, Verdict::Allowed, "the ban ran out");
}

/// After a ban is lifted, or runs out within the window that caused it, the subject starts
/// counting afresh: the requests that caused the ban are not counted against it again.
pub async fn a_ban_settles_the_requests_that_caused_it<H: Harness>() {
    let policy = Policy { ban_threshold: 3, ban_duration: Duration::from_secs(2), ..open_policy() };
    let h = H::open(policy).await;
    let limits = &*h.limits();
    let (alice, bob) = (user("alice"), user("bob"));
    // Every request from an address of its own, so only the users' windows fill up.
    let mut next_ip = 0u8;
    let mut fresh_ip = || {
        next_ip += 1;
        ip(next_ip)
    };
    for who in [&alice, &bob] {
        for _ in 0..3 {
            assert_eq!(admit(limits, Some(who), fresh_ip(), None, at(1_000)).await, Verdict::Allowed);
        }
        assert_banned(&admit(limits, Some(who), fresh_ip(), None, at(1_000)).await, &Subject::User(who.clone()));
    }
    assert!(limits.lift(&Subject::User(alice.clone()), at(1_500)).await.expect("lift"));
    let lifted = admit(limits, Some(&alice), fresh_ip(), None, at(1_600)).await;
    assert_eq!(lifted, Verdict::Allowed, "lifted: counts afresh");
    let ran_out = admit(limits, Some(&bob), fresh_ip(), None, at(3_000)).await;
    assert_eq!(ran_out, Verdict::Allowed, "ran out: counts afresh");
    let risk = limits.risk(&Subject::User(alice), at(1_700)).await.expect("risk");
    assert!(risk.refused >= 1, "the refusal is still remembered for proof of work: {risk:?}");
}

pub async fn admins_ban_lift_and_list<H: Harness>() {
    let h = H::open(open_policy()).await;
    let limits = &*h.limits();
    let ban = |subject: &str, until: i64, reason: &str| Ban {
        subject: subject.parse().expect("subject"),
        until: at(until),
        reason: reason.to_owned(),
    };
    for each in [ban("user:a", 50_000, "a"), ban("ip:10.0.0.1", 10_000, "b"), ban("ip:::1", 30_000, "c")] {
        limits.ban(each, T0).await.expect("ban");
    }
    let listed = limits.bans(T0).await.expect("bans");
    assert_eq!(listed, vec![ban("ip:10.0.0.1", 10_000, "b"), ban("ip:::1", 30_000, "c"), ban("user:a", 50_000, "a")]);

    limits.ban(ban("user:a", 5_000, "a again"), T0).await.expect("replace ban");
    let listed = limits.bans(T0).await.expect("bans");
    assert_eq!(listed[0], ban("user:a", 5_000, "a again"), "a ban replaces the one before: {listed:?}");
    assert_eq!(listed.len(), 3);

    assert!(limits.lift(&"ip:::1".parse().expect("subject"), T0).await.expect("lift"));
    assert!(!limits.lift(&"ip:::1".parse().expect("subject"), T0).await.expect("lift again"));
    assert!(!limits.lift(&"user:nobody".parse().expect("subject"), T0).await.expect("lift unknown"));
    assert_eq!(limits.bans(T0).await.expect("bans").len(), 2);
    assert_eq!(limits.bans(at(7_000)).await.expect("bans"), vec![ban("ip:10.0.0.1", 10_000, "b")], "expired go");
    assert!(!limits.lift(&"user:a".parse().expect("subject"), at(7_000)).await.expect("lift expired"));
    assert_eq!(admit(limits, None, ip(1), None, at(10_000)).await, Verdict::Allowed);
}

pub async fn spend_once_is_single_use_until_expiry<H: Harness>() {
    let h = H::open(open_policy()).await;
    let limits = &*h.limits();
    let expiry = at(300_000);
    assert!(limits.spend_once("challenge-1", expiry, T0).await.expect("spend"));
    assert!(!limits.spend_once("challenge-1", expiry, at(1)).await.expect("spend twice"));
    assert!(!limits.spend_once("challenge-1", expiry, at(299_999)).await.expect("spend before expiry"));
    assert!(limits.spend_once("challenge-2", expiry, at(1)).await.expect("another token"));
    assert!(!limits.spend_once("challenge-3", T0, T0).await.expect("expired token"));
    assert!(limits.spend_once("challenge-1", at(600_000), at(300_000)).await.expect("spend after expiry"));
}

pub async fn risk_counts_requests_and_refusals<H: Harness>() {
    let h = H::open(Policy { user: quota(1, 2), ban_threshold: 100, ..open_policy() }).await;
    let limits = &*h.limits();
    let alice = user("alice");
    for _ in 0..5 {
        admit(limits, Some(&alice), ip(1), None, T0).await;
    }
    admit(limits, Some(&alice), ip(1), None, at(3_000)).await;
    let risk = |subject: Subject, now| async move { limits.risk(&subject, now).await.expect("risk") };
    assert_eq!(risk(Subject::User(alice.clone()), at(3_000)).await, Risk { requests: 6, refused: 3 });
    assert_eq!(risk(Subject::Ip(ip(1)), at(3_000)).await, Risk { requests: 6, refused: 0 }, "ip is unlimited");
    assert_eq!(risk(Subject::User(alice.clone()), at(10_000)).await, Risk { requests: 1, refused: 0 }, "T0 left");
    assert_eq!(risk(Subject::User(alice), at(13_000)).await, Risk::default());
    assert_eq!(risk(Subject::User(user("nobody")), T0).await, Risk::default());
}

pub async fn replicas_share_limits_and_bans<H: Harness>() {
    let h = H::open(Policy { user: quota(1, 2), ..open_policy() }).await;
    let (one, two) = (h.limits(), h.replica().await);
    let alice = user("alice");
    assert_eq!(admit(&*one, Some(&alice), ip(1), None, T0).await, Verdict::Allowed);
    assert_eq!(admit(&*two, Some(&alice), ip(2), None, T0).await, Verdict::Allowed);
    assert_eq!(admit(&*one, Some(&alice), ip(1), None, T0).await, wait(1_000), "the burst is shared");

    let bob = Subject::User(user("bob"));
    let ban = Ban { subject: bob.clone(), until: at(60_000), reason: "admin".to_owned() };
    one.ban(ban.clone(), T0).await.expect("ban");
    assert_eq!(two.ban_of(&bob, T0).await.expect("ban_of"), Some(ban.clone()));
    assert_eq!(two.bans(T0).await.expect("bans"), vec![ban]);
    assert!(two.lift(&bob, T0).await.expect("lift"));
    assert_eq!(admit(&*one, Some(&user("bob")), ip(3), None, T0).await, Verdict::Allowed);

    assert!(one.spend_once("challenge", at(300_000), T0).await.expect("spend"));
    assert!(!two.spend_once("challenge", at(300_000), T0).await.expect("spend on the other replica"));
}

pub async fn clocks_read_out_of_order_still_pass_the_burst<H: Harness>() {
    // Two replicas whose requests reach the state in another order than their clocks were read
    // in (or whose clocks differ by a few milliseconds): the burst of 4 passes whole.
    let h = H::open(Policy { user: quota(1, 4), sale: quota(1, 4), ..open_policy() }).await;
    let (one, two) = (h.limits(), h.replica().await);
    let alice = user("alice");
    for (n, millis) in [5, 0, 3, 1].into_iter().enumerate() {
        let replica = if n % 2 == 0 { &one } else { &two };
        let verdict = admit(&**replica, Some(&alice), ip(n as u8), Some("s1"), at(millis)).await;
        assert_eq!(verdict, Verdict::Allowed, "request {n}, read at +{millis} ms");
    }
    assert_eq!(admit(&*two, Some(&alice), ip(9), Some("s1"), at(2)).await, wait(1_000), "counted from +5 ms");
}

/// Admits every request at once, each from its own task; returns the verdicts.
async fn all_at_once(limits: Arc<dyn Limits>, requests: Vec<(Option<UserId>, IpAddr)>, now: Timestamp) -> Vec<Verdict> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(who, from)| {
            let (limits, barrier) = (limits.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let request = Request { user: who.as_ref(), ip: from, sale: None };
                limits.admit(&request, now).await.expect("admit")
            })
        })
        .collect();
    let mut verdicts = Vec::with_capacity(tasks.len());
    for task in tasks {
        verdicts.push(task.await.expect("admitting task panicked"));
    }
    verdicts
}

pub async fn concurrent_admits_pass_at_most_the_burst<H: Harness>() {
    let h = H::open(Policy { user: quota(1, 20), ..open_policy() }).await;
    let alice = user("alice");
    let requests = (0..200).map(|i| (Some(alice.clone()), ip((i % 250) as u8))).collect();
    let verdicts = all_at_once(h.limits(), requests, T0).await;
    let allowed = verdicts.iter().filter(|verdict| **verdict == Verdict::Allowed).count();
    assert_eq!(allowed, 20, "exactly the burst passes at one instant");
    let waits = verdicts.iter().filter(|verdict| matches!(verdict, Verdict::Limited { .. })).count();
    assert_eq!(waits, 180);
}

pub async fn concurrent_admits_ban_past_the_threshold<H: Harness>() {
    let h = H::open(Policy { ban_threshold: 50, ..open_policy() }).await;
    let bot = ip(66);
    let verdicts = all_at_once(h.limits(), (0..120).map(|_| (None, bot)).collect(), T0).await;
    let allowed = verdicts.iter().filter(|verdict| **verdict == Verdict::Allowed).count();
    assert_eq!(allowed, 50, "the threshold, and not one request more");
    let bans: Vec<&Ban> = verdicts
        .iter()
        .filter_map(|verdict| match verdict {
            Verdict::Banned(ban) => Some(ban),
            _ => None,
        })
        .collect();
    assert_eq!(bans.len(), 70);
    assert!(bans.iter().all(|ban| ban.subject == Subject::Ip(bot) && ban.until == at(60_000)), "one ban: {bans:?}");
}
