//! Sign-in sessions kept in Redis (`REDIS_URL`): the same guarantees as the database store —
//! a key per session that expires with it, sign-out and disabling end sessions at once, a
//! reset ends them all, the tenant switch is remembered — against the real Redis on
//! 127.0.0.1:6379 that CI runs. Ignored by plain `cargo test` (no services); `.ci/redis/run`
//! runs it, and fails when Redis is not there.

use redis::AsyncCommands;
use reqwest::StatusCode;
use switchboard_domain::accounts::Role;
use switchboard_testkit::{Options, PASSWORD, TestApp, spawn_app_with};

const REDIS: &str = "redis://127.0.0.1:6379";

async fn app() -> (TestApp, String) {
    let prefix = format!("sbtest:{}:", uuid::Uuid::new_v4().simple());
    let t = spawn_app_with(Options {
        settings: vec![
            ("REDIS_URL".into(), REDIS.into()),
            ("REDIS_PREFIX".into(), prefix.clone()),
        ],
        ..Default::default()
    })
    .await;
    (t, prefix)
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379")
}

async fn session_keys(prefix: &str) -> Vec<String> {
    redis()
        .await
        .keys(format!("{prefix}session:*"))
        .await
        .unwrap()
}

#[tokio::test]
#[ignore = "needs Redis (.ci/redis/run)"]
async fn sessions_live_in_redis_and_end_with_sign_out() {
    let (t, prefix) = app().await;
    assert_eq!(t.app.sessions.kind(), "redis");
    let ready = t.browser().get("/ready").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(
        ready
            .text()
            .await
            .unwrap()
            .contains("sessions in the redis")
    );
    let (mut b, user_id, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    assert!(b.page("/").await.contains("Acme Plumbing"));
    let keys = session_keys(&prefix).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis().await.ttl(&keys[0]).await.unwrap();
    assert!(
        (12 * 3600 - 60..=12 * 3600).contains(&ttl),
        "expires with the 12 h idle timeout: {ttl}"
    );
    let stored: String = redis().await.get(&keys[0]).await.unwrap();
    assert!(stored.contains(&user_id.to_string()));
    assert_eq!(
        switchboard_services::sessions::count_for_user(&t.app, user_id)
            .await
            .unwrap(),
        1
    );
    let resp = b.post_form("/logout", &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(session_keys(&prefix).await.is_empty());
    assert_eq!(b.get("/").await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
#[ignore = "needs Redis (.ci/redis/run)"]
async fn an_idle_session_in_redis_is_refused_and_removed() {
    let (t, prefix) = app().await;
    let (b, _, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let key = session_keys(&prefix).await.remove(0);
    let stored: String = redis().await.get(&key).await.unwrap();
    let mut record: serde_json::Value = serde_json::from_str(&stored).unwrap();
    record["last_seen_at"] =
        serde_json::json!((chrono::Utc::now() - chrono::Duration::hours(13)).to_rfc3339());
    let _: () = redis().await.set(&key, record.to_string()).await.unwrap();
    assert_eq!(b.get("/").await.status(), StatusCode::SEE_OTHER);
    assert!(session_keys(&prefix).await.is_empty());
}

/// A request past `SESSION_TOUCH_SECS` moves the session's last-seen time and its expiry, and
/// nothing else: the touch changes the one field inside Redis rather than writing back a
/// record read earlier, which would undo a tenant switch made in between.
#[tokio::test]
#[ignore = "needs Redis (.ci/redis/run)"]
async fn a_touch_in_redis_moves_only_the_last_seen_time() {
    let (t, prefix) = app().await;
    let (b, _, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let key = session_keys(&prefix).await.remove(0);
    let stored: String = redis().await.get(&key).await.unwrap();
    let before: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let mut record = before.clone();
    record["last_seen_at"] =
        serde_json::json!((chrono::Utc::now() - chrono::Duration::hours(11)).to_rfc3339());
    let _: () = redis()
        .await
        .set_ex(&key, record.to_string(), 3600)
        .await
        .unwrap();
    assert_eq!(b.get("/").await.status(), StatusCode::OK);
    let stored: String = redis().await.get(&key).await.unwrap();
    let after: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let seen: chrono::DateTime<chrono::Utc> =
        after["last_seen_at"].as_str().unwrap().parse().unwrap();
    assert!(
        chrono::Utc::now() - seen < chrono::Duration::minutes(1),
        "{after}"
    );
    for field in ["user_id", "tenant_id", "created_at", "expires_at"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    let ttl: i64 = redis().await.ttl(&key).await.unwrap();
    assert!(ttl > 11 * 3600, "the expiry moved with it: {ttl}");
}

#[tokio::test]
#[ignore = "needs Redis (.ci/redis/run)"]
async fn disabling_or_a_reset_ends_every_redis_session() {
    let (t, prefix) = app().await;
    let (one, user_id, email) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let mut two = t.browser();
    two.sign_in(&email, PASSWORD).await;
    assert_eq!(session_keys(&prefix).await.len(), 2);

    // A password reset ends both.
    let mut b = t.browser();
    b.page("/password/forgot").await;
    b.post_form("/password/forgot", &[("email", &email)]).await;
    let mails = switchboard_services::mail::mailbox(&t.app).await.unwrap();
    let text = &mails[0].body_text;
    let at = text.find("/password/reset/").unwrap();
    let link = text[at..].split_whitespace().next().unwrap().to_string();
    b.page(&link).await;
    let resp = b
        .post_form(&link, &[("password", "another long passphrase")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(session_keys(&prefix).await.is_empty());
    assert_eq!(one.get("/").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(two.get("/").await.status(), StatusCode::SEE_OTHER);

    // Disabling ends a fresh one too.
    let mut three = t.browser();
    three.sign_in(&email, "another long passphrase").await;
    assert_eq!(session_keys(&prefix).await.len(), 1);
    switchboard_services::accounts::disable_user(&t.app, user_id)
        .await
        .unwrap();
    assert!(session_keys(&prefix).await.is_empty());
    assert_eq!(three.get("/").await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
#[ignore = "needs Redis (.ci/redis/run)"]
async fn an_agencys_tenant_switch_is_kept_in_the_redis_session() {
    let (t, _) = app().await;
    let mut b = t.browser();
    b.page("/signup").await;
    b.post_form(
        "/signup",
        &[("email", "ops@agency.example"), ("password", PASSWORD)],
    )
    .await;
    b.page("/onboarding").await;
    b.post_form(
        "/onboarding",
        &[
            ("business_name", "First Client"),
            ("time_zone", "UTC"),
            ("agency_name", "Agency"),
        ],
    )
    .await;
    assert!(
        b.page("/settings")
            .await
            .contains(r#"value="First Client""#)
    );
    b.post_form(
        "/agency/sub-accounts",
        &[("business_name", "Second Client"), ("time_zone", "UTC")],
    )
    .await;
    assert!(
        b.page("/settings")
            .await
            .contains(r#"value="Second Client""#)
    );
}

/// Live updates travel through Redis pub/sub: while a process's subscription is down, the
/// events published meanwhile never reach it. When it subscribes again, its open streams end
/// (the pages reconnect and reload what they missed) instead of going on with a hole.
#[tokio::test]
#[ignore = "needs Redis (.ci/redis/run)"]
async fn live_streams_end_when_the_pubsub_connection_was_lost() {
    let (t, _) = app().await;
    let (b, _, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let mut stream = b.get("/events").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut redis().await)
        .await
        .unwrap();
    let read = async { while stream.chunk().await.unwrap().is_some() {} };
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .is_ok(),
        "the stream ended once the subscription was back"
    );
    assert_eq!(b.get("/events").await.status(), StatusCode::OK);
}
