//! Provider failures: 429 retried, 21610 opts out, other 4xx fail with the code, 5xx retried
//! without ever sending twice.

use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use switchboard_domain::message::{MessageStatus, Source};
use switchboard_services::messaging::{self, Delivery};
use switchboard_testkit::wiremock::matchers::{method, path_regex};
use switchboard_testkit::wiremock::{Mock, ResponseTemplate};
use switchboard_testkit::{MESSAGES_PATH, Options, TwilioCreate, spawn_app_with};

fn bare() -> Options {
    Options {
        bare_twilio: true,
        ..Default::default()
    }
}

async fn help_reply(t: &switchboard_testkit::TestApp) {
    // HELP produces exactly one outbound message.
    assert_eq!(t.text_in("+17135550140", "HELP").await.status(), 200);
}

/// Twilio accepts every create call, and its Messages list (what a reconcile reads) is empty.
async fn accepts_sends_and_lists_none(t: &switchboard_testkit::TestApp) {
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(TwilioCreate)
        .mount(&t.twilio)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"messages": []})))
        .mount(&t.twilio)
        .await;
}

/// An app whose send jobs the test runs itself (no workers), Twilio accepting every create and
/// listing none, and a conversation with `from`, who texted "hi": the app, a job's context and
/// the conversation.
async fn conversation_without_workers(
    from: &str,
) -> (
    switchboard_testkit::TestApp,
    switchboard_services::TenantCtx,
    switchboard_domain::ConversationId,
) {
    let t = spawn_app_with(Options {
        no_worker: true,
        ..bare()
    })
    .await;
    accepts_sends_and_lists_none(&t).await;
    assert_eq!(t.text_in(from, "hi").await.status(), 200);
    let ctx = switchboard_services::TenantCtx::for_job(t.tenant.tenant_id);
    let conversation = t.messages(t.tenant.tenant_id).await[0].conversation_id;
    (t, ctx, conversation)
}

/// Marks `id` as claimed for its first attempt an hour ago, with no answer from Twilio: an
/// attempt whose outcome is unknown, its in-flight wait long over.
async fn timed_out_an_hour_ago(
    t: &switchboard_testkit::TestApp,
    id: switchboard_domain::MessageId,
) {
    use switchboard_entity::message;
    message::Entity::update_many()
        .col_expr(
            message::Column::Status,
            MessageStatus::Sending.as_str().into(),
        )
        .col_expr(message::Column::Attempts, 1.into())
        .col_expr(
            message::Column::UpdatedAt,
            (chrono::Utc::now() - chrono::Duration::hours(1)).into(),
        )
        .filter(message::Column::Id.eq(id))
        .exec(&t.db.write)
        .await
        .unwrap();
}

/// A person's reply `body` queued in `conversation` (its send job not run): its id.
async fn queued(
    t: &switchboard_testkit::TestApp,
    ctx: &switchboard_services::TenantCtx,
    conversation: switchboard_domain::ConversationId,
    body: &str,
) -> switchboard_domain::MessageId {
    messaging::send_manual(&t.app, ctx, conversation, body, None)
        .await
        .unwrap()
        .id
}

fn post_count(requests: &[switchboard_testkit::wiremock::Request]) -> usize {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count()
}

#[tokio::test]
async fn rate_limited_sends_are_retried() {
    let t = spawn_app_with(bare()).await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0")
                .set_body_json(serde_json::json!({"code": 20429, "message": "Too Many Requests"})),
        )
        .up_to_n_times(2)
        .mount(&t.twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(TwilioCreate)
        .mount(&t.twilio)
        .await;
    help_reply(&t).await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .any(|m| m.source == Source::Compliance && m.provider_sid.is_some())
        })
        .await;
    let reply = rows
        .iter()
        .find(|m| m.source == Source::Compliance)
        .unwrap();
    assert_eq!(reply.attempts, 3);
    assert_eq!(reply.status, MessageStatus::Sending);
    assert_eq!(post_count(&t.twilio.received_requests().await.unwrap()), 3);
}

