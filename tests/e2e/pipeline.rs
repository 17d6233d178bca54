//! The main job: signed inbound -> stored -> bot reply -> Twilio -> status callback.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use switchboard_domain::message::{Direction, MessageStatus, Source};
use switchboard_domain::phone::E164;
use switchboard_entity::{contact, conversation, tenant};
use switchboard_services::accounts::NewBusiness;
use switchboard_services::{TenantCtx, dashboard, settings};
use switchboard_testkit::{TestApp, param, spawn_app};

#[tokio::test]
async fn signed_inbound_is_stored_answered_by_the_bot_and_delivered() {
    let t = spawn_app().await;
    let resp = t
        .text_in("+17135550123", "my water heater is leaking")
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/xml");
    assert!(resp.text().await.unwrap().contains("<Response/>"));

    // The bot's greeting and first question reach Twilio with the right form fields.
    let sends = t.wait_for_sends(2).await;
    for send in &sends {
        assert_eq!(param(send, "To"), Some("+17135550123"));
        assert_eq!(param(send, "From"), Some("+14155550100"));
        let callback = param(send, "StatusCallback").unwrap();
        assert!(
            callback.starts_with(&format!("{}/webhooks/twilio/status?m=", t.address)),
            "{callback}"
        );
    }
    assert!(param(&sends[0], "Body").unwrap().contains("Acme Plumbing"));
    assert!(param(&sends[1], "Body").unwrap().contains("1 for Repair"));
    let requests = t.twilio.received_requests().await.unwrap();
    let auth = requests[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        auth.starts_with("Basic "),
        "basic auth with the tenant's account"
    );
    assert!(requests[0].url.path().contains(&t.tenant.account_sid));

    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .filter(|m| m.provider_sid.is_some() && m.direction == Direction::Outbound)
                .count()
                == 2
        })
        .await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].direction, Direction::Inbound);
    assert_eq!(rows[0].source, Source::Customer);
    assert!(rows[0].handled_at.is_some());
    let reply = &rows[1];
    assert_eq!(
        (reply.source, reply.status),
        (Source::Bot, MessageStatus::Sending)
    );

    // Twilio's status callback moves it forward; a late "sent" does not move it back.
    let sid = reply.provider_sid.clone().unwrap();
    let path = format!("/webhooks/twilio/status?m={}", reply.id);
    let callback = |status: &str| {
        vec![
            ("MessageSid".to_string(), sid.clone()),
            ("MessageStatus".to_string(), status.to_string()),
            ("AccountSid".to_string(), t.tenant.account_sid.clone()),
            ("From".to_string(), t.tenant.number.clone()),
            ("To".to_string(), "+17135550123".to_string()),
        ]
    };
    assert_eq!(
        t.post_signed(&path, &t.tenant.auth_token, &callback("delivered"))
            .await
            .status(),
        200
    );
    assert_eq!(
        t.post_signed(&path, &t.tenant.auth_token, &callback("sent"))
            .await
            .status(),
        200
    );
    let rows = t.messages(t.tenant.tenant_id).await;
    assert_eq!(rows[1].status, MessageStatus::Delivered);
    assert!(rows[1].sent_at.is_some());
}

#[tokio::test]
async fn the_bot_walks_the_script_and_fills_the_contact() {
    let t = spawn_app().await;
    let from = "+17135550124";
    let answers = ["hi", "2", "1", "my zip is 78701-1234", "3", "Maria Lopez"];
    let mut expected_sends = 0;
    for (i, text) in answers.iter().enumerate() {
        assert_eq!(t.text_in(from, text).await.status(), 200);
        expected_sends += if i == 0 { 2 } else { 1 };
        t.wait_for_sends(expected_sends).await;
    }
    let sends = t.twilio_sends().await;
    let summary = param(sends.last().unwrap(), "Body").unwrap();
    for part in ["Maria Lopez", "Install", "Emergency", "78701", "Evening"] {
        assert!(summary.contains(part), "summary {summary:?} lacks {part}");
    }
    let contact = t.contact(from).await;
    assert_eq!(contact.name.as_deref(), Some("Maria Lopez"));
    assert_eq!(contact.status, "qualified");
    let fields = contact.fields.unwrap();
    assert_eq!(fields["zip"], "78701");
    assert_eq!(fields["urgency"], "Emergency");
    assert_eq!(fields["service"], "Install");
    assert_eq!(fields["best_time"], "Evening");
}

