//! The pages: simulator -> inbox, live over SSE, and the inbox's reply form.

use switchboard_domain::message::{MessageStatus, Source};
use switchboard_testkit::{Options, spawn_app_with};

fn demo() -> Options {
    Options {
        demo: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_simulator_feeds_the_pipeline_and_the_inbox_shows_it_live() {
    let t = spawn_app_with(demo()).await;
    let mut owner = t.demo_owner().await;
    // Open the live stream first, as the inbox page does.
    let events = owner.get("/events").await;
    assert_eq!(events.status(), 200);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = events;

    let page = t
        .http
        .get(format!("{}/simulator", t.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("+15125550100"), "the demo number is offered");
    let resp = t
        .simulate("+15555550123", "my water heater is leaking")
        .await;
    assert_eq!(resp.status(), 303);

    // The SSE stream announces the new message.
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), events.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("message_created"), "{text}");

    // The bot's replies are delivered by the simulator provider and shown on the handset.
    let demo = switchboard_services::tenancy::demo_tenant(&t.app)
        .await
        .unwrap()
        .unwrap();
    t.wait_messages(demo.tenant_id(), |m| {
        m.iter()
            .filter(|m| m.source == Source::Bot && m.status == MessageStatus::Delivered)
            .count()
            == 2
    })
    .await;
    let handset = t
        .http
        .get(format!(
            "{}/simulator/thread?number=%2B15125550100&phone=%2B15555550123",
            t.address
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(handset.contains("my water heater is leaking"));
    assert!(handset.contains("Thanks for reaching out"));

    // The inbox lists and shows the thread.
    let inbox = owner.page("/conversations").await;
    assert!(inbox.contains("+15555550123"));
    assert!(inbox.contains("my water heater is leaking"));
    assert!(inbox.contains("1 for Repair"));
    assert!(inbox.contains("Pause bot"));
    assert!(
        t.twilio_sends().await.is_empty(),
        "the simulator never calls Twilio"
    );
}

/// A phone typed as people write it is the customer its texts are stored under: the
/// handset, its redirect and its live refresh all use the E.164 form. One that is no phone
/// number is a 400 naming the field.
#[tokio::test]
async fn the_simulator_handset_finds_a_phone_typed_with_spaces_and_dashes() {
    let t = spawn_app_with(demo()).await;
    let resp = t
        .simulate("+1 (555) 555-0199", "my water heater is leaking")
        .await;
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"],
        "/simulator?number=%2B15125550100&phone=%2B15555550199"
    );
    let get = |query: &str| t.http.get(format!("{}/simulator{query}", t.address)).send();
    let text = async |query: &str| get(query).await.unwrap().text().await.unwrap();
    let page = text("?number=%2B1+512+555+0100&phone=%2B1+%28555%29+555-0199").await;
    assert!(page.contains("my water heater is leaking"), "{page}");
    assert!(page.contains(r#"data-phone="+15555550199""#));
    assert!(page.contains(r#"data-number="+15125550100""#));
    let thread = text("/thread?number=%2B15125550100&phone=%2B1-555-555-0199").await;
    assert!(thread.contains("my water heater is leaking"), "{thread}");
    let refused = get("?phone=call+me").await.unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("phone"));
}

#[tokio::test]
async fn replying_from_the_inbox_sends_a_manual_message_and_pauses_the_bot() {
    let t = spawn_app_with(demo()).await;
    let mut owner = t.demo_owner().await;
    t.simulate("+15555550124", "hello").await;
    let demo = switchboard_services::tenancy::demo_tenant(&t.app)
        .await
        .unwrap()
        .unwrap();
    let rows = t.wait_messages(demo.tenant_id(), |m| m.len() >= 3).await;
    let cid = rows[0].conversation_id;
    owner.page(&format!("/conversations?c={cid}")).await;
    let resp = owner
        .post_form(
            &format!("/conversations/{cid}/messages"),
            &[("body", "A technician is on the way")],
        )
        .await;
    assert_eq!(resp.status(), 303);
    t.wait_messages(demo.tenant_id(), |m| {
        m.iter()
            .any(|m| m.source == Source::Manual && m.status == MessageStatus::Delivered)
    })
    .await;
    let page = owner.page(&format!("/conversations?c={cid}")).await;
    assert!(page.contains("A technician is on the way"));
    assert!(page.contains("Resume bot"));

    // Resume, and the bot answers the next text again.
    let resp = owner
        .post_form(&format!("/conversations/{cid}/bot"), &[("paused", "false")])
        .await;
    assert_eq!(resp.status(), 303);
    t.simulate("+15555550124", "1").await;
    t.wait_messages(demo.tenant_id(), |m| {
        m.iter().filter(|m| m.source == Source::Bot).count() >= 3
    })
    .await;
}

#[tokio::test]
async fn pages_of_another_tenants_conversation_are_404() {
    let t = spawn_app_with(demo()).await;
    // Tenant A (not the demo tenant) has a conversation.
    t.text_in("+17135550160", "hello").await;
    let rows = t.wait_messages(t.tenant.tenant_id, |m| !m.is_empty()).await;
    let cid = rows[0].conversation_id;
    let mut demo_owner = t.demo_owner().await;
    let resp = demo_owner.get(&format!("/conversations?c={cid}")).await;
    assert_eq!(resp.status(), 404);
    let resp = demo_owner
        .post_form(&format!("/conversations/{cid}/messages"), &[("body", "x")])
        .await;
    assert_eq!(resp.status(), 404);
    let mid = rows[0].id;
    let resp = demo_owner
        .get(&format!("/conversations/{cid}/messages/{mid}"))
        .await;
    assert_eq!(resp.status(), 404);
    assert!(
        t.messages(t.tenant.tenant_id)
            .await
            .iter()
            .all(|m| m.source != Source::Manual),
        "nothing was sent into tenant A's conversation"
    );
}

/// A real tenant, "Private Clinic", on `number`, without a Twilio account of its own (so it
/// sends through the simulator provider too).
async fn private_clinic(
    t: &switchboard_testkit::TestApp,
    number: &str,
) -> switchboard_services::TenantCtx {
    use switchboard_services::tenancy::{self, BotKind, NewTenant};
    let created = tenancy::create_tenant(
        &t.app,
        NewTenant {
            name: "Private Clinic".into(),
            time_zone: "America/Chicago".into(),
            number: switchboard_domain::phone::E164::parse(number).unwrap(),
            bot: BotKind::Qualify,
            twilio: None,
        },
    )
    .await
    .unwrap();
    switchboard_services::TenantCtx::for_job(created.tenant_id)
}

#[tokio::test]
async fn the_simulator_never_reaches_a_real_tenant() {
    let t = spawn_app_with(demo()).await;
    // A real tenant without its own Twilio account also sends through the simulator provider.
    private_clinic(&t, "+14155550177").await;
    let mut visitor = t.browser();
    let page = visitor.page("/simulator").await;
    assert!(page.contains("+15125550100"));
    assert!(!page.contains("+14155550177") && !page.contains("Private Clinic"));
    let resp = visitor
        .post_form(
            "/simulator/send",
            &[
                ("to", "+14155550177"),
                ("from", "+15555550123"),
                ("body", "hello"),
            ],
        )
        .await;
    assert_eq!(resp.status(), 404);
    let thread = t
        .http
        .get(format!(
            "{}/simulator/thread?number=%2B14155550177&phone=%2B15555550123",
            t.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(thread.status(), 404);
    let events = t
        .http
        .get(format!(
            "{}/simulator/events?number=%2B14155550177",
            t.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 404);
}

/// The demo is the tenant its number was seeded for: a business that adds that number after
/// the demo released it does not become the demo, and its threads stay off the public
/// simulator.
#[tokio::test]
async fn a_business_taking_over_the_released_demo_number_is_not_the_demo() {
    use switchboard_services::settings;
    use switchboard_services::tenancy::{self, BotKind};

    let t = spawn_app_with(demo()).await;
    let demo = tenancy::demo_tenant(&t.app).await.unwrap().unwrap();
    let number = switchboard_entity::lookup::number_owner(&t.db.read, tenancy::DEMO_NUMBER)
        .await
        .unwrap()
        .unwrap()
        .phone_number_id;
    settings::remove_number(&t.app, &demo, number)
        .await
        .unwrap();
    let clinic = private_clinic(&t, "+14155550178").await;
    let demo_number = switchboard_domain::phone::E164::parse(tenancy::DEMO_NUMBER).unwrap();
    settings::add_number(&t.app, &clinic, &demo_number, BotKind::Qualify)
        .await
        .unwrap();
    assert_eq!(
        tenancy::demo_tenant(&t.app)
            .await
            .unwrap()
            .map(|c| c.tenant_id()),
        Some(demo.tenant_id())
    );
    let page = t.browser().page("/simulator").await;
    assert!(!page.contains("Private Clinic"), "{page}");
    assert!(!page.contains("+14155550178"));
    let thread = t
        .http
        .get(format!(
            "{}/simulator/thread?number=%2B15125550100&phone=%2B15555550123",
            t.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(thread.status(), 404);
}

/// The simulator's stream needs no sign-in, so it lasts only while its number is a simulator
/// number: once the demo business connects its own Twilio account, an open stream ends
/// within `SESSION_CHECK_SECS` (15 s) and a new one is refused.
#[tokio::test]
async fn the_simulator_stream_ends_when_the_number_leaves_the_simulator() {
    use switchboard_testkit::wiremock::matchers::{method, path};
    use switchboard_testkit::wiremock::{Mock, ResponseTemplate};

    let t = spawn_app_with(demo()).await;
    let url = format!("{}/simulator/events?number=%2B15125550100", t.address);
    let mut stream = t.http.get(&url).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let demo = switchboard_services::tenancy::demo_tenant(&t.app)
        .await
        .unwrap()
        .unwrap();
    let sid = format!("AC{}", "1".repeat(32));
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "incoming_phone_numbers": [{"phone_number": "+15125550100"}]
        })))
        .mount(&t.twilio)
        .await;
    switchboard_services::settings::set_twilio(
        &t.app,
        &switchboard_services::TenantCtx::for_job(demo.tenant_id()),
        &sid,
        "0123456789abcdef0123456789abcdef",
    )
    .await
    .unwrap();
    let read = async { while stream.chunk().await.unwrap().is_some() {} };
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(25), read)
            .await
            .is_ok(),
        "the stream ended"
    );
    assert_eq!(t.http.get(&url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_resubmitted_inbox_form_sends_once() {
    let t = spawn_app_with(demo()).await;
    let mut owner = t.demo_owner().await;
    t.simulate("+15555550125", "hello").await;
    let demo = switchboard_services::tenancy::demo_tenant(&t.app)
        .await
        .unwrap()
        .unwrap();
    let rows = t.wait_messages(demo.tenant_id(), |m| m.len() >= 3).await;
    let cid = rows[0].conversation_id;
    // The form carries a fresh key each time it is rendered.
    let page = owner.page(&format!("/conversations?c={cid}")).await;
    let key = page
        .split("name=\"key\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    for _ in 0..2 {
        let resp = owner
            .post_form(
                &format!("/conversations/{cid}/messages"),
                &[("body", "On our way"), ("key", key.as_str())],
            )
            .await;
        assert_eq!(resp.status(), 303);
    }
    let rows = t
        .wait_messages(demo.tenant_id(), |m| {
            m.iter().any(|m| m.source == Source::Manual)
        })
        .await;
    assert_eq!(
        rows.iter().filter(|m| m.source == Source::Manual).count(),
        1
    );

    // The same key with another text (a page that kept its form's key for a second reply)
    // is refused, not dropped as a repeat; an empty key is refused too.
    let mut send = async |body: &str, key: &str| {
        owner
            .post_form(
                &format!("/conversations/{cid}/messages"),
                &[("body", body), ("key", key)],
            )
            .await
    };
    let resp = send("Running late, 10 minutes", &key).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("idempotency key"));
    let resp = send("Running late, 10 minutes", "").await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("key:"));
    // Line breaks count once, as the textarea counted them; control characters are refused.
    let long = format!("{}{}", "a".repeat(1590), "\r\nb".repeat(5));
    let resp = send(&long, "k-long").await;
    assert_eq!(resp.status(), 303, "1,600 characters with its line breaks");
    let resp = send("nul\u{0}byte", "k-nul").await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("body:"));
    let manual: Vec<String> = t
        .messages(demo.tenant_id())
        .await
        .into_iter()
        .filter(|m| m.source == Source::Manual)
        .map(|m| m.body)
        .collect();
    assert_eq!(manual.len(), 2, "{manual:?}");
    assert_eq!(manual[1].chars().count(), 1600);
    assert!(!manual[1].contains('\r'));
}

#[tokio::test]
async fn the_dashboard_counts_from_the_database_per_tenant() {
    let t = spawn_app_with(demo()).await;
    let mut owner = t.owner().await;
    let empty = owner.page("/").await;
    assert!(empty.contains("No messages yet"));
    t.text_in("+17135550180", "my water heater is leaking")
        .await;
    t.wait_for_sends(2).await;
    let html = owner.page("/").await;
    let stat = |label: &str| {
        let at = html.find(label).unwrap();
        let rest = &html[at..];
        let v = rest.find(r#"<strong class="value">"#).unwrap() + r#"<strong class="value">"#.len();
        rest[v..v + rest[v..].find('<').unwrap()].to_string()
    };
    assert_eq!(stat("Active conversations"), "1");
    assert_eq!(stat("Messages today"), "3", "one text in, two bot replies");
    assert_eq!(stat("Leads this week"), "1");
    assert_eq!(
        stat("Response rate"),
        "100%",
        "one text, answered (twice counts once)"
    );
    assert!(html.contains("my water heater is leaking") && html.contains("bot reply"));

    // Another business sees none of it, and cannot fetch A's activity rows.
    let mut demo_owner = t.demo_owner().await;
    let theirs = demo_owner.page("/").await;
    assert!(theirs.contains("No messages yet") && !theirs.contains("water heater"));
    let rows = t.messages(t.tenant.tenant_id).await;
    let resp = demo_owner.get(&format!("/activity/{}", rows[0].id)).await;
    assert_eq!(resp.status(), 404);
    let resp = owner.get(&format!("/activity/{}", rows[0].id)).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains(&format!("a-{}", rows[0].id))
    );
}

#[tokio::test]
async fn search_finds_this_tenants_contacts_and_messages_only() {
    let t = spawn_app_with(demo()).await;
    let mut owner = t.owner().await;
    t.text_in("+17135550190", "The BOILER is making 100% noise")
        .await;
    t.wait_for_sends(2).await;
    let html = owner.page("/search?q=boiler").await;
    assert!(
        html.contains("The BOILER is making 100% noise"),
        "case-insensitive"
    );
    let html = owner.page("/search?q=5550190").await;
    assert!(html.contains("+17135550190"));
    let html = owner.page("/search?q=0%25+n").await;
    assert!(html.contains("100% noise"), "% is literal");
    let html = owner.page("/search?q=_").await;
    assert!(html.contains("at least 2 characters"));

    // The demo business searches the same words and finds nothing of Acme's.
    let mut other = t.demo_owner().await;
    let html = other.page("/search?q=boiler").await;
    assert!(!html.contains("BOILER") && html.contains("No message matches."));
    let html = other.page("/search?q=5550190").await;
    assert!(html.contains("No contact matches."));
}
