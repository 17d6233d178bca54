//! STOP / START / HELP, Twilio Advanced Opt-Out, and suppression at send time.

use switchboard_domain::message::{MessageStatus, Source};
use switchboard_testkit::{param, set, spawn_app, twilio_fixture};

async fn conversation_id(t: &switchboard_testkit::TestApp) -> String {
    let list: serde_json::Value = t.conversations(&t.tenant.api_key).await;
    list[0]["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn stop_confirms_once_then_every_send_is_suppressed_until_start() {
    let t = spawn_app().await;
    let from = "+17135550130";
    t.text_in(from, "hi").await;
    t.wait_for_sends(2).await;

    assert_eq!(t.text_in(from, "  Stop. ").await.status(), 200);
    let sends = t.wait_for_sends(3).await;
    let confirmation = param(&sends[2], "Body").unwrap();
    assert!(
        confirmation.contains("unsubscribed") && confirmation.contains("Acme Plumbing"),
        "{confirmation}"
    );

    // The bot stays quiet; a manual send is suppressed at send time, with nothing sent.
    t.text_in(from, "are you there?").await;
    let cid = conversation_id(&t).await;
    let resp = t
        .api(
            reqwest::Method::POST,
            &format!("/conversations/{cid}/messages"),
            &t.tenant.api_key,
        )
        .json(&serde_json::json!({"body": "We can come at 3pm"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // Both jobs may run at once (several workers on Redis): wait for both outcomes.
    t.wait_messages(t.tenant.tenant_id, |m| {
        m.iter()
            .any(|m| m.source == Source::Manual && m.status == MessageStatus::Suppressed)
            && m.iter()
                .any(|m| m.body == "are you there?" && m.handled_at.is_some())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        t.twilio_sends().await.len(),
        3,
        "no send after STOP except its confirmation"
    );

    // START re-subscribes with a confirmation, and sending works again.
    t.text_in(from, "START").await;
    let sends = t.wait_for_sends(4).await;
    assert!(param(&sends[3], "Body").unwrap().contains("resubscribed"));
}

/// After STOP and START the bot asks its question again rather than take the next text for
/// its answer: the customer last heard a confirmation, not the question.
#[tokio::test]
async fn after_stop_and_start_the_bot_asks_its_question_again() {
    let t = spawn_app().await;
    let from = "+17135550135";
    t.text_in(from, "hi").await;
    t.wait_for_sends(2).await;
    t.text_in(from, "STOP").await;
    t.wait_for_sends(3).await;
    t.text_in(from, "START").await;
    t.wait_for_sends(4).await;
    t.text_in(from, "hello?").await;
    let sends = t.wait_for_sends(5).await;
    assert!(param(&sends[4], "Body").unwrap().contains("1 for Repair"));
    assert_eq!(t.contact(from).await.fields, None);
}

/// A HELP that Twilio's Advanced Opt-Out answered (no reply of ours in the thread) still
/// interrupts the script: the bot asks its question again.
#[tokio::test]
async fn after_a_help_twilio_answered_the_bot_asks_its_question_again() {
    let t = spawn_app().await;
    let from = "+17135550136";
    t.text_in(from, "hi").await;
    t.wait_for_sends(2).await;
    let mut help =
        switchboard_testkit::inbound(&t.tenant.account_sid, from, &t.tenant.number, "HELP");
    set(&mut help, "OptOutType", "HELP");
    assert_eq!(t.post_sms(&help).await.status(), 200);
    t.text_in(from, "1").await;
    let sends = t.wait_for_sends(3).await;
    assert!(param(&sends[2], "Body").unwrap().contains("1 for Repair"));
    assert_eq!(t.contact(from).await.fields, None);
}

/// The FCC's revocation order names "opt out", two words: it opts out like OPTOUT.
#[tokio::test]
async fn opt_out_in_two_words_opts_out() {
    let t = spawn_app().await;
    let from = "+17135550134";
    t.text_in(from, "hi").await;
    t.wait_for_sends(2).await;
    t.text_in(from, "Opt out").await;
    let sends = t.wait_for_sends(3).await;
    assert!(param(&sends[2], "Body").unwrap().contains("unsubscribed"));
    let contact = t.contact(from).await;
    assert!(contact.opted_out_at.is_some());
    assert_eq!(contact.opt_out_keyword.as_deref(), Some("OPTOUT"));
    assert_eq!(contact.fields, None, "not taken for an answer");
}

#[tokio::test]
async fn help_answers_with_the_business_name_and_how_to_stop() {
    let t = spawn_app().await;
    t.text_in("+17135550131", "help").await;
    let sends = t.wait_for_sends(1).await;
    let body = param(&sends[0], "Body").unwrap();
    assert!(
        body.contains("Acme Plumbing") && body.contains("STOP"),
        "{body}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(t.twilio_sends().await.len(), 1, "HELP is not a bot turn");
}

#[tokio::test]
async fn yes_from_a_subscribed_contact_is_just_an_answer() {
    let t = spawn_app().await;
    t.text_in("+17135550132", "YES").await;
    let sends = t.wait_for_sends(2).await;
    assert!(
        param(&sends[0], "Body")
            .unwrap()
            .contains("Thanks for reaching out"),
        "the bot greets, no opt-in confirmation"
    );
}

#[tokio::test]
async fn twilio_advanced_opt_out_records_the_opt_out_without_a_reply_of_ours() {
    let t = spawn_app().await;
    let mut params = twilio_fixture("inbound_stop_advanced_optout");
    set(&mut params, "To", &t.tenant.number);
    set(&mut params, "AccountSid", &t.tenant.account_sid);
    assert_eq!(t.post_sms(&params).await.status(), 200);
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter().any(|m| m.handled_at.is_some())
        })
        .await;
    assert_eq!(rows.len(), 1, "no confirmation of our own");
    assert!(rows[0].provider_replied);
    use sea_orm::EntityTrait;
    let contact = switchboard_entity::contact::Entity::find_by_id(rows[0].contact_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert!(contact.opted_out_at.is_some());
    assert_eq!(contact.opt_out_keyword.as_deref(), Some("STOP"));
    assert!(t.twilio_sends().await.is_empty());
}

#[tokio::test]
async fn a_repeated_stop_gets_no_second_confirmation() {
    let t = spawn_app().await;
    let from = "+17135550133";
    t.text_in(from, "STOP").await;
    t.wait_for_sends(1).await;
    t.text_in(from, "stop").await;
    t.wait_messages(t.tenant.tenant_id, |m| {
        m.iter().filter(|m| m.handled_at.is_some()).count() == 2
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(t.twilio_sends().await.len(), 1);
    let contact = t.contact(from).await;
    assert!(contact.opted_out_at.is_some());
}

/// Texts `bodies` from `from`, stored before any is handled; then each decided in order, and
/// the queued replies sent, by this task (the app has no workers).
async fn decide_and_send(
    t: &switchboard_testkit::TestApp,
    ctx: &switchboard_services::TenantCtx,
    from: &str,
    bodies: &[&str],
) {
    use switchboard_domain::message::Direction;
    use switchboard_services::{inbound, messaging};

    for body in bodies {
        assert_eq!(t.text_in(from, body).await.status(), 200);
    }
    for m in t.messages(t.tenant.tenant_id).await {
        if m.direction == Direction::Inbound && m.handled_at.is_none() {
            inbound::handle(&t.app, ctx, m.id).await.unwrap();
        }
    }
    for m in t.messages(t.tenant.tenant_id).await {
        if m.direction == Direction::Outbound && m.status == MessageStatus::Queued {
            messaging::deliver(&t.app, ctx, m.id).await.unwrap();
        }
    }
}

/// Replies decided after a later STOP: only what answers a text from the opt-out on goes out.
/// STOP, START, STOP are stored (the contact ends opted out) before any reply is decided; the
/// first STOP's and the START's confirmations answer texts from before the final opt-out and
/// are suppressed, however late they were written. The final STOP's confirmation goes out,
/// and so does the answer to a HELP sent after it.
#[tokio::test]
async fn replies_to_keywords_from_before_a_later_stop_are_not_sent() {
    use switchboard_domain::message::Direction;
    use switchboard_testkit::spawn_app_without_workers;

    let t = spawn_app_without_workers().await;
    let ctx = switchboard_services::TenantCtx::for_job(t.tenant.tenant_id);
    let from = "+17135550134";

    decide_and_send(&t, &ctx, from, &["STOP", "START", "STOP"]).await;
    let replies: Vec<_> = t
        .messages(t.tenant.tenant_id)
        .await
        .into_iter()
        .filter(|m| m.direction == Direction::Outbound)
        .collect();
    let statuses: Vec<_> = replies.iter().map(|m| m.status).collect();
    assert_eq!(
        statuses,
        [
            MessageStatus::Suppressed,
            MessageStatus::Suppressed,
            MessageStatus::Sending
        ],
        "{replies:#?}"
    );
    assert!(replies.iter().all(|m| m.source == Source::Compliance));
    let sends = t.twilio_sends().await;
    assert_eq!(sends.len(), 1);
    assert!(param(&sends[0], "Body").unwrap().contains("unsubscribed"));

    // HELP is answered whatever the contact's state.
    decide_and_send(&t, &ctx, from, &["HELP"]).await;
    let sends = t.twilio_sends().await;
    assert_eq!(sends.len(), 2);
    assert!(param(&sends[1], "Body").unwrap().contains("STOP"));
}