/// Sets the tenant's notification phone (the settings page's field).
async fn notify(t: &TestApp, owner: &str) {
    tenant::Entity::update_many()
        .col_expr(tenant::Column::NotifyPhone, Expr::value(owner))
        .filter(tenant::Column::Id.eq(t.tenant.tenant_id))
        .exec(&t.db.write)
        .await
        .unwrap();
}

/// Texts `answers` in from `from`, one at a time, each after the replies before it reached
/// Twilio; `sends` is how many sends there are after each.
async fn converse(
    t: &TestApp,
    from: &str,
    answers: &[(&str, usize)],
) -> Vec<Vec<(String, String)>> {
    let mut sends = Vec::new();
    for (text, n) in answers {
        assert_eq!(t.text_in(from, text).await.status(), 200);
        sends = t.wait_for_sends(*n).await;
    }
    sends
}

#[tokio::test]
async fn the_owner_gets_one_lead_alert_once_the_zip_is_in() {
    let t = spawn_app().await;
    let (owner, lead) = ("+13035550142", "+17135550126");
    notify(&t, owner).await;
    let to = |sends: &[Vec<(String, String)>], phone: &str| {
        sends
            .iter()
            .filter(|s| param(s, "To") == Some(phone))
            .map(|s| param(s, "Body").unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let sends = converse(&t, lead, &[("hi", 2), ("2", 3), ("1", 4)]).await;
    assert!(to(&sends, owner).is_empty(), "no alert before the ZIP");

    // The ZIP: the lead's next question, and the alert from the same number to the owner.
    let sends = converse(&t, lead, &[("78701", 6)]).await;
    let alerts: Vec<_> = sends
        .iter()
        .filter(|s| param(s, "To") == Some(owner))
        .collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(param(alerts[0], "From"), Some(t.tenant.number.as_str()));
    let rows = t.messages(t.tenant.tenant_id).await;
    let lead_thread = rows[0].conversation_id;
    assert_eq!(
        param(alerts[0], "Body").unwrap(),
        format!(
            "New lead {lead}\nService: Install\nUrgency: Emergency\nZIP: 78701\n{}/conversations?b={}&c={lead_thread}",
            t.address, t.tenant.tenant_id
        )
    );
    let alert = rows.iter().find(|m| m.source == Source::Alert).unwrap();
    assert_eq!(alert.direction, Direction::Outbound);
    assert_ne!(alert.conversation_id, lead_thread);
    let zip = rows.iter().find(|m| m.body == "78701").unwrap();
    assert_eq!(alert.idempotency_key, Some(format!("alert:{}", zip.id)));
    assert!(
        alert.id < rows.last().unwrap().id,
        "written before the question"
    );
    let contact = t.contact(owner).await;
    assert_eq!(contact.id, alert.contact_id);
    assert_eq!(contact.name.as_deref(), Some(contact::OWNER_NAME));
    let thread = conversation::Entity::find_by_id(alert.conversation_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert!(thread.bot_paused, "the bot never qualifies the owner");

    // The rest of the script alerts no more; the owner's answer gets no bot reply.
    let sends = converse(&t, lead, &[("3", 7), ("Maria", 8)]).await;
    assert_eq!(to(&sends, owner).len(), 1);
    assert!(
        to(&sends, lead)
            .last()
            .unwrap()
            .starts_with("Thanks Maria!")
    );
    t.text_in(owner, "calling them now").await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .any(|m| m.body == "calling them now" && m.handled_at.is_some())
        })
        .await;
    let answer = rows.iter().find(|m| m.body == "calling them now").unwrap();
    assert_eq!(answer.conversation_id, alert.conversation_id);
    assert_eq!(t.twilio_sends().await.len(), 8, "no reply to the owner");

    // The owner is no lead: the dashboard counts one lead, one conversation, and every
    // text of the lead's answered (not the owner's unanswered one).
    let ctx = TenantCtx::for_job(t.tenant.tenant_id);
    let stats = dashboard::stats(&t.app, &ctx).await.unwrap();
    assert_eq!((stats.leads_this_week, stats.active_conversations), (1, 1));
    assert_eq!(stats.response_rate_pct, Some(100));

    // Another notification phone: the former one is a contact like any other again.
    let new = NewBusiness {
        name: "Acme Plumbing".into(),
        time_zone: "America/Chicago".into(),
        notify_phone: Some(E164::parse("+13035550199").unwrap()),
    };
    settings::update_profile(&t.app, &ctx, new).await.unwrap();
    let former = t.contact(owner).await;
    assert_eq!((former.status.as_str(), former.name), ("new", None));
    let stats = dashboard::stats(&t.app, &ctx).await.unwrap();
    assert_eq!(stats.leads_this_week, 2);
}

#[tokio::test]
async fn an_alert_pauses_the_bot_the_owner_was_trying_and_none_goes_to_our_own_numbers() {
    let t = spawn_app().await;
    let (owner, lead) = ("+13035550144", "+17135550127");
    notify(&t, owner).await;
    converse(&t, owner, &[("hi", 2)]).await;
    let sends = converse(&t, lead, &[("hi", 4), ("1", 5), ("1", 6), ("78701", 8)]).await;
    let alert = sends
        .iter()
        .find(|s| param(s, "Body").unwrap().starts_with("New lead"));
    assert_eq!(param(alert.unwrap(), "To"), Some(owner));
    let rows = t.messages(t.tenant.tenant_id).await;
    let thread = conversation::Entity::find_by_id(rows[0].conversation_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows[0].body, "hi");
    assert!(
        thread.bot_paused,
        "the owner's thread with the bot is paused by the alert"
    );
    assert_eq!(t.contact(owner).await.status, "owner");
    // The owner's answer to the bot's first question is not taken for one.
    t.text_in(owner, "ok calling").await;
    t.wait_messages(t.tenant.tenant_id, |m| {
        m.iter()
            .any(|m| m.body == "ok calling" && m.handled_at.is_some())
    })
    .await;
    assert_eq!(t.twilio_sends().await.len(), 8);

    // A notification phone that is one of our numbers (here the lead's) gets no alert.
    notify(&t, &t.tenant.number).await;
    let lead = "+17135550128";
    let sends = converse(&t, lead, &[("hi", 10), ("1", 11), ("1", 12), ("78701", 13)]).await;
    assert!(param(&sends[12], "Body").unwrap().contains("best time"));
    let rows = t.messages(t.tenant.tenant_id).await;
    assert_eq!(
        rows.iter().filter(|m| m.source == Source::Alert).count(),
        1,
        "no second alert"
    );
}

#[tokio::test]
async fn an_owner_trying_the_bot_from_their_own_phone_gets_the_alert_before_the_next_question() {
    let t = spawn_app().await;
    let owner = "+13035550143";
    notify(&t, owner).await;
    let sends = converse(&t, owner, &[("hi", 2), ("1", 3), ("1", 4), ("78701", 6)]).await;
    assert!(
        param(&sends[4], "Body")
            .unwrap()
            .starts_with("New lead +13035550143")
    );
    assert!(param(&sends[5], "Body").unwrap().contains("best time"));
    // Their answer after the alert is still taken: the name question comes next.
    let sends = converse(&t, owner, &[("evening", 7)]).await;
    assert!(param(&sends[6], "Body").unwrap().contains("your name"));
    let rows = t.messages(t.tenant.tenant_id).await;
    assert!(
        rows.iter()
            .all(|m| m.conversation_id == rows[0].conversation_id),
        "one thread"
    );
}

#[tokio::test]
async fn an_invalid_answer_is_asked_again() {
    let t = spawn_app().await;
    let from = "+17135550125";
    t.text_in(from, "hello").await;
    t.wait_for_sends(2).await;
    t.text_in(from, "1").await; // service: Repair
    t.wait_for_sends(3).await;
    t.text_in(from, "whenever, no rush at all honestly").await; // urgency has no free text
    let sends = t.wait_for_sends(4).await;
    let reask = param(&sends[3], "Body").unwrap();
    assert!(reask.contains("1 (Emergency)"), "{reask}");
}

#[tokio::test]
async fn mms_keeps_every_media_url_and_type() {
    let t = spawn_app().await;
    let mut params = switchboard_testkit::twilio_fixture("inbound_mms");
    switchboard_testkit::set(&mut params, "To", &t.tenant.number);
    assert_eq!(t.post_sms(&params).await.status(), 200);
    let rows = t.wait_messages(t.tenant.tenant_id, |m| !m.is_empty()).await;
    let media = rows[0].media.clone().unwrap();
    assert_eq!(media.as_array().unwrap().len(), 2);
    assert_eq!(media[0]["content_type"], "image/jpeg");
    assert_eq!(media[1]["content_type"], "image/png");
    assert!(
        media[1]["url"]
            .as_str()
            .unwrap()
            .ends_with("ME00000000000000000000000000000002")
    );
}

/// A picture without words answers no question: no "didn't catch that", no retry used up.
#[tokio::test]
async fn a_picture_without_words_mid_script_gets_no_bot_reply() {
    let t = spawn_app().await;
    let mut params = switchboard_testkit::twilio_fixture("inbound_mms");
    switchboard_testkit::set(&mut params, "To", &t.tenant.number);
    let from = switchboard_testkit::param(&params, "From")
        .unwrap()
        .to_string();
    t.text_in(&from, "hi").await;
    t.wait_for_sends(2).await;
    switchboard_testkit::set(&mut params, "Body", "");
    assert_eq!(t.post_sms(&params).await.status(), 200);
    // The bot's replies are written in the transaction that marks the text handled.
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .any(|m| m.media.is_some() && m.handled_at.is_some())
        })
        .await;
    let replies = rows.iter().filter(|m| m.direction == Direction::Outbound);
    assert_eq!(replies.count(), 2, "no reply to the picture");
    t.text_in(&from, "1").await;
    let sends = t.wait_for_sends(3).await;
    assert!(param(&sends[2], "Body").unwrap().contains("How soon"));
    assert_eq!(t.contact(&from).await.fields.unwrap()["service"], "Repair");
}

