//! Operations: the refused-webhook limit, `/metrics`, correlation ids from a webhook into
//! the jobs it causes, and the sweep that re-enqueues work whose job was lost.

use switchboard_services::jobs::{QUEUE_INBOUND, QUEUE_SEND};
use switchboard_testkit::{TestApp, inbound, spawn_app};

#[tokio::test]
async fn forged_bursts_get_429_but_signed_traffic_from_the_same_address_never_does() {
    let t = spawn_app().await;
    let url = format!("{}/webhooks/twilio/sms", t.address);
    let forged = |i: usize| {
        let params = inbound(
            &t.tenant.account_sid,
            "+17135550150",
            &t.tenant.number,
            &format!("forged {i}"),
        );
        t.http
            .post(&url)
            .header("X-Twilio-Signature", "bm90IGEgc2lnbmF0dXJl")
            .form(&params)
            .send()
    };
    let burst = switchboard_api::webhooks::REFUSED_BURST as usize;
    for i in 0..burst {
        assert_eq!(
            forged(i).await.unwrap().status(),
            403,
            "call {i} is refused as forged"
        );
    }
    let limited = forged(burst).await.unwrap();
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After: {wait}");
    let header = |name: &str| limited.headers()[name].to_str().unwrap().to_string();
    assert_eq!(header("x-ratelimit-limit"), burst.to_string());
    assert_eq!(header("x-ratelimit-remaining"), "0");
    assert_eq!(header("x-ratelimit-reset"), wait.to_string());

    // Signed texts from the same address go through, every one of them, while forgeries are
    // still refused with 429.
    for i in 0..5 {
        let text = t.text_in("+17135550151", &format!("signed {i}")).await;
        assert_eq!(text.status(), 200);
        assert_eq!(forged(burst + 1 + i).await.unwrap().status(), 429);
    }
    let stored = t.messages(t.tenant.tenant_id).await;
    assert_eq!(
        stored
            .iter()
            .filter(|m| m.body.starts_with("signed"))
            .count(),
        5
    );
    assert_eq!(
        stored
            .iter()
            .filter(|m| m.body.starts_with("forged"))
            .count(),
        0
    );

    let metrics = t
        .http
        .get(format!("{}/metrics", t.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"switchboard_webhooks_total{endpoint="sms",result="forbidden"}"#,
        r#"switchboard_webhooks_total{endpoint="sms",result="rate_limited"}"#,
        r#"switchboard_webhooks_total{endpoint="sms",result="stored"}"#,
        r#"switchboard_queue_depth{queue="switchboard.send_message"}"#,
        "switchboard_inbound_commits_total",
        "switchboard_inbound_texts_total",
        "switchboard_inbound_wal_sync_microseconds_total",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    // The five signed texts went through the inbound writer (the forgeries never reached
    // it); on SQLite its syncer synced the WAL before answering them, on Postgres the commit
    // is durable by itself.
    let inbound = t.app.ingest.stats();
    assert_eq!(inbound.texts, 5, "{inbound:?}");
    assert!((1..=5).contains(&inbound.commits), "{inbound:?}");
    assert!(!inbound.write_time.is_zero(), "{inbound:?}");
    if switchboard_services::db::is_postgres(&t.app.settings.database_url) {
        assert_eq!(inbound.wal_syncs, 0, "{inbound:?}");
    } else {
        assert!(
            inbound.wal_syncs >= 1 && !inbound.wal_sync_time.is_zero(),
            "{inbound:?}"
        );
    }
}

/// Every stored job payload of `queue`, as JSON text (the SQLite table or the Redis hash).
async fn job_payloads(t: &TestApp, queue: &str) -> Vec<String> {
    match t.app.jobs.redis_queues() {
        Some(queues) => {
            let data: std::collections::HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
                .arg(queues.config(queue).job_data_hash())
                .query_async(&mut queues.conn().clone())
                .await
                .unwrap();
            data.into_values()
                .map(|v| String::from_utf8(v).unwrap())
                .collect()
        }
        None => sqlx::query_scalar::<_, Vec<u8>>("SELECT job FROM Jobs WHERE job_type = ?")
            .bind(queue)
            .fetch_all(t.app.jobs.sqlite_pool().unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|v| String::from_utf8(v).unwrap())
            .collect(),
    }
}

#[tokio::test]
async fn a_webhooks_request_id_is_echoed_and_carried_into_its_jobs_and_their_jobs() {
    let t = spawn_app().await;
    let params = inbound(
        &t.tenant.account_sid,
        "+17135550160",
        &t.tenant.number,
        "hi",
    );
    let url = format!("{}/webhooks/twilio/sms", t.address);
    let signature =
        switchboard_domain::signature::twilio::compute(&t.tenant.auth_token, &url, &params);
    let resp = t
        .http
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .header("X-Request-Id", "req-7f3a-webhook")
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-7f3a-webhook");
    t.wait_for_sends(2).await;
    let handled = job_payloads(&t, QUEUE_INBOUND).await;
    assert!(
        handled
            .iter()
            .any(|j| j.contains("\"request_id\":\"req-7f3a-webhook\"")),
        "{handled:?}"
    );
    // One send job for the bot's two replies: the second goes out from the same job once the
    // first is accepted.
    let sends = job_payloads(&t, QUEUE_SEND).await;
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert!(
        sends[0].contains("\"request_id\":\"req-7f3a-webhook\""),
        "the send job carries it: {sends:?}"
    );

    // Without one, a new id is made and returned.
    let other = t.text_in("+17135550161", "hello").await;
    let made = other.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(made.len(), 36, "a UUID: {made}");
}

/// The sweep gives a text whose job was lost a new one once it has sat untouched for
/// `STUCK_AFTER_SECS`, not before (a reply waiting out its longest backoff is not stuck), and
/// looks only `LOOK_BACK_HOURS` back.
#[tokio::test]
async fn the_sweep_re_enqueues_only_recent_work_left_untouched_past_its_longest_wait() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use switchboard_domain::MessageId;
    use switchboard_entity::message;
    use switchboard_services::sweep::{self, LOOK_BACK_HOURS, STUCK_AFTER_SECS};
    use switchboard_testkit::spawn_app_without_workers;

    let t = spawn_app_without_workers().await;
    assert_eq!(t.text_in("+17135550151", "hi").await.status(), 200);
    let text = t.messages(t.tenant.tenant_id).await[0].clone();
    let touched = async |secs_ago: i64| {
        message::Entity::update_many()
            .col_expr(
                message::Column::UpdatedAt,
                (chrono::Utc::now() - chrono::Duration::seconds(secs_ago)).into(),
            )
            .filter(message::Column::Id.eq(text.id))
            .exec(&t.db.write)
            .await
            .unwrap();
    };

    assert_eq!(sweep::run(&t.app).await.unwrap(), 0, "just stored");
    touched(switchboard_services::messaging::MAX_BACKOFF_SECS as i64).await;
    assert_eq!(
        sweep::run(&t.app).await.unwrap(),
        0,
        "within the longest wait"
    );
    touched(STUCK_AFTER_SECS + 5).await;
    assert_eq!(sweep::run(&t.app).await.unwrap(), 1, "stuck");

    // The same text, made before the window (its id carries its creation time).
    let hours = std::time::Duration::from_secs((LOOK_BACK_HOURS as u64 + 1) * 3600);
    let old = MessageId::first_at(std::time::SystemTime::now() - hours);
    message::Entity::update_many()
        .col_expr(message::Column::Id, old.into())
        .filter(message::Column::Id.eq(text.id))
        .exec(&t.db.write)
        .await
        .unwrap();
    assert_eq!(
        sweep::run(&t.app).await.unwrap(),
        0,
        "older than the window"
    );
}

/// Once the store failed (a failed WAL sync, a panicked inbound writer), `/health` and
/// `/ready` say why with a 503, and `switchboard serve` stops with an error so that its
/// supervisor restarts it. (That no text is taken then is the unit test
/// `ingest::tests::after_a_failed_wal_sync_no_commit_is_answered_and_no_text_taken`.)
#[tokio::test]
async fn a_failed_store_answers_503_and_stops_the_server() {
    let t = spawn_app().await;
    let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ops_url = format!("http://{}", ops.local_addr().unwrap());
    tokio::spawn(
        poem::Server::new_with_acceptor(poem::listener::TcpAcceptor::from_tokio(ops).unwrap())
            .run(switchboard_api::ops_routes(t.app.clone())),
    );
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = tokio::spawn(switchboard::serve(
        t.app.clone(),
        web,
        false,
        std::future::pending(),
    ));
    let get = async |path: &str| t.http.get(format!("{ops_url}{path}")).send().await.unwrap();
    assert_eq!(get("/health").await.status(), 200);

    t.app
        .health
        .fail("WAL sync failed: Input/output error (os error 5)");
    for path in ["/health", "/ready"] {
        let resp = get(path).await;
        assert_eq!(resp.status(), 503, "{path}");
        assert!(
            resp.text().await.unwrap().contains("WAL sync failed"),
            "{path}"
        );
    }
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(20), serving)
        .await
        .expect("serve stops")
        .unwrap();
    assert!(
        stopped
            .unwrap_err()
            .to_string()
            .contains("the store failed")
    );
}