/// A rate limit says "later", not "never": a reply rate-limited more often than
/// `MAX_SEND_ATTEMPTS` is still sent once Twilio takes it.
#[tokio::test]
async fn a_reply_rate_limited_past_the_attempt_limit_is_still_sent() {
    use switchboard_services::messaging::MAX_SEND_ATTEMPTS;

    let t = spawn_app_with(bare()).await;
    let limited = MAX_SEND_ATTEMPTS as u64 + 1;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0")
                .set_body_json(serde_json::json!({"code": 20429, "message": "Too Many Requests"})),
        )
        .up_to_n_times(limited)
        .mount(&t.twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(TwilioCreate)
        .mount(&t.twilio)
        .await;
    help_reply(&t).await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter().any(|m| {
                m.source == Source::Compliance
                    && (m.provider_sid.is_some() || m.status == MessageStatus::Failed)
            })
        })
        .await;
    let reply = rows
        .iter()
        .find(|m| m.source == Source::Compliance)
        .unwrap();
    assert_eq!(
        reply.status,
        MessageStatus::Sending,
        "{:?}",
        reply.error_message
    );
    assert!(reply.provider_sid.is_some());
    assert_eq!(reply.attempts, MAX_SEND_ATTEMPTS + 2);
    assert_eq!(
        post_count(&t.twilio.received_requests().await.unwrap()),
        limited as usize + 1
    );
}

/// An app whose Twilio refuses every create call with error 21610 (the recipient
/// unsubscribed at Twilio).
async fn refused_as_unsubscribed() -> switchboard_testkit::TestApp {
    let t = spawn_app_with(bare()).await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400
        })))
        .mount(&t.twilio)
        .await;
    t
}

#[tokio::test]
async fn error_21610_opts_the_contact_out_and_is_not_retried() {
    let t = refused_as_unsubscribed().await;
    help_reply(&t).await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter().any(|m| m.status == MessageStatus::Failed)
        })
        .await;
    let failed = rows
        .iter()
        .find(|m| m.status == MessageStatus::Failed)
        .unwrap();
    assert_eq!(failed.error_code, Some(21610));
    assert!(
        failed
            .error_message
            .as_deref()
            .unwrap()
            .contains("unsubscribed")
    );
    let contact = switchboard_entity::contact::Entity::find_by_id(failed.contact_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(contact.opt_out_keyword.as_deref(), Some("twilio:21610"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        post_count(&t.twilio.received_requests().await.unwrap()),
        1,
        "no retry"
    );
}

/// With Twilio's default opt-out handling (no Advanced Opt-Out, so no `OptOutType`), Twilio
/// answers STOP itself and refuses our own confirmation with 21610. The contact had opted out
/// with us already, so that refusal is no failure: the confirmation is suppressed, with why,
/// and the contact's own opt-out record stays as it was.
#[tokio::test]
async fn our_stop_confirmation_twilio_refused_because_it_answered_stop_itself_is_no_failure() {
    let t = refused_as_unsubscribed().await;
    let from = "+17135550141";
    assert_eq!(t.text_in(from, "STOP").await.status(), 200);
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter().any(|m| {
                m.source == Source::Compliance
                    && matches!(m.status, MessageStatus::Suppressed | MessageStatus::Failed)
            })
        })
        .await;
    let confirmation = rows
        .iter()
        .find(|m| m.source == Source::Compliance)
        .unwrap();
    assert_eq!(
        confirmation.status,
        MessageStatus::Suppressed,
        "{:?}",
        confirmation.error_message
    );
    assert_eq!(confirmation.error_code, Some(21610));
    assert_eq!(
        confirmation.error_message.as_deref(),
        Some(format!("not sent: {}", messaging::TWILIO_ANSWERED).as_str())
    );
    assert_eq!(
        t.contact(from).await.opt_out_keyword.as_deref(),
        Some("STOP")
    );
}

#[tokio::test]
async fn other_client_errors_fail_with_their_code() {
    let t = spawn_app_with(bare()).await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400
        })))
        .mount(&t.twilio)
        .await;
    help_reply(&t).await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter().any(|m| m.status == MessageStatus::Failed)
        })
        .await;
    let failed = rows
        .iter()
        .find(|m| m.status == MessageStatus::Failed)
        .unwrap();
    assert_eq!(failed.error_code, Some(21211));
    let contact = switchboard_entity::contact::Entity::find_by_id(failed.contact_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert!(contact.opted_out_at.is_none());
}

