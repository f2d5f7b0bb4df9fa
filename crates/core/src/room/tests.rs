use proptest::prelude::*;

use super::*;

const START: Timestamp = Timestamp(1_800_000_000_000);

fn config(mode: RoomMode, admit_per_minute: u32, max_active: u32) -> RoomConfig {
    RoomConfig {
        mode,
        opens_at: Timestamp(START.0 - 600_000),
        starts_at: START,
        admit_per_minute,
        max_active,
        pass_seconds: 60,
        seed: 42,
    }
}

fn user(n: usize) -> UserId {
    UserId::new(&format!("user{n}")).unwrap()
}

fn at(ms: i64) -> Timestamp {
    Timestamp(START.0 + ms)
}

fn fill(room: &mut Room, people: usize, when: Timestamp) -> Vec<TicketSeq> {
    (0..people).map(|n| room.join(&user(n), when).unwrap().0).collect()
}

#[test]
fn fifo_lets_people_in_by_arrival_at_the_pace() {
    let mut room = Room::new(config(RoomMode::Fifo, 600, 1000));
    let tickets = fill(&mut room, 30, at(0));
    assert_eq!(room.place(tickets[5], at(0)).unwrap(), Place::Waiting { ahead: 5, order_known: true });
    // 600 a minute = 10 a second: one every 100 ms tick.
    let mut admitted = Vec::new();
    for tick in 1..=10 {
        admitted.extend(room.admit_due(at(tick * 100), 100));
    }
    assert_eq!(admitted, tickets[..10].to_vec());
    assert_eq!(room.place(tickets[10], at(1000)).unwrap(), Place::Waiting { ahead: 0, order_known: true });
    let Place::Admitted { at: when, pass_expires_at } = room.place(tickets[0], at(1000)).unwrap() else { panic!() };
    assert_eq!((when, pass_expires_at), (at(100), at(60_100)));
}

#[test]
fn unused_pace_is_kept_for_one_second_only() {
    let mut room = Room::new(config(RoomMode::Fifo, 600, 1000));
    fill(&mut room, 100, at(0));
    assert_eq!(room.admit_due(at(60_000), 100).len(), 10, "a quiet minute gives one second's worth");
}

#[test]
fn joining_is_once_per_user_and_only_while_open() {
    let mut room = Room::new(config(RoomMode::Fifo, 60, 10));
    assert_eq!(room.join(&user(1), Timestamp(START.0 - 700_000)), Err(RoomError::NotOpen));
    let (seq, new) = room.join(&user(1), at(0)).unwrap();
    assert!(new);
    assert_eq!(room.join(&user(1), at(5)).unwrap(), (seq, false));
    room.set_state(RoomState::Closed);
    assert_eq!(room.join(&user(2), at(6)), Err(RoomError::Closed));
    assert_eq!(room.join(&user(1), at(6)).unwrap(), (seq, false), "an existing ticket is still answered");
    assert_eq!(room.place(99, at(6)), Err(RoomError::UnknownTicket));
}

#[test]
fn the_active_cap_holds_until_people_finish_or_passes_expire() {
    let mut room = Room::new(config(RoomMode::Fifo, 6000, 2));
    let tickets = fill(&mut room, 5, at(0));
    assert_eq!(room.admit_due(at(1000), 100), tickets[..2].to_vec());
    assert!(room.admit_due(at(2000), 100).is_empty(), "two are shopping");
    room.finish(&user(0));
    assert_eq!(room.admit_due(at(3000), 100), vec![tickets[2]]);
    assert_eq!(room.place(tickets[0], at(3000)).unwrap(), Place::Finished);
    assert!(room.admit_due(at(4000), 100).is_empty());
    assert_eq!(room.admit_due(at(61_000), 100), vec![tickets[3]], "user1's pass expired at 61 s");
    assert_eq!(room.active_count(at(61_000)), 2);
}

#[test]
fn nobody_is_let_in_while_nothing_can_be_bought() {
    let mut room = Room::new(config(RoomMode::Fifo, 6000, 100));
    let tickets = fill(&mut room, 3, at(0));
    assert!(room.admit_due(at(1000), 0).is_empty());
    assert_eq!(room.admit_due(at(1100), 1).len(), 3, "units came back: admissions resume");
    assert_eq!(
        room.place(tickets[2], at(1100)).unwrap(),
        Place::Admitted { at: at(1100), pass_expires_at: at(61_100) }
    );
}

#[test]
fn admins_pause_admit_everyone_and_close() {
    let mut room = Room::new(config(RoomMode::Fifo, 60, 1));
    fill(&mut room, 10, at(0));
    room.set_state(RoomState::Paused);
    assert!(room.admit_due(at(5_000), 100).is_empty());
    assert!(room.join(&user(50), at(5_000)).is_ok(), "joining goes on while paused");
    room.set_state(RoomState::AdmitAll);
    assert_eq!(room.admit_due(at(5_100), 100).len(), 11, "everyone, past the pace and the cap");
    room.set_state(RoomState::Open);
    room.join(&user(60), at(6_000)).unwrap();
    assert!(room.admit_due(at(6_100), 100).is_empty(), "the cap is back");
}