/// A customer answering two of a business's numbers at once: both answers stay on the one
/// contact (each turn reads the contact's fields again when it saves its answer).
#[tokio::test]
async fn answers_to_two_numbers_at_once_both_land_on_the_contact() {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    use switchboard_entity::phone_number;
    use switchboard_services::{TenantCtx, inbound};

    let t = switchboard_testkit::spawn_app_without_workers().await;
    let second = "+14155550101";
    phone_number::ActiveModel {
        id: Set(switchboard_domain::PhoneNumberId::new()),
        tenant_id: Set(t.tenant.tenant_id),
        e164: Set(second.into()),
        label: Set(None),
        bot: Set(phone_number::BotKind::Qualify),
        created_at: Set(chrono::Utc::now()),
        released_at: Set(None),
    }
    .insert(&t.db.write)
    .await
    .unwrap();
    let ctx = TenantCtx::for_job(t.tenant.tenant_id);
    let from = "+17135550141";
    let to = |number: &str, body: &str| {
        switchboard_testkit::inbound(&t.tenant.account_sid, from, number, body)
    };
    let handle_all = async || {
        let unhandled: Vec<_> = t
            .messages(t.tenant.tenant_id)
            .await
            .into_iter()
            .filter(|m| m.direction == Direction::Inbound && m.handled_at.is_none())
            .map(|m| m.id)
            .collect();
        futures::future::join_all(
            unhandled
                .iter()
                .map(|id| inbound::handle(&t.app, &ctx, *id)),
        )
        .await
    };
    for (number, body) in [(&*t.tenant.number, "hi"), (second, "hi"), (second, "1")] {
        assert_eq!(t.post_sms(&to(number, body)).await.status(), 200);
        handle_all().await;
    }
    assert_eq!(t.post_sms(&to(&t.tenant.number, "2")).await.status(), 200);
    assert_eq!(t.post_sms(&to(second, "today")).await.status(), 200);
    for handled in handle_all().await {
        handled.unwrap();
    }
    let fields = t.contact(from).await.fields.unwrap();
    assert_eq!(fields["service"], "Install", "{fields}");
    assert_eq!(fields["urgency"], "Today", "{fields}");
}