#[tokio::test]
async fn a_5xx_is_reconciled_before_any_resend_so_nothing_is_sent_twice() {
    let t = spawn_app_with(bare()).await;
    // Twilio created the message but answered 500; the list call then shows it.
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream error"))
        .mount(&t.twilio)
        .await;
    let body = switchboard_domain::compliance::help_reply("Acme Plumbing");
    let now = chrono::Utc::now().to_rfc2822();
    Mock::given(method("GET"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"messages": [
            {"sid": "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "status": "delivered", "body": body, "date_created": now}
        ]})))
        .mount(&t.twilio)
        .await;
    help_reply(&t).await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .any(|m| m.provider_sid.as_deref() == Some("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
        })
        .await;
    let reply = rows
        .iter()
        .find(|m| m.source == Source::Compliance)
        .unwrap();
    assert_eq!(reply.status, MessageStatus::Delivered);
    assert_eq!(reply.attempts, 1, "the reconcile is not a send attempt");
    let requests = t.twilio.received_requests().await.unwrap();
    assert_eq!(post_count(&requests), 1, "one create call only");
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method.as_str() == "GET")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_5xx_whose_message_never_reached_twilio_is_sent_again() {
    let t = spawn_app_with(bare()).await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&t.twilio)
        .await;
    accepts_sends_and_lists_none(&t).await;
    help_reply(&t).await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .any(|m| m.source == Source::Compliance && m.provider_sid.is_some())
        })
        .await;
    let reply = rows
        .iter()
        .find(|m| m.source == Source::Compliance)
        .unwrap();
    assert_eq!(reply.attempts, 2);
    let requests = t.twilio.received_requests().await.unwrap();
    assert_eq!(post_count(&requests), 2);
    assert_eq!(
        requests
            .iter()
            .filter(|r| r.method.as_str() == "GET")
            .count(),
        1,
        "checked before re-sending"
    );
}

/// Twilio creates every message as `sid`, answering the create call only after `delay`; the
/// HELP reply is then awaited until `ready` holds for it.
async fn slow_created_help_reply(
    t: &switchboard_testkit::TestApp,
    sid: &str,
    delay: Duration,
    ready: impl Fn(&switchboard_entity::message::Model) -> bool,
) -> switchboard_entity::message::Model {
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": sid, "status": "queued"}))
                .set_delay(delay),
        )
        .mount(&t.twilio)
        .await;
    help_reply(t).await;
    let is_reply = |m: &switchboard_entity::message::Model| m.source == Source::Compliance;
    t.wait_messages(t.tenant.tenant_id, |m| {
        m.iter().any(|m| is_reply(m) && ready(m))
    })
    .await
    .into_iter()
    .find(is_reply)
    .unwrap()
}