#[test]
fn a_pre_queue_is_shuffled_at_the_start_with_the_committed_seed() {
    let mut room = Room::new(config(RoomMode::Shuffled, 60_000, 10_000));
    let early = fill(&mut room, 50, Timestamp(START.0 - 60_000));
    assert_eq!(room.place(early[0], at(-1)).unwrap(), Place::Waiting { ahead: 49, order_known: false });
    assert_eq!(room.revealed_seed(at(-1)), None);
    assert!(room.admit_due(at(-1), 100).is_empty(), "nobody before the start");
    let late = room.join(&user(999), at(10)).unwrap().0;
    let seed = room.revealed_seed(at(10)).unwrap();
    let mut expected: Vec<TicketSeq> = early.clone();
    shuffle(&mut expected, seed);
    assert_ne!(expected, early, "50 people are not left in arrival order");
    let mut admitted = Vec::new();
    for tick in 1..=20 {
        admitted.extend(room.admit_due(at(10 + tick * 100), 1000));
    }
    expected.push(late);
    assert_eq!(admitted, expected, "the pre-queue in shuffled order, then later arrivals");
}

#[test]
fn shuffles_are_permutations_that_depend_on_the_seed() {
    let base: Vec<u32> = (0..100).collect();
    let (mut a, mut b, mut c) = (base.clone(), base.clone(), base.clone());
    shuffle(&mut a, 7);
    shuffle(&mut b, 7);
    shuffle(&mut c, 8);
    assert_eq!(a, b);
    assert_ne!(a, c);
    a.sort_unstable();
    assert_eq!(a, base);
}

#[test]
fn the_eta_follows_the_measured_rate() {
    let mut room = Room::new(config(RoomMode::Fifo, 600, 10_000));
    let tickets = fill(&mut room, 200, at(0));
    assert_eq!(room.eta_seconds(100, at(-10_000)), 10 + 10, "before the start: the wait for it plus the pace");
    for tick in 1..=50 {
        room.admit_due(at(tick * 100), 1000);
    }
    let Place::Waiting { ahead, .. } = room.place(tickets[150], at(5_000)).unwrap() else { panic!() };
    assert_eq!(ahead, 100);
    let eta = room.eta_seconds(ahead, at(5_000));
    assert!((9..=11).contains(&eta), "about 10 a second measured: {eta}");
}

#[derive(Debug, Clone)]
enum Step {
    Join(usize),
    Tick { after_ms: i64, buyable: u32 },
    Finish(usize),
    State(RoomState),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0usize..40).prop_map(Step::Join),
        4 => (1i64..3_000, 0u32..3).prop_map(|(after_ms, buyable)| Step::Tick { after_ms, buyable }),
        2 => (0usize..40).prop_map(Step::Finish),
        1 => prop_oneof![
            Just(RoomState::Open),
            Just(RoomState::Paused),
            Just(RoomState::AdmitAll),
            Just(RoomState::Closed)
        ]
        .prop_map(Step::State),
    ]
}

proptest! {
    #[test]
    fn admissions_keep_order_cap_pace_and_stock(
        steps in prop::collection::vec(step(), 1..120),
        shuffled in any::<bool>(),
        per_minute in 1u32..600,
        max_active in 1u32..6,
    ) {
        let mode = if shuffled { RoomMode::Shuffled } else { RoomMode::Fifo };
        let mut room = Room::new(config(mode, per_minute, max_active));
        let mut now = at(-5_000);
        let mut admitted: Vec<(TicketSeq, Timestamp)> = Vec::new();
        for step in steps {
            match step {
                Step::Join(n) => { let _ = room.join(&user(n), now); }
                Step::Finish(n) => room.finish(&user(n)),
                Step::State(state) => room.set_state(state),
                Step::Tick { after_ms, buyable } => {
                    now = Timestamp(now.0 + after_ms);
                    let active_before = room.active_count(now);
                    let state = room.state();
                    let batch = room.admit_due(now, buyable);
                    if buyable == 0 || now < START || matches!(state, RoomState::Paused | RoomState::Closed) {
                        prop_assert!(batch.is_empty());
                    }
                    if state == RoomState::Open {
                        // (After everyone was let in at once the active count may be above the
                        // cap: then nobody more comes in until it is below again.)
                        prop_assert!(batch.is_empty() || active_before + batch.len() <= max_active as usize, "the cap");
                        let pace = (f64::from(per_minute) / 60.0).max(1.0);
                        prop_assert!(batch.len() as f64 <= pace, "at most a second's worth at once");
                    }
                    admitted.extend(batch.iter().map(|&seq| (seq, now)));
                }
            }
        }
        let seqs: Vec<TicketSeq> = admitted.iter().map(|&(seq, _)| seq).collect();
        let mut unique = seqs.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assert_eq!(unique.len(), seqs.len(), "nobody let in twice");
        for &(seq, when) in &admitted {
            let ticket = room.ticket(seq).unwrap();
            prop_assert_eq!(ticket.admitted_at, Some(when));
            prop_assert!(when >= START && ticket.joined_at <= when);
        }
        if !shuffled {
            prop_assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "arrival order: {:?}", seqs);
        }
    }
}
