//! `/settings`: API keys, the Twilio connection (stored sealed, shown masked, tested against
//! the account endpoint), numbers, members and roles, and agents kept to reading.

use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use switchboard_domain::PhoneNumberId;
use switchboard_domain::accounts::Role;
use switchboard_entity::{api_key, membership, phone_number, tenant};
use switchboard_services::tenancy::BotKind;
use switchboard_testkit::wiremock::matchers::{header, method, path, query_param};
use switchboard_testkit::wiremock::{Mock, ResponseTemplate};
use switchboard_testkit::{
    Browser, Options, TestApp, create_tenant, inbound, spawn_app, spawn_app_with,
};

/// The text between `start` and the next `end` in `html`.
fn between<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = html.find(start)? + start.len();
    Some(&html[from..from + html[from..].find(end)?])
}

/// The body of `resp`, once its status is `status`.
async fn body_of(resp: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status);
    resp.text().await.unwrap()
}

/// The row of number `e164` (at most one, whichever tenant).
async fn number_row(t: &TestApp, e164: &str) -> phone_number::Model {
    phone_number::Entity::find()
        .filter(phone_number::Column::E164.eq(e164))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap()
}

/// `owner` presses "Remove" on number `id` in Settings.
async fn remove_number(owner: &mut Browser, id: PhoneNumberId) -> reqwest::Response {
    owner
        .post_form(&format!("/settings/numbers/{id}/remove"), &[])
        .await
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_by_prefix_and_revocable() {
    let t = spawn_app().await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let resp = owner
        .post_form("/settings/api-keys", &[("name", "Zapier")])
        .await;
    let html = body_of(resp, StatusCode::OK).await;
    let key = between(&html, r#"<p class="secret">"#, "</p>")
        .expect("the new key is shown")
        .to_string();
    assert!(key.starts_with("sb_") && key.len() == 43, "{key}");
    assert_eq!(
        t.api(Method::GET, "/conversations", &key)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let listed = owner.page("/settings").await;
    assert!(listed.contains("Zapier") && listed.contains(&key[..10]));
    assert!(!listed.contains(&key), "the key is never shown again");

    let row = api_key::Entity::find()
        .filter(api_key::Column::Name.eq("Zapier"))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(row.key_hash, key, "stored hashed");
    let resp = owner
        .post_form(&format!("/settings/api-keys/{}/revoke", row.id), &[])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        t.api(Method::GET, "/conversations", &key)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = owner
        .post_form("/settings/api-keys", &[("name", "  ")])
        .await;
    assert!(
        body_of(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("name:")
    );
}

#[tokio::test]
async fn the_twilio_connection_is_stored_sealed_shown_masked_and_tested() {
    let t = spawn_app().await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let resp = owner
        .post_form(
            "/settings/twilio",
            &[("account_sid", "AC123"), ("auth_token", "x")],
        )
        .await;
    assert!(
        body_of(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("account_sid:")
    );

    let sid = format!("AC{}", "ab".repeat(16));
    let token = "0123456789abcdef0123456789ab7f3e";
    let resp = owner
        .post_form(
            "/settings/twilio",
            &[("account_sid", sid.as_str()), ("auth_token", token)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let html = owner.page("/settings?done=twilio").await;
    assert!(html.contains("Twilio account connected."));
    assert!(html.contains(&sid) && html.contains("••••••••7f3e"));
    assert!(!html.contains(token), "the token is never shown");
    let row = tenant::Entity::find_by_id(t.tenant.tenant_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    let sealed = row.twilio_auth_token_sealed.unwrap();
    assert!(!sealed.contains(token), "stored encrypted");

    // "Test connection" calls the account endpoint with these credentials.
    let auth = format!(
        "Basic {}",
        base64_encode(format!("{sid}:{token}").as_bytes())
    );
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{sid}.json")))
        .and(header("authorization", auth.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "sid": sid, "friendly_name": "Acme Main", "status": "active"
        })))
        .up_to_n_times(1)
        .mount(&t.twilio)
        .await;
    let html = owner
        .post_form("/settings/twilio/test", &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Connected to Twilio: “Acme Main” (active)."),
        "{html}"
    );
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{sid}.json")))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "code": 20003, "message": "Authenticate", "status": 401
        })))
        .mount(&t.twilio)
        .await;
    let html = owner
        .post_form("/settings/twilio/test", &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("error 20003"), "{html}");

    // Keeping the token: an empty token field changes only the SID.
    let sid2 = format!("AC{}", "cd".repeat(16));
    owner.page("/settings").await;
    let resp = owner
        .post_form(
            "/settings/twilio",
            &[("account_sid", sid2.as_str()), ("auth_token", "")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let row = tenant::Entity::find_by_id(t.tenant.tenant_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.twilio_account_sid.as_deref(), Some(sid2.as_str()));
    assert_eq!(
        row.twilio_auth_token_sealed.as_deref(),
        Some(sealed.as_str())
    );
}

/// The tenant's numbers must be on its Twilio account, which alone verifies their webhooks
/// and sends from them. Switching to an account that does not hold them is a 400 naming
/// `account_sid`, and to credentials Twilio refuses a 400 naming `auth_token`: nothing changes
/// either time. An account that holds them is saved. Disconnecting is a 409 while numbers are
/// in use, and works once they are removed.
#[tokio::test]
async fn the_twilio_account_changes_only_to_one_that_holds_the_numbers() {
    let t = spawn_app_with(Options {
        bare_twilio: true,
        ..Options::default()
    })
    .await;
    let sid = format!("AC{}", "b".repeat(32));
    let token = "0123456789abcdef0123456789abcdef";
    let numbers = format!("/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json");
    for answer in [
        ResponseTemplate::new(200).set_body_json(serde_json::json!({"incoming_phone_numbers": []})),
        ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "code": 20003, "message": "Authenticate", "status": 401
        })),
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "incoming_phone_numbers": [{"phone_number": t.tenant.number}]
        })),
    ] {
        Mock::given(method("GET"))
            .and(path(numbers.as_str()))
            .and(query_param("PhoneNumber", t.tenant.number.as_str()))
            .respond_with(answer)
            .up_to_n_times(1)
            .mount(&t.twilio)
            .await;
    }
    let sid_now = async || {
        tenant::Entity::find_by_id(t.tenant.tenant_id)
            .one(&t.db.read)
            .await
            .unwrap()
            .unwrap()
            .twilio_account_sid
    };
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let form = [("account_sid", sid.as_str()), ("auth_token", token)];

    let resp = owner.post_form("/settings/twilio", &form).await;
    let text = body_of(resp, StatusCode::BAD_REQUEST).await;
    assert!(
        text.contains("account_sid:") && text.contains(&t.tenant.number),
        "{text}"
    );
    assert_eq!(
        sid_now().await.as_deref(),
        Some(t.tenant.account_sid.as_str())
    );
    let resp = owner.post_form("/settings/twilio", &form).await;
    assert!(
        body_of(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("auth_token: Twilio refused")
    );
    assert_eq!(
        sid_now().await.as_deref(),
        Some(t.tenant.account_sid.as_str())
    );
    let resp = owner.post_form("/settings/twilio", &form).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(sid_now().await.as_deref(), Some(sid.as_str()));
    let auth = format!(
        "Basic {}",
        base64_encode(format!("{sid}:{token}").as_bytes())
    );
    let asked = t.twilio.received_requests().await.unwrap();
    assert_eq!(asked.len(), 3);
    assert!(
        asked
            .iter()
            .all(|r| r.headers["authorization"] == auth.as_str())
    );

    let resp = owner.post_form("/settings/twilio/disconnect", &[]).await;
    assert!(
        body_of(resp, StatusCode::CONFLICT)
            .await
            .contains("Remove your numbers first")
    );
    assert_eq!(sid_now().await.as_deref(), Some(sid.as_str()));
    let number = number_row(&t, &t.tenant.number).await;
    owner.page("/settings").await;
    let resp = remove_number(&mut owner, number.id).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = owner.post_form("/settings/twilio/disconnect", &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(sid_now().await, None);
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn numbers_added_in_settings_route_webhooks_and_removed_ones_stop() {
    let t = spawn_app().await;
    let other = create_tenant(&t.app, "Bravo Clinic", "+14155550111", BotKind::Qualify).await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let resp = owner
        .post_form("/settings/numbers", &[("e164", "+14155550111")])
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::CONFLICT,
        "another tenant's number"
    );
    let resp = owner
        .post_form("/settings/numbers", &[("e164", "555-0100")])
        .await;
    assert!(
        body_of(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("e164:")
    );
    let resp = owner
        .post_form("/settings/numbers", &[("e164", "+14155550122")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(owner.page("/settings").await.contains("+14155550122"));

    let params = inbound(&t.tenant.account_sid, "+17135550170", "+14155550122", "hi");
    let resp = t
        .post_signed("/webhooks/twilio/sms", &t.tenant.auth_token, &params)
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the new number routes to tenant A"
    );
    t.wait_messages(t.tenant.tenant_id, |m| !m.is_empty()).await;

    let n = number_row(&t, "+14155550122").await;
    // Tenant B's number id through A's session: 404, nothing removed.
    let theirs = number_row(&t, "+14155550111").await;
    let resp = remove_number(&mut owner, theirs.id).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        phone_number::Entity::find()
            .filter(phone_number::Column::TenantId.eq(other.tenant_id))
            .count(&t.db.read)
            .await
            .unwrap(),
        1
    );
    let resp = remove_number(&mut owner, n.id).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let params = inbound(
        &t.tenant.account_sid,
        "+17135550170",
        "+14155550122",
        "again",
    );
    let resp = t
        .post_signed("/webhooks/twilio/sms", &t.tenant.auth_token, &params)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// Removing a number releases it, it does not delete it: its conversation and every message
/// stay (deleting the row cascaded through both), and texts to it answer 404. Nothing more is
/// sent from it: a text stored before gets no bot reply; a reply still queued there fails
/// with the reason when its job runs, without a call to Twilio; a new reply and a "send
/// again" are 409s; the thread shows why in place of the compose box and offers no "Send
/// again". Settings list it as removed; adding it back takes the same row, with its bot
/// setting, and the conversation goes on.
#[tokio::test]
async fn a_removed_number_keeps_its_history_and_sends_nothing_until_added_again() {
    use switchboard_domain::message::MessageStatus;
    use switchboard_entity::{conversation, message};
    use switchboard_services::{TenantCtx, messaging};

    let t = switchboard_testkit::spawn_app_without_workers().await;
    let tenant = t.tenant.tenant_id;
    let customer = "+17135550172";
    assert_eq!(t.text_in(customer, "hi").await.status(), StatusCode::OK);
    let ctx = TenantCtx::for_job(tenant);
    let thread = t.messages(tenant).await[0].conversation_id;
    let reply = messaging::send_manual(&t.app, &ctx, thread, "see you at 3", None)
        .await
        .unwrap()
        .id;
    let number = number_row(&t, &t.tenant.number).await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let resp = remove_number(&mut owner, number.id).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let html = owner.page("/settings").await;
    let removed = between(&html, "Removed numbers", "</table>").unwrap();
    assert!(
        removed.contains(&t.tenant.number) && removed.contains("Add back"),
        "{html}"
    );
    assert!(!html.contains(&format!("/settings/numbers/{}/remove", number.id)));

    let kept = t.messages(tenant).await;
    assert_eq!(kept.len(), 2, "the history stays: {kept:?}");
    assert!(
        conversation::Entity::find_by_id(thread)
            .one(&t.db.read)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        t.text_in(customer, "still there?").await.status(),
        StatusCode::NOT_FOUND
    );

    // The customer's text, stored before the removal, gets no bot reply from it, even with the
    // bot resumed (the manual reply paused it).
    conversation::Entity::update_many()
        .col_expr(conversation::Column::BotPaused, false.into())
        .filter(conversation::Column::Id.eq(thread))
        .exec(&t.db.write)
        .await
        .unwrap();
    let hi = kept.iter().find(|m| m.body == "hi").unwrap().id;
    assert_eq!(
        switchboard_services::inbound::handle(&t.app, &ctx, hi)
            .await
            .unwrap(),
        switchboard_services::inbound::Decision::NumberReleased
    );
    assert_eq!(t.messages(tenant).await.len(), 2, "no bot reply");
    // Made inbox only while removed: that setting comes back with the number.
    phone_number::Entity::update_many()
        .col_expr(phone_number::Column::Bot, BotKind::None.into())
        .filter(phone_number::Column::Id.eq(number.id))
        .exec(&t.db.write)
        .await
        .unwrap();

    // The reply's send job fails it with the reason; Twilio is not called.
    let asked = t.twilio.received_requests().await.unwrap().len();
    messaging::deliver(&t.app, &ctx, reply).await.unwrap();
    let failed = message::Entity::find_by_id(reply)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, MessageStatus::Failed);
    assert_eq!(
        failed.error_message.as_deref(),
        Some(format!("not sent: {}", messaging::NUMBER_RELEASED).as_str())
    );
    assert_eq!(t.twilio.received_requests().await.unwrap().len(), asked);

    // New replies and "send again" are refused.
    let api = |path: String| {
        t.api(Method::POST, &path, &t.tenant.api_key)
            .json(&serde_json::json!({"body": "hello?"}))
    };
    let resp = api(format!("/conversations/{thread}/messages"))
        .send()
        .await
        .unwrap();
    assert!(
        body_of(resp, StatusCode::CONFLICT)
            .await
            .contains("removed")
    );
    let again = format!("/conversations/{thread}/messages/{reply}/retry");
    let resp = api(again).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(t.messages(tenant).await.len(), 2, "nothing queued");
    let listed = t.conversations(&t.tenant.api_key).await;
    assert_eq!(listed[0]["number_removed"], true, "{listed}");
    let html = owner.page(&format!("/conversations?c={thread}")).await;
    assert!(html.contains("was removed in Settings"), "{html}");
    assert!(!html.contains(&format!("action=\"/conversations/{thread}/messages\"")));
    assert!(!html.contains(&format!("/messages/{reply}/retry")));

    // Added back (the web form asks for the built-in bot): the same row, bot and conversation.
    let resp = owner
        .post_form("/settings/numbers", &[("e164", t.tenant.number.as_str())])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let rows = phone_number::Entity::find()
        .filter(phone_number::Column::E164.eq(&t.tenant.number))
        .all(&t.db.read)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].id, rows[0].released_at, rows[0].bot),
        (number.id, None, BotKind::None)
    );
    assert_eq!(t.text_in(customer, "back?").await.status(), StatusCode::OK);
    let rows = t.messages(tenant).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|m| m.conversation_id == thread));
    let html = owner.page(&format!("/conversations?c={thread}")).await;
    assert!(html.contains(&format!("action=\"/conversations/{thread}/messages\"")));
    assert!(html.contains(&format!("/messages/{reply}/retry")));
}