#[tokio::test]
async fn a_status_callback_that_outruns_the_create_answer_is_not_overwritten() {
    let t = spawn_app_with(bare()).await;
    let sid = "SMbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    // Twilio takes its time answering the create call...
    let reply = slow_created_help_reply(&t, sid, Duration::from_millis(800), |m| {
        m.status == MessageStatus::Sending
    })
    .await;
    // ...while its "delivered" callback arrives first (found through ?m=<id>).
    assert_eq!(
        t.status_callback(reply.id, sid, "delivered", &[])
            .await
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let now = t.message(reply.id).await;
    assert_eq!(
        now.status,
        MessageStatus::Delivered,
        "the late `queued` answer did not move it back"
    );
    assert_eq!(now.provider_sid.as_deref(), Some(sid));
}

/// An attempt that got no answer in time notes it on the row ("no answer in time;
/// retrying"); when Twilio's callback then shows the text was created and delivered, that
/// note is gone: the bubble must not read "delivered · no answer in time".
#[tokio::test]
async fn a_delivered_callback_clears_the_note_of_an_attempt_that_timed_out() {
    let t = spawn_app_with(bare()).await;
    let sid = "SMcccccccccccccccccccccccccccccccc";
    // Past the tests' 1 s Twilio timeout.
    let reply = slow_created_help_reply(&t, sid, Duration::from_millis(1500), |m| {
        m.error_message.is_some()
    })
    .await;
    assert!(reply.error_message.as_deref().unwrap().contains("retrying"));
    assert_eq!(
        t.status_callback(reply.id, sid, "delivered", &[])
            .await
            .status(),
        200
    );
    let now = t.message(reply.id).await;
    assert_eq!(now.status, MessageStatus::Delivered);
    assert_eq!((now.error_code, now.error_message), (None, None));
}

#[tokio::test]
async fn a_reply_held_back_before_stop_is_not_sent_after_it() {
    let t = spawn_app_with(bare()).await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .mount(&t.twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(TwilioCreate)
        .mount(&t.twilio)
        .await;
    help_reply(&t).await; // its reply meets the 429 and waits 2 s
    t.wait_for_sends(1).await;
    assert_eq!(t.text_in("+17135550140", "STOP").await.status(), 200);
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .filter(|m| {
                    m.source == Source::Compliance
                        && (m.status == MessageStatus::Suppressed || m.provider_sid.is_some())
                })
                .count()
                == 2
        })
        .await;
    let replies: Vec<_> = rows
        .iter()
        .filter(|m| m.source == Source::Compliance)
        .collect();
    assert_eq!(
        replies[0].status,
        MessageStatus::Suppressed,
        "the HELP reply waited past the STOP"
    );
    assert!(replies[1].body.contains("unsubscribed"));
    assert!(
        replies[1].provider_sid.is_some(),
        "the opt-out confirmation itself goes out"
    );
    let sends = t.twilio_sends().await;
    assert_eq!(
        sends.len(),
        2,
        "the 429'd HELP attempt and the STOP confirmation"
    );
}

/// A reply Twilio rate-limited with a `Retry-After` is not attempted again before then,
/// whichever job reaches it first (here a second job of the same message): that job leaves
/// it for later, and once the wait is over it goes out.
#[tokio::test]
async fn a_rate_limited_reply_waits_out_retry_after_whichever_job_reaches_it() {
    use switchboard_entity::message;

    let (t, ctx, conversation) = conversation_without_workers("+17135550174").await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "60")
                .set_body_json(serde_json::json!({"code": 20429, "message": "Too Many Requests"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&t.twilio)
        .await;
    let reply = queued(&t, &ctx, conversation, "We can come tomorrow at 9").await;
    let before = chrono::Utc::now();
    assert_eq!(
        messaging::deliver(&t.app, &ctx, reply).await.unwrap(),
        Delivery::RetryAfter(Duration::from_secs(60))
    );
    let row = t.message(reply).await;
    assert_eq!(row.status, MessageStatus::Queued);
    assert_eq!(row.error_code, Some(20429));
    let not_before = row.not_before.expect("the wait is on the row");
    assert!(
        not_before >= before + chrono::Duration::seconds(60),
        "{not_before}"
    );

    let Delivery::RetryAfter(wait) = messaging::deliver(&t.app, &ctx, reply).await.unwrap() else {
        panic!("a job reaching it early sends nothing and comes back later");
    };
    assert!(
        wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert_eq!(post_count(&t.twilio.received_requests().await.unwrap()), 1);
    assert_eq!(t.message(reply).await.attempts, 1);

    // The wait is over.
    message::Entity::update_many()
        .col_expr(
            message::Column::NotBefore,
            Some(chrono::Utc::now() - chrono::Duration::seconds(1)).into(),
        )
        .filter(message::Column::Id.eq(reply))
        .exec(&t.db.write)
        .await
        .unwrap();
    messaging::deliver(&t.app, &ctx, reply).await.unwrap();
    let row = t.message(reply).await;
    assert!(row.provider_sid.is_some(), "{:?}", row.error_message);
    assert_eq!(row.attempts, 2);
    assert_eq!(post_count(&t.twilio.received_requests().await.unwrap()), 2);
}

/// A short wait (here Twilio's `Retry-After: 1`) is waited out by a job that comes early,
/// not skipped: the reply goes out once the wait is over, not before.
#[tokio::test]
async fn a_job_that_comes_early_waits_out_a_short_retry_after() {
    let (t, ctx, conversation) = conversation_without_workers("+17135550175").await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&t.twilio)
        .await;
    let reply = queued(&t, &ctx, conversation, "See you at 9").await;
    assert_eq!(
        messaging::deliver(&t.app, &ctx, reply).await.unwrap(),
        Delivery::RetryAfter(Duration::from_secs(1))
    );
    let not_before = t
        .message(reply)
        .await
        .not_before
        .expect("the wait is on the row");
    messaging::deliver(&t.app, &ctx, reply).await.unwrap();
    assert!(
        chrono::Utc::now() >= not_before,
        "sent before the wait was over"
    );
    let row = t.message(reply).await;
    assert!(row.provider_sid.is_some(), "{:?}", row.error_message);
    assert_eq!(post_count(&t.twilio.received_requests().await.unwrap()), 2);
}

#[tokio::test]
async fn a_re_run_send_job_goes_on_with_the_reply_its_dead_worker_had_claimed() {
    use switchboard_entity::message;

    let (t, ctx, conversation) = conversation_without_workers("+17135550170").await;
    let tenant = t.tenant.tenant_id;
    let first = queued(&t, &ctx, conversation, "first").await;
    let second = queued(&t, &ctx, conversation, "second").await;
    // The worker that ran the job sent the first reply, claimed the second, and died before
    // calling Twilio for it, an hour ago.
    message::Entity::update_many()
        .col_expr(message::Column::Status, MessageStatus::Sent.as_str().into())
        .col_expr(
            message::Column::ProviderSid,
            Some("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string()).into(),
        )
        .filter(message::Column::Id.eq(first))
        .exec(&t.db.write)
        .await
        .unwrap();
    timed_out_an_hour_ago(&t, second).await;

    // Its job runs again (orphan recovery): the first reply is settled, so it goes on with
    // the second, asks Twilio whether it has it, and sends it once.
    let delivery = messaging::deliver(&t.app, &ctx, first).await.unwrap();
    assert_eq!(delivery, Delivery::Done);
    let requests = t.twilio.received_requests().await.unwrap();
    let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "POST"], "checked before sending");
    let body = switchboard_testkit::url_decode_form(&requests[1].body);
    assert_eq!(switchboard_testkit::param(&body, "Body"), Some("second"));
    let rows = t.messages(tenant).await;
    let second = rows.iter().find(|m| m.id == second).unwrap();
    assert!(second.provider_sid.is_some());
    assert_eq!(second.attempts, 2);
}