#[tokio::test]
async fn texts_sent_back_to_back_are_answered_in_order() {
    let t = spawn_app().await;
    let from = "+17135550126";
    // Stored in this order before any job runs; the jobs may run concurrently.
    for text in ["hello", "2", "1"] {
        assert_eq!(t.text_in(from, text).await.status(), 200);
    }
    let sends = t.wait_for_sends(4).await;
    let bodies: Vec<&str> = sends.iter().map(|s| param(s, "Body").unwrap()).collect();
    assert!(bodies[0].contains("Thanks for reaching out"), "{bodies:?}");
    assert!(bodies[1].contains("1 for Repair"), "{bodies:?}");
    assert!(bodies[2].contains("How soon"), "{bodies:?}");
    assert!(bodies[3].contains("ZIP"), "{bodies:?}");
    let contact = t.contact(from).await;
    let fields = contact.fields.unwrap();
    assert_eq!(fields["service"], "Install");
    assert_eq!(fields["urgency"], "Emergency");
}

/// Texts stored in one commit share one `HandleInbound` job row on the SQLite queue (a row per
/// text was ~20% of the inbound path), and each text is still handled and answered, a
/// sender's two texts in the job in the order they came although the job handles its texts
/// concurrently. On Postgres the jobs go to Redis, one per text; there the test checks the
/// answers.
#[tokio::test]
async fn texts_stored_in_one_commit_share_one_job_and_each_is_answered() {
    use std::time::Duration;
    use switchboard_services::jobs::{HandleInbound, QUEUE_INBOUND};
    use switchboard_testkit::{postgres_requested, spawn_app_without_workers};

    let t = spawn_app_without_workers().await;
    let senders: Vec<String> = (0..5).map(|i| format!("+1713555021{i}")).collect();
    let sqlite = !postgres_requested();
    // Hold the one write connection, which the inbound writer takes as its lock: the writer
    // waits for it with the first text, and the others queue up behind it for one commit.
    let pool = sqlite.then(|| t.app.db.write.get_sqlite_connection_pool());
    let lock = match pool {
        Some(pool) => Some(pool.acquire().await.unwrap()),
        None => None,
    };
    let tenant = t.tenant.tenant_id;
    // Until `n` texts are in: held by the writer on SQLite, stored on Postgres (where nothing
    // holds them).
    let arrived = |n: usize| {
        let t = &t;
        async move {
            let all_in = async {
                loop {
                    let count = if sqlite {
                        t.app.ingest.in_flight()
                    } else {
                        t.messages(tenant).await.len()
                    };
                    if count >= n {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), all_in)
                .await
                .expect("the texts arrive");
        }
    };
    let first = futures::future::join_all(
        senders
            .iter()
            .map(|s| t.text_in(s, "my water heater is leaking")),
    );
    // Once the five first texts are in, the first sender answers the bot's question; then the
    // writer may go on.
    let answer = async {
        arrived(5).await;
        let second = t.text_in(&senders[0], "1");
        let release = async {
            arrived(6).await;
            drop(lock);
        };
        tokio::join!(second, release).0
    };
    let (responses, answered) = tokio::join!(first, answer);
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(answered.status(), 200);
    let mut stored: Vec<_> = t.messages(tenant).await.iter().map(|m| m.id).collect();
    assert_eq!(stored.len(), 6);

    if sqlite {
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT job FROM Jobs WHERE job_type = ?1 ORDER BY rowid")
                .bind(QUEUE_INBOUND)
                .fetch_all(t.app.db.write.get_sqlite_connection_pool())
                .await
                .unwrap();
        let jobs: Vec<HandleInbound> = rows
            .iter()
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        // Six texts in at most two commits (the first text or few, which the writer took
        // before waiting for the lock, then the rest): one job per commit.
        assert!(jobs.len() <= 2, "one job per commit: {jobs:?}");
        assert!(jobs.iter().all(|j| j.tenant_id == tenant));
        let mut listed: Vec<_> = jobs
            .into_iter()
            .flat_map(|j| j.texts().map(|text| text.message_id))
            .collect();
        listed.sort();
        stored.sort();
        assert_eq!(listed, stored, "every stored text is in exactly one job");
    }

    tokio::spawn(switchboard_worker::run(
        t.app.clone(),
        std::future::pending(),
    ));
    // Each new sender gets the bot's greeting and its first question; the first sender's
    // answer then gets the second question.
    let sends = t.wait_for_sends(11).await;
    for (i, sender) in senders.iter().enumerate() {
        let bodies: Vec<&str> = sends
            .iter()
            .filter(|s| param(s, "To") == Some(sender))
            .map(|s| param(s, "Body").unwrap())
            .collect();
        assert_eq!(
            bodies.len(),
            if i == 0 { 3 } else { 2 },
            "{sender}: {bodies:?}"
        );
        assert!(bodies[0].contains("Thanks for reaching out"), "{bodies:?}");
        assert!(bodies[1].contains("1 for Repair"), "{bodies:?}");
        if i == 0 {
            assert!(bodies[2].contains("How soon"), "{bodies:?}");
        }
    }
    let messages = t.messages(tenant).await;
    let inbound: Vec<_> = messages
        .iter()
        .filter(|m| m.direction == Direction::Inbound)
        .collect();
    assert_eq!(inbound.len(), 6);
    assert!(inbound.iter().all(|m| m.handled_at.is_some()));
}

/// On SQLite the write pool's commits that only move apalis' bookkeeping (a job fetched,
/// locked, done) skip their WAL sync; the pipeline's own writes that must be durable (the
/// send's claim, its result) sync, at their commit or right after it. The counters are the
/// process's, so only growth is checked: "skipped" does not grow when the hooks never skip
/// (that mutation fails this test), while "synced" can also grow from another test's
/// commits.
#[tokio::test]
async fn apalis_bookkeeping_commits_skip_their_wal_sync_and_the_pipelines_writes_sync() {
    let t = spawn_app().await;
    // Synced at their commit, or by the WAL's group syncer after it.
    let durable =
        || switchboard_services::walbuf::commit_syncs().0 + switchboard_services::db::group_syncs();
    let (synced, skipped) = (durable(), switchboard_services::walbuf::commit_syncs().1);
    assert_eq!(
        t.text_in("+17135550124", "my water heater is leaking")
            .await
            .status(),
        200
    );
    t.wait_for_sends(2).await;
    t.wait_messages(t.tenant.tenant_id, |m| {
        m.iter().filter(|m| m.provider_sid.is_some()).count() == 3
    })
    .await;
    if t.app.jobs.sqlite_pool().is_none() {
        return; // Postgres: no VFS of ours; the database syncs each commit itself.
    }
    assert!(durable() > synced, "our writes synced");
    assert!(
        switchboard_services::walbuf::commit_syncs().1 > skipped,
        "apalis' bookkeeping skipped its sync"
    );
}

/// The outbox's idempotency index holds keyed rows only (migration
/// `m20261206_000005_outbox_key_index`), so the inbound writer's rows, which have no key, add
/// no entry to it. Checked on the index's definition as each backend stores it; that a retried
/// keyed reply still finds its row is `api::a_manual_reply_pauses_the_bot_until_resumed`.
#[tokio::test]
async fn the_outbox_key_index_covers_keyed_rows_only() {
    use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
    let t = spawn_app().await;
    let db = &t.app.db.read;
    let sql = match db.get_database_backend() {
        DatabaseBackend::Sqlite => {
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'ux_messages_idempotency'"
        }
        _ => "SELECT indexdef FROM pg_indexes WHERE indexname = 'ux_messages_idempotency'",
    };
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .expect("the index exists");
    let definition: String = row.try_get_by_index(0).expect("its definition");
    let definition = definition.to_lowercase().replace('"', "");
    let partial = definition.contains("where (idempotency_key is not null)")
        || definition.contains("where idempotency_key is not null");
    assert!(definition.contains("unique") && partial, "{definition}");
}

/// However many writers store texts (four on Postgres), one sender's texts are stored in the
/// order they arrived: their ids (the order the bot answers them in) follow it, and the last
/// of a run of STOP and START decides whether the contact is opted out.
#[tokio::test]
async fn a_senders_texts_are_stored_in_the_order_they_arrived() {
    use switchboard_domain::compliance;
    use switchboard_domain::phone::E164;
    use switchboard_entity::ingest::NewInbound;
    use switchboard_services::tenancy;
    use switchboard_testkit::spawn_app_without_workers;

    const SENDERS: usize = 16;
    const TEXTS: usize = 41;
    let t = spawn_app_without_workers().await;
    let number = E164::parse(&t.tenant.number).unwrap();
    let owner = tenancy::route(&t.app, &number)
        .await
        .unwrap()
        .unwrap()
        .owner;
    let senders: Vec<String> = (0..SENDERS).map(|s| format!("+171355503{s:02}")).collect();
    // Every sender alternates STOP and START, ending on STOP; the texts of all senders
    // interleave, in the order they are handed to the writers.
    let mut texts = Vec::new();
    for n in 0..TEXTS {
        for (s, from) in senders.iter().enumerate() {
            let body = if n % 2 == 0 { "STOP" } else { "START" };
            texts.push(NewInbound {
                tenant_id: owner.tenant_id,
                phone_number_id: owner.phone_number_id,
                from: from.clone(),
                provider_sid: format!("SM{:032}", s * 1000 + n),
                body: body.into(),
                media: None,
                segments: 1,
                encoding: "gsm7",
                received_at: chrono::Utc::now(),
                keyword: compliance::detect(body),
                provider_replied: false,
                request_id: None,
            });
        }
    }
    // Each is polled once in order, which queues it (there is room; tokio's per-task budget
    // is lifted, or queuing would stop after 128), then all are awaited.
    let mut pending: Vec<_> = texts
        .into_iter()
        .map(|it| Box::pin(futures::future::maybe_done(t.app.ingest.submit(it))))
        .collect();
    tokio::task::unconstrained(async {
        for text in &mut pending {
            let _ = futures::poll!(text.as_mut());
        }
    })
    .await;
    futures::future::join_all(pending.iter_mut().map(|text| text.as_mut())).await;
    for mut text in pending {
        assert!(text.as_mut().take_output().unwrap().is_ok());
    }

    let messages = t.messages(t.tenant.tenant_id).await;
    assert_eq!(messages.len(), SENDERS * TEXTS);
    for from in &senders {
        let contact = t.contact(from).await;
        let order: Vec<&str> = messages
            .iter()
            .filter(|m| m.contact_id == contact.id)
            .filter_map(|m| m.provider_sid.as_deref())
            .collect();
        let mut arrived = order.clone();
        arrived.sort();
        assert_eq!(order, arrived, "{from}'s texts by id");
        assert!(
            contact.opted_out_at.is_some(),
            "{from} ended on STOP: {:?}",
            contact.opt_out_keyword
        );
    }
}