/// A number is added only when Twilio lists it among the tenant's own account's
/// IncomingPhoneNumbers (asked with that account's credentials); a number it does not hold is
/// a 400 naming the field, and a Twilio that cannot answer a 503. Neither stores anything.
#[tokio::test]
async fn a_number_must_be_on_the_tenants_own_twilio_account() {
    let t = spawn_app().await;
    let numbers_path = format!(
        "/2010-04-01/Accounts/{}/IncomingPhoneNumbers.json",
        t.tenant.account_sid
    );
    let answer = |number: &str, resp: ResponseTemplate| {
        Mock::given(method("GET"))
            .and(path(numbers_path.clone()))
            .and(query_param("PhoneNumber", number))
            .respond_with(resp)
            .with_priority(1)
    };
    answer(
        "+14155550155",
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            // Twilio's filter matches patterns too: only the exact number counts.
            "incoming_phone_numbers": [{"phone_number": "+141555501550"}]
        })),
    )
    .mount(&t.twilio)
    .await;
    answer(
        "+14155550166",
        ResponseTemplate::new(503).set_body_json(serde_json::json!({
            "code": 20500, "message": "Internal Server Error", "status": 503
        })),
    )
    .mount(&t.twilio)
    .await;
    let stored = async |number: &str| {
        phone_number::Entity::find()
            .filter(phone_number::Column::E164.eq(number))
            .count(&t.db.read)
            .await
            .unwrap()
    };

    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let resp = owner
        .post_form("/settings/numbers", &[("e164", "+14155550155")])
        .await;
    let html = body_of(resp, StatusCode::BAD_REQUEST).await;
    assert!(
        html.contains("e164: +14155550155 is not a number of your Twilio account"),
        "{html}"
    );
    assert_eq!(stored("+14155550155").await, 0);

    let resp = owner
        .post_form("/settings/numbers", &[("e164", "+14155550166")])
        .await;
    let html = body_of(resp, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(html.contains("Twilio could not confirm"), "{html}");
    assert_eq!(stored("+14155550166").await, 0);

    let resp = owner
        .post_form("/settings/numbers", &[("e164", "+14155550177")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(stored("+14155550177").await, 1);
    let requests = t.twilio.received_requests().await.unwrap();
    let asked = requests
        .iter()
        .find(|r| {
            r.url.path() == numbers_path
                && r.url
                    .query_pairs()
                    .any(|(k, v)| k == "PhoneNumber" && v == "+14155550177")
        })
        .expect("Twilio asked about the number");
    let auth = format!(
        "Basic {}",
        base64_encode(format!("{}:{}", t.tenant.account_sid, t.tenant.auth_token).as_bytes())
    );
    assert_eq!(
        asked
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        auth,
        "asked with the tenant's own credentials"
    );
}

#[tokio::test]
async fn agents_read_settings_but_every_change_is_403() {
    let t = spawn_app().await;
    let (mut agent, _, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let html = agent.page("/settings").await;
    assert!(html.contains("read-only"));
    assert!(!html.contains(r#"action="/settings/api-keys""#));
    let key = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(t.tenant.tenant_id))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    let owner_membership = membership::Entity::find()
        .filter(membership::Column::TenantId.eq(t.tenant.tenant_id))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    let sid = format!("AC{}", "ab".repeat(16));
    let attempts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/settings/profile".into(),
            vec![("business_name", "Hijacked"), ("time_zone", "UTC")],
        ),
        (
            "/settings/twilio".into(),
            vec![
                ("account_sid", sid.as_str()),
                ("auth_token", "0123456789abcdef0123"),
            ],
        ),
        ("/settings/twilio/test".into(), vec![]),
        ("/settings/twilio/disconnect".into(), vec![]),
        ("/settings/numbers".into(), vec![("e164", "+14155550133")]),
        ("/settings/api-keys".into(), vec![("name", "mine")]),
        (format!("/settings/api-keys/{}/revoke", key.id), vec![]),
        (
            format!("/settings/members/{}", owner_membership.id),
            vec![("role", "remove")],
        ),
    ];
    for (path, fields) in &attempts {
        let resp = agent.post_form(path, fields).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let row = tenant::Entity::find_by_id(t.tenant.tenant_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.name, "Acme Plumbing");
    assert!(row.twilio_account_sid.is_some_and(|s| s != sid));
    assert_eq!(
        api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(t.tenant.tenant_id))
            .count(&t.db.read)
            .await
            .unwrap(),
        1
    );
    assert!(
        api_key::Entity::find_by_id(key.id)
            .one(&t.db.read)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
}

/// Two owners stepping down at the same moment leave one of them owner: one change counts
/// the owners with their rows locked (Postgres; SQLite writes one at a time), the other
/// then finds a single owner and is refused. 40 rounds: without the lock, Postgres let both
/// through in round 24 of one run.
#[tokio::test]
async fn two_owners_stepping_down_at_once_leave_one_owner() {
    use switchboard_services::{TenantCtx, accounts};

    let t = spawn_app().await;
    let tenant = t.tenant.tenant_id;
    let (_, a, _) = t.member(tenant, Role::Owner).await;
    let (_, b, _) = t.member(tenant, Role::Owner).await;
    let ctx = TenantCtx::for_job(tenant);
    let of = |user| {
        membership::Entity::find()
            .filter(membership::Column::UserId.eq(user))
            .one(&t.db.read)
    };
    let (a, b) = (
        of(a).await.unwrap().unwrap().id,
        of(b).await.unwrap().unwrap().id,
    );
    let owners = async || {
        membership::Entity::find()
            .filter(membership::Column::TenantId.eq(tenant))
            .filter(membership::Column::Role.eq(Role::Owner))
            .count(&t.db.read)
            .await
            .unwrap()
    };
    for round in 0..40 {
        let step_down =
            |id| accounts::change_member(&t.app, &ctx, Role::Owner, id, Some(Role::Admin));
        let (first, second) = tokio::join!(step_down(a), step_down(b));
        assert_eq!(
            u8::from(first.is_ok()) + u8::from(second.is_ok()),
            1,
            "round {round}: {first:?} {second:?}"
        );
        assert_eq!(owners().await, 1, "round {round}");
        for id in [a, b] {
            accounts::change_member(&t.app, &ctx, Role::Owner, id, Some(Role::Owner))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn members_roles_keep_an_owner_and_removal_ends_access() {
    let t = spawn_app().await;
    let (mut owner, owner_id, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let (mut admin, _, _) = t.member(t.tenant.tenant_id, Role::Admin).await;
    let (mut agent, agent_id, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let membership_of = |user| {
        let db = t.db.read.clone();
        async move {
            membership::Entity::find()
                .filter(membership::Column::UserId.eq(user))
                .one(&db)
                .await
                .unwrap()
        }
    };
    let owner_m = membership_of(owner_id).await.unwrap();
    let agent_m = membership_of(agent_id).await.unwrap();
    admin.page("/settings").await;
    // An admin cannot touch the owner role.
    let resp = admin
        .post_form(
            &format!("/settings/members/{}", owner_m.id),
            &[("role", "agent")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = admin
        .post_form(
            &format!("/settings/members/{}", agent_m.id),
            &[("role", "owner")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // The last owner cannot step down.
    owner.page("/settings").await;
    let resp = owner
        .post_form(
            &format!("/settings/members/{}", owner_m.id),
            &[("role", "admin")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(membership_of(owner_id).await.unwrap().role, Role::Owner);
    // An admin removes the agent: the agent's next request finds no business.
    agent.page("/conversations").await;
    let resp = admin
        .post_form(
            &format!("/settings/members/{}", agent_m.id),
            &[("role", "remove")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(membership_of(agent_id).await.is_none());
    let resp = agent.get("/conversations").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/onboarding");
    let resp = agent
        .post_form("/settings/api-keys", &[("name", "after removal")])
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

/// Removed from the business a session works in, a person who belongs to another goes on
/// there: `/switch` takes them (it needs no current business), and `/onboarding` sends them
/// to it instead of offering to create a duplicate business.
#[tokio::test]
async fn removed_from_one_business_a_member_goes_on_in_another() {
    use sea_orm::ActiveModelTrait;
    let t = spawn_app().await;
    let other = switchboard_testkit::create_tenant(
        &t.app,
        "Second Plumbing",
        "+15125550179",
        BotKind::None,
    )
    .await;
    let (mut owner, _, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let (mut agent, agent_id, email) = t.member(t.tenant.tenant_id, Role::Agent).await;
    membership::ActiveModel {
        id: Set(switchboard_domain::MembershipId::new()),
        tenant_id: Set(other.tenant_id),
        user_id: Set(agent_id),
        role: Set(Role::Agent),
        created_at: Set(chrono::Utc::now()),
    }
    .insert(&t.db.write)
    .await
    .unwrap();
    let mut second = t.browser();
    second.sign_in(&email, switchboard_testkit::PASSWORD).await;
    agent.page("/conversations").await;
    let in_a = membership::Entity::find()
        .filter(membership::Column::UserId.eq(agent_id))
        .filter(membership::Column::TenantId.eq(t.tenant.tenant_id))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    owner.page("/settings").await;
    let resp = owner
        .post_form(
            &format!("/settings/members/{}", in_a.id),
            &[("role", "remove")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    let resp = agent
        .post_form("/switch", &[("tenant", &other.tenant_id.to_string())])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        agent
            .page("/conversations")
            .await
            .contains("Second Plumbing")
    );

    let resp = second.get("/conversations").await;
    assert_eq!(resp.headers()["location"], "/onboarding");
    let resp = second.get("/onboarding").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/");
    assert!(
        second
            .page("/conversations")
            .await
            .contains("Second Plumbing")
    );
}

#[tokio::test]
async fn the_profile_is_saved_and_bad_input_names_the_field() {
    let t = spawn_app().await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let resp = owner
        .post_form(
            "/settings/profile",
            &[("business_name", "Acme"), ("time_zone", "Mars/Olympus")],
        )
        .await;
    assert!(
        body_of(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("time_zone:")
    );
    // The business's own Switchboard number would get the lead alerts as a lead's texts.
    let resp = owner
        .post_form(
            "/settings/profile",
            &[
                ("business_name", "Acme"),
                ("time_zone", "America/New_York"),
                ("notify_phone", &t.tenant.number),
            ],
        )
        .await;
    assert!(
        body_of(resp, StatusCode::BAD_REQUEST)
            .await
            .contains("notify_phone: is a number Switchboard answers")
    );
    let resp = owner
        .post_form(
            "/settings/profile",
            &[
                ("business_name", "Acme Plumbing & Heating"),
                ("time_zone", "America/New_York"),
                ("notify_phone", "+12125550100"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let row = tenant::Entity::find_by_id(t.tenant.tenant_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.name, "Acme Plumbing & Heating");
    assert_eq!(row.time_zone, "America/New_York");
    assert_eq!(row.notify_phone.as_deref(), Some("+12125550100"));
    let page = owner.page("/settings?done=profile").await;
    assert!(page.contains("Business profile saved."));
    assert!(page.contains("/webhooks/twilio/sms") && page.contains("data-copy"));
}

/// On a platform with its own Twilio account, a tenant without one would have the platform's
/// numbers verified with the platform's token: it may not claim a number itself (the operator
/// assigns those), and nothing is written when it tries. With its own account it may.
#[tokio::test]
async fn a_tenant_without_its_own_account_cannot_claim_platform_numbers() {
    let t = spawn_app_with(Options {
        settings: vec![
            ("TWILIO_ACCOUNT_SID".into(), format!("AC{}", "0".repeat(32))),
            (
                "TWILIO_AUTH_TOKEN".into(),
                "platform-token-0123456789".into(),
            ),
        ],
        ..Options::default()
    })
    .await;
    let own = tenant::Entity::find_by_id(t.tenant.tenant_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    let mut without: tenant::ActiveModel = own.clone().into();
    without.twilio_account_sid = Set(None);
    without.twilio_auth_token_sealed = Set(None);
    tenant::Entity::update(without)
        .exec(&t.db.write)
        .await
        .unwrap();

    let mut owner = t.owner().await;
    let html = owner.page("/settings").await;
    assert!(html.contains("assigned by its operator"), "{html}");
    assert!(
        !html.contains(r#"action="/settings/numbers""#),
        "no form to add one"
    );
    let resp = owner
        .post_form("/settings/numbers", &[("e164", "+14155550144")])
        .await;
    assert!(
        body_of(resp, StatusCode::FORBIDDEN)
            .await
            .contains("Connect your own Twilio account")
    );
    let claimed = phone_number::Entity::find()
        .filter(phone_number::Column::E164.eq("+14155550144"))
        .count(&t.db.read)
        .await
        .unwrap();
    assert_eq!(claimed, 0);
    // The number the operator assigned can be removed and taken back, nothing else.
    let assigned = number_row(&t, &t.tenant.number).await;
    let resp = remove_number(&mut owner, assigned.id).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let html = owner.page("/settings").await;
    let removed = between(&html, "Removed numbers", "</table>").unwrap();
    assert!(removed.contains(&assigned.e164) && removed.contains("Add back"));
    let resp = owner
        .post_form("/settings/numbers", &[("e164", assigned.e164.as_str())])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let again = phone_number::Entity::find_by_id(assigned.id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.released_at, None);

    let mut back: tenant::ActiveModel = own.clone().into();
    back.twilio_account_sid = Set(own.twilio_account_sid.clone());
    back.twilio_auth_token_sealed = Set(own.twilio_auth_token_sealed.clone());
    tenant::Entity::update(back)
        .exec(&t.db.write)
        .await
        .unwrap();
    let resp = owner
        .post_form("/settings/numbers", &[("e164", "+14155550144")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

/// `switchboard admin create-tenant` checks what the web forms check. An empty auth token
/// (an unset shell variable) would otherwise be stored, and every webhook to the number would
/// be verified with an HMAC key of nothing: anyone could sign one.
#[tokio::test]
async fn create_tenant_refuses_what_the_forms_refuse() {
    use secrecy::SecretString;
    use switchboard_domain::phone::E164;
    use switchboard_services::ServiceError;
    use switchboard_services::tenancy::{self, NewTenant, TwilioCredentials};

    let t = spawn_app().await;
    let tenants = async || tenant::Entity::find().count(&t.db.read).await.unwrap();
    let before = tenants().await;
    let new = |name: &str, time_zone: &str, sid: &str, token: &str| NewTenant {
        name: name.into(),
        time_zone: time_zone.into(),
        number: E164::parse("+14155550161").unwrap(),
        bot: BotKind::Qualify,
        twilio: Some(TwilioCredentials {
            account_sid: sid.into(),
            auth_token: SecretString::from(token),
        }),
    };
    let sid = format!("AC{}", "c".repeat(32));
    let token = "0123456789abcdef0123456789abcdef";
    for (bad, field) in [
        (new("Acme", "America/Chicago", &sid, ""), "auth_token"),
        (new("Acme", "America/Chicago", &sid, "short"), "auth_token"),
        (
            new("Acme", "America/Chicago", "AC123", token),
            "account_sid",
        ),
        (new("  ", "America/Chicago", &sid, token), "business_name"),
        (new("Acme", "Mars/Base", &sid, token), "time_zone"),
    ] {
        match tenancy::create_tenant(&t.app, bad).await {
            Err(ServiceError::Invalid { field: got, .. }) => assert_eq!(got, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(tenants().await, before, "nothing stored");
    tenancy::create_tenant(&t.app, new(" Acme ", "America/Chicago", &sid, token))
        .await
        .unwrap();
    assert_eq!(tenants().await, before + 1);
}

/// A refused settings form comes back with what was typed in it, not the stored values or an
/// empty field, beside the error naming the field.
#[tokio::test]
async fn a_refused_settings_form_keeps_what_was_typed() {
    let t = spawn_app().await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let cases: [(&str, Vec<(&str, &str)>, &str, &str); 4] = [
        (
            "/settings/profile",
            vec![
                ("business_name", "Renamed Co"),
                ("time_zone", "Mars/Olympus"),
            ],
            "time_zone:",
            r#"value="Renamed Co""#,
        ),
        (
            "/settings/invites",
            vec![("email", "kept@example.com"), ("role", "boss")],
            "role:",
            r#"value="kept@example.com""#,
        ),
        (
            "/settings/numbers",
            vec![("e164", "+1555")],
            "e164:",
            r#"value="+1555""#,
        ),
        (
            "/settings/api-keys",
            vec![(
                "name",
                "a key name that is far too long for the sixty character limit",
            )],
            "name:",
            r#"value="a key name that is far too long for the sixty character limit""#,
        ),
    ];
    for (path, fields, error, kept) in cases {
        let resp = owner.post_form(path, &fields).await;
        let html = body_of(resp, StatusCode::BAD_REQUEST).await;
        assert!(html.contains(error), "{path}: {error}");
        assert!(html.contains(kept), "{path}: {kept}");
    }
}