/// A bot reply whose attempt had an unknown outcome, in a conversation a person took over
/// since: once Twilio says it never got it, it is withdrawn, not sent ahead of the person's
/// reply.
#[tokio::test]
async fn a_bot_reply_twilio_never_got_is_withdrawn_after_a_takeover() {
    use switchboard_services::inbound;

    let (t, ctx, conversation) = conversation_without_workers("+17135550172").await;
    let tenant = t.tenant.tenant_id;
    let hi = t.messages(tenant).await[0].id;
    inbound::handle(&t.app, &ctx, hi).await.unwrap();
    let greeting = t
        .messages(tenant)
        .await
        .into_iter()
        .find(|m| m.source == Source::Bot)
        .unwrap()
        .id;
    timed_out_an_hour_ago(&t, greeting).await;
    let reply = queued(&t, &ctx, conversation, "Sam here, I'll take it from here").await;

    assert_eq!(
        messaging::deliver(&t.app, &ctx, greeting).await.unwrap(),
        Delivery::Done
    );
    let greeting = t.message(greeting).await;
    assert_eq!(greeting.status, MessageStatus::Suppressed);
    messaging::deliver(&t.app, &ctx, reply).await.unwrap();
    let bodies: Vec<String> = t
        .twilio_sends()
        .await
        .iter()
        .map(|s| switchboard_testkit::param(s, "Body").unwrap().to_string())
        .collect();
    assert_eq!(bodies, ["Sam here, I'll take it from here"]);
}