/// Of a conversation's replies waiting for Twilio, the sweep re-enqueues only the oldest: the
/// others wait their turn (untouched meanwhile, they would sort first and could fill every
/// sweep), and the oldest's send job goes on with them.
#[tokio::test]
async fn the_sweep_re_enqueues_only_the_oldest_waiting_reply_of_a_conversation() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use switchboard_domain::message::MessageStatus;
    use switchboard_entity::message;
    use switchboard_services::sweep::{self, STUCK_AFTER_SECS};
    use switchboard_services::{TenantCtx, messaging};
    use switchboard_testkit::spawn_app_without_workers;

    let t = spawn_app_without_workers().await;
    assert_eq!(t.text_in("+17135550152", "hi").await.status(), 200);
    let text = t.messages(t.tenant.tenant_id).await[0].clone();
    let ctx = TenantCtx::for_job(t.tenant.tenant_id);
    let head = messaging::send_manual(&t.app, &ctx, text.conversation_id, "first", None)
        .await
        .unwrap()
        .id;
    let behind = messaging::send_manual(&t.app, &ctx, text.conversation_id, "second", None)
        .await
        .unwrap()
        .id;
    let age = async |id, secs_ago: i64, status: MessageStatus| {
        message::Entity::update_many()
            .col_expr(message::Column::Status, status.as_str().into())
            .col_expr(
                message::Column::UpdatedAt,
                (chrono::Utc::now() - chrono::Duration::seconds(secs_ago)).into(),
            )
            .filter(message::Column::Id.eq(id))
            .exec(&t.db.write)
            .await
            .unwrap();
    };
    // The text was handled; the head's attempt is being checked with Twilio (touched just
    // now); the reply behind it has waited untouched for long.
    message::Entity::update_many()
        .col_expr(message::Column::HandledAt, Some(chrono::Utc::now()).into())
        .filter(message::Column::Id.eq(text.id))
        .exec(&t.db.write)
        .await
        .unwrap();
    age(head, 0, MessageStatus::Sending).await;
    age(behind, STUCK_AFTER_SECS + 60, MessageStatus::Queued).await;
    assert_eq!(sweep::run(&t.app).await.unwrap(), 0, "it waits its turn");

    age(head, STUCK_AFTER_SECS + 5, MessageStatus::Sending).await;
    assert_eq!(
        sweep::run(&t.app).await.unwrap(),
        1,
        "the head, whose job was lost"
    );
}

