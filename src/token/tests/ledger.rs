//! The ledger: what `keys` shows, `drop_token`, and the fetch/coalesced
//! outcomes.

use super::*;

#[tokio::test(start_paused = true)]
async fn concurrent_callers_see_one_fetch_and_the_rest_coalesced() {
    let source = ScriptedSource::new(Duration::from_millis(300));
    let cache = cache(&source);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&key(None)).await.map(|l| l.outcome) })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.ok().and_then(Result::ok));
    }
    let fetched = outcomes
        .iter()
        .filter(|o| **o == Some(Outcome::Fetch))
        .count();
    let coalesced = outcomes
        .iter()
        .filter(|o| **o == Some(Outcome::Coalesced))
        .count();
    assert_eq!((fetched, coalesced), (1, 19));
    let hit = cache.get(&key(None)).await.map(|l| l.outcome).ok();
    assert_eq!(hit, Some(Outcome::Hit));
}

#[tokio::test(start_paused = true)]
async fn keys_show_timing_last_success_and_last_error_without_a_token() {
    let source = ScriptedSource::new(Duration::from_millis(10));
    let cache = cache(&source);
    let started = Instant::now();
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    source.refuse_mid("200", refused("unauthorized_client", "MID 200 not allowed"));
    let _ = cache.get(&key(Some("200"))).await;

    let views = cache.keys();
    assert_eq!(views.len(), 2);
    let default = &views[0];
    assert_eq!(default.key, key(None));
    let token = default.token.as_ref().expect("a token is held");
    assert_eq!(token.sent_at, started);
    assert_eq!(token.expires_at, started + Duration::from_secs(1080));
    assert_eq!(
        token.refresh_at,
        token.expires_at - Duration::from_secs(120)
    );
    assert_eq!(token.rest_host, "127.0.0.1");
    assert!(default.last_success.is_some() && default.last_error.is_none());
    assert!(default.backoff_until.is_none());

    let refused_bu = &views[1];
    assert_eq!(refused_bu.key, key(Some("200")));
    assert!(refused_bu.token.is_none() && refused_bu.last_success.is_none());
    let (_, error) = refused_bu.last_error.as_ref().expect("the refusal");
    assert!(matches!(error, TokenError::Rejected { error, .. } if error == "unauthorized_client"));
    assert!(
        refused_bu
            .backoff_until
            .is_some_and(|until| until > Instant::now())
    );
    // Nothing in what the ledger shows can carry the token itself.
    assert!(!format!("{views:?}").contains("token-1"));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_token_is_fetched_anew_and_a_backoff_is_lifted() {
    let source = ScriptedSource::new(Duration::from_millis(10));
    let cache = cache(&source);
    assert_eq!(token_of(&cache, &key(None)).await, "token-1");
    assert!(cache.drop_token(&key(None)));
    assert!(!cache.drop_token(&key(None)), "nothing left to drop");
    assert!(!cache.drop_token(&key(Some("404"))), "an unknown key");
    assert_eq!(token_of(&cache, &key(None)).await, "token-2");
    assert!(cache.keys()[0].last_success.is_some());

    // A key in backoff is asked again at once after a drop.
    source.fail_next(refused("invalid_scope", "scope x not granted"), 1);
    let scoped = key_with("100", "x");
    assert!(token_of(&cache, &scoped).await.starts_with("error"));
    assert!(token_of(&cache, &scoped).await.starts_with("error"));
    assert_eq!(source.calls(), 3, "the second ask was held back");
    cache.drop_token(&scoped);
    assert_eq!(token_of(&cache, &scoped).await, "token-4");
}