/// Two jobs for one reply whose last attempt timed out: job B reads the row and asks Twilio
/// (slowly); job A, reading the same row, asks Twilio, finds the text there (still `queued`
/// at Twilio) and records its MessageSid, leaving the row `sending`. Job B's answer then lists
/// a MessageSid that is already ours: it must not take that for "never reached Twilio" and
/// send the text again.
#[tokio::test]
async fn a_reply_found_at_twilio_by_one_job_is_not_sent_again_by_another() {
    let (t, ctx, conversation) = conversation_without_workers("+17135550171").await;
    let reply = queued(&t, &ctx, conversation, "on our way").await;
    // Its one attempt timed out an hour ago; Twilio has it, queued.
    timed_out_an_hour_ago(&t, reply).await;
    t.twilio.reset().await;
    let sid = "SMcccccccccccccccccccccccccccccccc";
    let listed = serde_json::json!({"messages": [{
        "sid": sid, "status": "queued", "body": "on our way",
        "date_created": chrono::Utc::now().to_rfc2822(),
    }]});
    // The first list call (job B's) answers after 0.7 s (the tests' Twilio timeout is 1 s),
    // the next one (job A's) at once.
    Mock::given(method("GET"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(listed.clone())
                .set_delay(Duration::from_millis(700)),
        )
        .up_to_n_times(1)
        .mount(&t.twilio)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(listed))
        .mount(&t.twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(TwilioCreate)
        .mount(&t.twilio)
        .await;

    let job_b = messaging::deliver(&t.app, &ctx, reply);
    let job_a = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        messaging::deliver(&t.app, &ctx, reply).await
    };
    let (b, a) = tokio::join!(job_b, job_a);
    assert_eq!(a.unwrap(), Delivery::Done);
    assert_eq!(b.unwrap(), Delivery::Done);

    let requests = t.twilio.received_requests().await.unwrap();
    assert_eq!(post_count(&requests), 0, "Twilio had it: no create call");
    let row = t.message(reply).await;
    assert_eq!(row.provider_sid.as_deref(), Some(sid));
    assert_eq!(row.status, MessageStatus::Sending);
    assert_eq!(row.attempts, 1);
}

/// A bot question held in the outbox by a rate limit in `conversation`, whose bot still
/// answers: queued like any reply, then marked as the bot's. Its id.
async fn held_bot_question(
    t: &switchboard_testkit::TestApp,
    ctx: &switchboard_services::TenantCtx,
    conversation: switchboard_domain::ConversationId,
) -> switchboard_domain::MessageId {
    use switchboard_entity::{conversation, message};

    let bot = queued(t, ctx, conversation, "What ZIP code is the job in?").await;
    message::Entity::update_many()
        .col_expr(message::Column::Source, Source::Bot.as_str().into())
        .col_expr(message::Column::ErrorCode, Some(20429).into())
        .filter(message::Column::Id.eq(bot))
        .exec(&t.db.write)
        .await
        .unwrap();
    conversation::Entity::update_many()
        .col_expr(conversation::Column::BotPaused, false.into())
        .filter(conversation::Column::Id.eq(conversation))
        .exec(&t.db.write)
        .await
        .unwrap();
    bot
}

/// Bot reply `id` was withdrawn by a person taking over, visibly.
async fn assert_withdrawn(t: &switchboard_testkit::TestApp, id: switchboard_domain::MessageId) {
    let row = t.message(id).await;
    assert_eq!(row.status, MessageStatus::Suppressed);
    assert_eq!(
        row.error_message.as_deref(),
        Some(messaging::WITHDRAWN_BY_TAKEOVER)
    );
}