/// The sweep deletes sign-in sessions that ended without a sign-out (idle or past their end)
/// from the database store (Redis expires its own keys), and mailed links a week after they
/// expired: anyone may ask for a reset link, so neither table may only grow.
#[tokio::test]
async fn the_sweep_purges_ended_sessions_and_long_expired_links() {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait};
    use switchboard_domain::accounts::Role;
    use switchboard_entity::email_token;
    use switchboard_services::recovery::KEEP_EXPIRED_LINK_DAYS;
    use switchboard_services::{sessions, sweep};
    use switchboard_testkit::SessionTime;

    let t = switchboard_testkit::spawn_app_without_workers().await;
    let (_idle, idle, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let (_ended, ended, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let (_live, live, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    t.age_sessions(idle, SessionTime::LastSeen, chrono::Duration::hours(13))
        .await;
    t.age_sessions(ended, SessionTime::Expires, chrono::Duration::minutes(1))
        .await;
    let link = async |hash: &str, expired_days_ago: i64| {
        let expires = chrono::Utc::now() - chrono::Duration::days(expired_days_ago);
        email_token::ActiveModel {
            token_hash: Set(hash.into()),
            user_id: Set(live),
            purpose: Set("reset".into()),
            expires_at: Set(expires),
            used_at: Set(None),
            created_at: Set(expires - chrono::Duration::hours(1)),
        }
        .insert(&t.db.write)
        .await
        .unwrap();
    };
    link("old", KEEP_EXPIRED_LINK_DAYS + 1).await;
    link("recent", 1).await;
    link("live", -1).await;

    sweep::run(&t.app).await.unwrap();
    let mut kept: Vec<String> = email_token::Entity::find()
        .all(&t.db.read)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.token_hash)
        .collect();
    kept.sort();
    assert_eq!(kept, ["live", "recent"]);
    if matches!(t.app.sessions, sessions::Store::Db) {
        let users: Vec<_> = t
            .stored_sessions()
            .await
            .into_iter()
            .map(|(_, r)| r.user_id)
            .collect();
        assert_eq!(users, [live]);
    }
}
