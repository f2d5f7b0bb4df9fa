//! Accounts: unique usernames, found again by name.

use super::Harness;
use crate::backend::{EngineError, NewUser};

pub async fn users_are_unique_by_username(h: &mut impl Harness) {
    let backend = h.backend().await;
    let new = |name: &str, hash: &str| NewUser { username: name.to_owned(), password_hash: hash.to_owned() };

    let alice = backend.create_user(new("alice", "hash-a")).await.expect("create alice");
    assert!(!alice.id.is_empty());
    assert_eq!((alice.username.as_str(), alice.password_hash.as_str()), ("alice", "hash-a"));
    let taken = backend.create_user(new("alice", "hash-other")).await;
    assert!(matches!(taken, Err(EngineError::UsernameTaken)), "{taken:?}");

    let bob = backend.create_user(new("bob", "hash-b")).await.expect("create bob");
    assert_ne!(bob.id, alice.id);
    assert_eq!(backend.find_user("alice").await.expect("find alice"), Some(alice), "the first account stays");
    assert_eq!(backend.find_user("bob").await.expect("find bob"), Some(bob));
    assert_eq!(backend.find_user("nobody").await.expect("find nobody"), None);
}