/// Pausing the bot in the inbox is a person taking over, as a reply is: the bot's question
/// still in the outbox is withdrawn, visibly, and its retry sends nothing.
#[tokio::test]
async fn pausing_the_bot_withdraws_its_unsent_replies() {
    let (t, ctx, conversation) = conversation_without_workers("+17135550173").await;
    let bot = held_bot_question(&t, &ctx, conversation).await;
    let mut owner = t.owner().await;
    owner
        .page(&format!("/conversations?c={conversation}"))
        .await;
    let resp = owner
        .post_form(
            &format!("/conversations/{conversation}/bot"),
            &[("paused", "true")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    assert_withdrawn(&t, bot).await;
    assert_eq!(
        messaging::deliver(&t.app, &ctx, bot).await.unwrap(),
        Delivery::Done
    );
    assert_eq!(post_count(&t.twilio.received_requests().await.unwrap()), 0);
}

/// A bot reply still in the outbox (here: held by a rate limit) when a person replies is
/// withdrawn, visibly: the customer gets the person's text, not the bot's stale question
/// after it.
#[tokio::test]
async fn a_person_taking_over_withdraws_the_bots_unsent_replies() {
    let (t, ctx, conversation) = conversation_without_workers("+17135550172").await;
    let bot = held_bot_question(&t, &ctx, conversation).await;

    let manual = queued(&t, &ctx, conversation, "Calling you now").await;
    assert_withdrawn(&t, bot).await;

    // The bot reply's retry runs: nothing goes out for it; it goes on with the person's
    // reply, which is not held behind it. That reply's own job then finds it sent.
    assert_eq!(
        messaging::deliver(&t.app, &ctx, bot).await.unwrap(),
        Delivery::Done
    );
    assert_eq!(
        messaging::deliver(&t.app, &ctx, manual).await.unwrap(),
        Delivery::Done
    );
    let requests = t.twilio.received_requests().await.unwrap();
    assert_eq!(post_count(&requests), 1, "the person's reply only, once");
    let sent = requests
        .iter()
        .find(|r| r.method.as_str() == "POST")
        .unwrap();
    let form = switchboard_testkit::url_decode_form(&sent.body);
    assert_eq!(
        switchboard_testkit::param(&form, "Body"),
        Some("Calling you now")
    );
}

/// A tenant's stored auth token that cannot be opened (sealed under another SECRET_KEY) fails
/// the reply for good, with the reason on it, instead of leaving it `sending` to be retried
/// and swept forever; the reply queued behind it is released and fails the same way.
#[tokio::test]
async fn a_reply_whose_credentials_cannot_be_read_fails_with_the_reason() {
    use switchboard_entity::tenant;

    let (t, ctx, conversation) = conversation_without_workers("+17135550173").await;
    let tenant_id = t.tenant.tenant_id;
    let first = queued(&t, &ctx, conversation, "first").await;
    let second = queued(&t, &ctx, conversation, "second").await;
    tenant::Entity::update_many()
        .col_expr(
            tenant::Column::TwilioAuthTokenSealed,
            Some("v1.c2VhbGVkIHVuZGVyIGFub3RoZXIga2V5".to_string()).into(),
        )
        .filter(tenant::Column::Id.eq(tenant_id))
        .exec(&t.db.write)
        .await
        .unwrap();

    assert_eq!(
        messaging::deliver(&t.app, &ctx, first).await.unwrap(),
        Delivery::Done
    );
    assert_eq!(
        messaging::deliver(&t.app, &ctx, second).await.unwrap(),
        Delivery::Done
    );
    for id in [first, second] {
        let row = t.message(id).await;
        assert_eq!(row.status, MessageStatus::Failed);
        assert!(
            row.error_message.as_deref().is_some_and(
                |e| e.starts_with("not sent: the stored Twilio credentials cannot be read")
            ),
            "{:?}",
            row.error_message
        );
    }
    assert_eq!(post_count(&t.twilio.received_requests().await.unwrap()), 0);
}

/// A failure found at Twilio by the check after a 5xx keeps Twilio's error code and message;
/// a callback that brings the same final status with a code the row lacks fills it in.
#[tokio::test]
async fn a_failure_found_at_twilio_keeps_its_error_code() {
    use switchboard_entity::message;

    let t = spawn_app_with(bare()).await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_string("upstream error"))
        .mount(&t.twilio)
        .await;
    let body = switchboard_domain::compliance::help_reply("Acme Plumbing");
    let sid = "SMdddddddddddddddddddddddddddddddd";
    Mock::given(method("GET"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"messages": [{
                "sid": sid, "status": "undelivered", "body": body,
                "date_created": chrono::Utc::now().to_rfc2822(),
                "error_code": 30003, "error_message": "Unreachable destination handset",
            }]})),
        )
        .mount(&t.twilio)
        .await;
    help_reply(&t).await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter().any(|m| m.provider_sid.as_deref() == Some(sid))
        })
        .await;
    let reply = rows
        .iter()
        .find(|m| m.provider_sid.as_deref() == Some(sid))
        .unwrap();
    assert_eq!(reply.status, MessageStatus::Undelivered);
    assert_eq!(reply.error_code, Some(30003));
    assert_eq!(
        reply.error_message.as_deref(),
        Some("Unreachable destination handset")
    );

    // A final status recorded without its code: the callback's code fills it.
    message::Entity::update_many()
        .col_expr(message::Column::ErrorCode, None::<i32>.into())
        .filter(message::Column::Id.eq(reply.id))
        .exec(&t.db.write)
        .await
        .unwrap();
    let callback = t
        .status_callback(reply.id, sid, "undelivered", &[("ErrorCode", "30005")])
        .await;
    assert_eq!(callback.status(), 200);
    let now = t.message(reply.id).await;
    assert_eq!(now.status, MessageStatus::Undelivered);
    assert_eq!(now.error_code, Some(30005));
}

/// A reply Twilio refused can be sent again by a person: a new message with the same text and
/// source goes out, the refused one keeps its status and error code, and a repeated request
/// sends nothing more. Only a message that did not reach the customer can be; none while the
/// contact is opted out. The thread offers it on the refused bubble only.
#[tokio::test]
async fn a_refused_reply_is_sent_again_once_as_a_new_message() {
    use reqwest::Method;

    let t = spawn_app_with(bare()).await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21612, "message": "The 'To' phone number is not currently reachable via SMS", "status": 400
        })))
        .up_to_n_times(1)
        .mount(&t.twilio)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(MESSAGES_PATH))
        .respond_with(TwilioCreate)
        .mount(&t.twilio)
        .await;
    help_reply(&t).await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter().any(|m| m.status == MessageStatus::Failed)
        })
        .await;
    let refused = rows
        .iter()
        .find(|m| m.status == MessageStatus::Failed)
        .unwrap()
        .clone();
    let help = rows.iter().find(|m| m.source == Source::Customer).unwrap();
    let again_path = |id: &dyn std::fmt::Display| {
        format!(
            "/conversations/{}/messages/{id}/retry",
            refused.conversation_id
        )
    };
    let send_again = async |id: &dyn std::fmt::Display| {
        t.api(Method::POST, &again_path(id), &t.tenant.api_key)
            .send()
            .await
            .unwrap()
    };

    let resp = send_again(&refused.id).await;
    assert_eq!(resp.status(), 202);
    let made: serde_json::Value = resp.json().await.unwrap();
    let again_id = made["id"].as_str().unwrap().to_string();
    assert_ne!(again_id, refused.id.to_string());
    assert_eq!(made["source"], "compliance");
    assert_eq!(made["body"], refused.body.as_str());
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .any(|m| m.id.to_string() == again_id && m.provider_sid.is_some())
        })
        .await;
    let again = rows.iter().find(|m| m.id.to_string() == again_id).unwrap();
    assert_eq!(again.in_reply_to, Some(help.id));
    let before = t.message(refused.id).await;
    assert_eq!(before.status, MessageStatus::Failed);
    assert_eq!(before.error_code, Some(21612), "the refusal keeps its code");

    // Once: the same request answers the same message and sends nothing.
    let resp = send_again(&refused.id).await;
    assert_eq!(resp.status(), 202);
    let repeated: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(repeated["id"], again_id.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post_count(&t.twilio.received_requests().await.unwrap()), 2);

    // A sent message and a customer's text cannot be sent again.
    for id in [again_id.clone(), help.id.to_string()] {
        assert_eq!(send_again(&id).await.status(), 409, "{id}");
    }

    // The thread offers it on the refused bubble only.
    let mut owner = t.owner().await;
    let html = owner
        .page(&format!("/conversations?c={}", refused.conversation_id))
        .await;
    assert!(html.contains(&again_path(&refused.id)), "{html}");
    assert!(!html.contains(&again_path(&again_id)));

    // Not while the contact is opted out: the reply answers a text from before the STOP.
    assert_eq!(t.text_in("+17135550140", "STOP").await.status(), 200);
    t.wait_for_sends(3).await;
    let resp = send_again(&refused.id).await;
    assert_eq!(resp.status(), 409);
    assert!(resp.text().await.unwrap().contains("opted out"));
}
