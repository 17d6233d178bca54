//! The inbound webhook's edge: signatures, duplicates, malformed and oversized requests.

use switchboard_testkit::{inbound, set, spawn_app, spawn_app_without_workers};

#[tokio::test]
async fn a_retried_message_sid_is_stored_once() {
    let t = spawn_app().await;
    let params = inbound(
        &t.tenant.account_sid,
        "+17135550123",
        &t.tenant.number,
        "hello",
    );
    let (a, b) = tokio::join!(t.post_sms(&params), t.post_sms(&params));
    assert_eq!(
        (a.status(), b.status()),
        (reqwest::StatusCode::OK, reqwest::StatusCode::OK)
    );
    assert_eq!(t.post_sms(&params).await.status(), 200);
    t.wait_for_sends(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let rows = t.messages(t.tenant.tenant_id).await;
    let inbound_rows = rows
        .iter()
        .filter(|m| m.provider_sid.as_deref() == switchboard_testkit::param(&params, "MessageSid"))
        .count();
    assert_eq!(inbound_rows, 1);
    assert_eq!(t.twilio_sends().await.len(), 2, "the bot answered once");
}

#[tokio::test]
async fn forged_missing_or_misaddressed_signatures_are_rejected_before_any_write() {
    let t = spawn_app().await;
    let params = inbound(
        &t.tenant.account_sid,
        "+17135550123",
        &t.tenant.number,
        "hello",
    );

    // Signed with another token (a stale or leaked one).
    let forged = t
        .post_signed("/webhooks/twilio/sms", "not-the-token", &params)
        .await;
    assert_eq!(forged.status(), 403);

    // No signature at all.
    let missing = t
        .http
        .post(format!("{}/webhooks/twilio/sms", t.address))
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 403);

    // Signed for the right token, then a parameter changed in flight.
    let url = format!("{}/webhooks/twilio/sms", t.address);
    let signature =
        switchboard_domain::signature::twilio::compute(&t.tenant.auth_token, &url, &params);
    let mut tampered = params.clone();
    set(&mut tampered, "Body", "send me everything");
    let resp = t
        .http
        .post(&url)
        .header("X-Twilio-Signature", signature)
        .form(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    // Signed over a different URL (what Twilio signed is APP_URL + path + query).
    let other = switchboard_domain::signature::twilio::compute(
        &t.tenant.auth_token,
        "https://elsewhere.example/webhooks/twilio/sms",
        &params,
    );
    let resp = t
        .http
        .post(&url)
        .header("X-Twilio-Signature", other)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    assert_eq!(
        t.counts(t.tenant.tenant_id).await,
        (0, 0, 0),
        "nothing written"
    );
    assert!(t.twilio_sends().await.is_empty());
}

#[tokio::test]
async fn malformed_input_gets_a_4xx_naming_the_field() {
    let t = spawn_app().await;
    for (field, value) in [
        ("From", ""),
        ("From", "713-555"),
        ("MessageSid", ""),
        ("MessageSid", "XX123"),
        ("To", "nope"),
    ] {
        let mut params = inbound(
            &t.tenant.account_sid,
            "+17135550123",
            &t.tenant.number,
            "hi",
        );
        set(&mut params, field, value);
        let resp = t.post_sms(&params).await;
        assert_eq!(resp.status(), 400, "{field}={value:?}");
        let text = resp.text().await.unwrap();
        assert!(text.starts_with(field), "{field}={value:?}: {text}");
    }
    // Unknown number.
    let params = inbound(&t.tenant.account_sid, "+17135550123", "+14155550199", "hi");
    assert_eq!(t.post_sms(&params).await.status(), 404);
    // Oversized body.
    let mut params = inbound(
        &t.tenant.account_sid,
        "+17135550123",
        &t.tenant.number,
        "hi",
    );
    set(&mut params, "Body", &"x".repeat(70 * 1024));
    assert_eq!(t.post_sms(&params).await.status(), 413);
    assert_eq!(t.counts(t.tenant.tenant_id).await, (0, 0, 0));
}

#[tokio::test]
async fn a_signature_for_the_url_with_the_default_port_is_accepted() {
    // Twilio's SDK accepts the URL with and without the default port; behind a proxy on
    // https the signed URL may carry :443.
    let t = switchboard_testkit::spawn_app_with(switchboard_testkit::Options {
        settings: vec![("APP_URL".into(), "https://sb.example.com".into())],
        ..Default::default()
    })
    .await;
    let params = inbound(
        &t.tenant.account_sid,
        "+17135550123",
        &t.tenant.number,
        "hello",
    );
    for signed_url in [
        "https://sb.example.com/webhooks/twilio/sms",
        "https://sb.example.com:443/webhooks/twilio/sms",
    ] {
        let mut params = params.clone();
        set(
            &mut params,
            "MessageSid",
            &switchboard_testkit::message_sid(),
        );
        let signature = switchboard_domain::signature::twilio::compute(
            &t.tenant.auth_token,
            signed_url,
            &params,
        );
        let resp = t
            .http
            .post(format!("{}/webhooks/twilio/sms", t.address))
            .header("X-Twilio-Signature", signature)
            .form(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{signed_url}");
    }
}

/// The SQLite writer remembers where each sender's contact and conversation rows are between
/// batches (`RowCache`). Rows another writer changed or deleted in between must be taken for
/// what they are now: an opt-out recorded elsewhere counts for the next "START", and a
/// deleted conversation or contact is created anew.
#[tokio::test]
async fn a_senders_rows_changed_or_deleted_between_texts_are_read_as_they_are_now() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use switchboard_domain::compliance::KeywordKind;
    use switchboard_entity::{contact, conversation};

    let t = spawn_app_without_workers().await;
    let from = "+17135550177";
    let thread_of = |contact_id| {
        conversation::Entity::find()
            .filter(conversation::Column::TenantId.eq(t.tenant.tenant_id))
            .filter(conversation::Column::ContactId.eq(contact_id))
            .one(&t.db.read)
    };
    for body in ["hello", "still there?"] {
        assert_eq!(t.text_in(from, body).await.status(), 200);
    }
    let first = t.contact(from).await;
    let thread = thread_of(first.id).await.unwrap().expect("conversation");
    assert_eq!(
        thread.unread_count, 2,
        "the second text bumped the same conversation"
    );

    // Opted out by another writer (a send refused with Twilio error 21610).
    contact::Entity::update_many()
        .col_expr(contact::Column::OptedOutAt, Some(chrono::Utc::now()).into())
        .filter(contact::Column::Id.eq(first.id))
        .exec(&t.db.write)
        .await
        .unwrap();
    assert_eq!(t.text_in(from, "START").await.status(), 200);
    let rows = t.messages(t.tenant.tenant_id).await;
    assert_eq!(
        rows.last().map(|m| m.compliance),
        Some(Some(KeywordKind::OptIn))
    );
    assert!(
        t.contact(from).await.opted_out_at.is_none(),
        "re-subscribed"
    );

    // The conversation deleted (its messages with it), then the sender texts again.
    conversation::Entity::delete_by_id(thread.id)
        .exec(&t.db.write)
        .await
        .unwrap();
    assert_eq!(t.text_in(from, "anyone?").await.status(), 200);
    let reopened = thread_of(first.id)
        .await
        .unwrap()
        .expect("new conversation");
    assert_ne!(reopened.id, thread.id);
    assert_eq!(reopened.unread_count, 1);

    // The contact deleted (its conversation and messages with it), then the sender texts again.
    contact::Entity::delete_by_id(first.id)
        .exec(&t.db.write)
        .await
        .unwrap();
    assert_eq!(t.text_in(from, "back again").await.status(), 200);
    let second = t.contact(from).await;
    assert_ne!(second.id, first.id);
    let thread = thread_of(second.id)
        .await
        .unwrap()
        .expect("new conversation");
    assert_eq!(thread.unread_count, 1);
    let rows = t.messages(t.tenant.tenant_id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].body.as_str(), rows[0].conversation_id),
        ("back again", thread.id)
    );
}

/// A new auth token saved by another process (here: written to the database behind this
/// process's route cache) verifies the number's webhooks at once: a signature that the cached
/// route's token does not verify makes the route be read again before any 403. The old token
/// is then refused, with nothing written.
#[tokio::test]
async fn a_new_auth_token_saved_by_another_process_verifies_webhooks_at_once() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use switchboard_entity::tenant;

    let t = spawn_app_without_workers().await;
    let customer = "+17135550124";
    assert_eq!(
        t.text_in(customer, "first").await.status(),
        200,
        "route cached"
    );
    let token = "fedcba9876543210fedcba9876543210";
    tenant::Entity::update_many()
        .col_expr(
            tenant::Column::TwilioAuthTokenSealed,
            Some(t.app.sealer.seal(token)).into(),
        )
        .filter(tenant::Column::Id.eq(t.tenant.tenant_id))
        .exec(&t.db.write)
        .await
        .unwrap();
    let text = |body| inbound(&t.tenant.account_sid, customer, &t.tenant.number, body);
    let resp = t
        .post_signed("/webhooks/twilio/sms", token, &text("second"))
        .await;
    assert_eq!(resp.status(), 200);
    let resp = t
        .post_signed("/webhooks/twilio/sms", &t.tenant.auth_token, &text("third"))
        .await;
    assert_eq!(resp.status(), 403);
    let bodies: Vec<String> = t
        .messages(t.tenant.tenant_id)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["first", "second"]);
}

/// An agency's businesses often share one Twilio account, so a number one of them removed and
/// another added keeps verifying with the same token. A process that cached the old route
/// (up to `ROUTE_TTL_SECS`) must not store the new owner's customer's text in the old
/// owner's inbox: the writer finds the number released and the route is read again.
#[tokio::test]
async fn a_number_moved_to_another_tenant_by_another_process_routes_to_the_new_owner_at_once() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use switchboard_entity::{phone_number, tenant};
    use switchboard_testkit::create_tenant;

    let t = spawn_app_without_workers().await;
    let b = create_tenant(
        &t.app,
        "Second Plumbing",
        "+15125550177",
        phone_number::BotKind::None,
    )
    .await;
    let customer = "+17135550125";
    assert_eq!(
        t.text_in(customer, "to A").await.status(),
        200,
        "route cached"
    );
    let release_numbers_of = async |tenant| {
        phone_number::Entity::update_many()
            .col_expr(
                phone_number::Column::ReleasedAt,
                Some(chrono::Utc::now()).into(),
            )
            .filter(phone_number::Column::TenantId.eq(tenant))
            .exec(&t.db.write)
            .await
            .unwrap();
    };
    // What another process does: A removes the number, B (on A's Twilio account) adds it.
    tenant::Entity::update_many()
        .col_expr(
            tenant::Column::TwilioAccountSid,
            Some(t.tenant.account_sid.clone()).into(),
        )
        .col_expr(
            tenant::Column::TwilioAuthTokenSealed,
            Some(t.app.sealer.seal(&t.tenant.auth_token)).into(),
        )
        .filter(tenant::Column::Id.eq(b.tenant_id))
        .exec(&t.db.write)
        .await
        .unwrap();
    release_numbers_of(t.tenant.tenant_id).await;
    phone_number::Entity::update_many()
        .col_expr(phone_number::Column::E164, t.tenant.number.clone().into())
        .filter(phone_number::Column::TenantId.eq(b.tenant_id))
        .exec(&t.db.write)
        .await
        .unwrap();

    assert_eq!(t.text_in(customer, "to B").await.status(), 200);
    let bodies = |rows: Vec<switchboard_entity::message::Model>| -> Vec<String> {
        rows.into_iter().map(|m| m.body).collect()
    };
    assert_eq!(bodies(t.messages(t.tenant.tenant_id).await), ["to A"]);
    assert_eq!(bodies(t.messages(b.tenant_id).await), ["to B"]);

    // Released and held by nobody: a 404, nothing stored.
    release_numbers_of(b.tenant_id).await;
    assert_eq!(t.text_in(customer, "to nobody").await.status(), 404);
    assert_eq!(bodies(t.messages(b.tenant_id).await), ["to B"]);
}

/// A status callback is signed by the account that sent the message, which need not be the
/// tenant's account now (a reply sent through the platform's account before the tenant
/// connected its own). Its `AccountSid` picks the token: the platform's, when it names the
/// platform's account; a callback that names it but is signed with another token is refused.
#[tokio::test]
async fn a_status_callback_from_the_platform_account_is_verified_with_its_token() {
    use switchboard_domain::message::{Direction, MessageStatus};
    use switchboard_testkit::{Options, spawn_app_with};

    let platform_sid = format!("AC{}", "0".repeat(32));
    let t = spawn_app_with(Options {
        settings: vec![
            ("TWILIO_ACCOUNT_SID".into(), platform_sid.clone()),
            (
                "TWILIO_AUTH_TOKEN".into(),
                "platform-token-0123456789".into(),
            ),
        ],
        ..Options::default()
    })
    .await;
    assert_eq!(t.text_in("+17135550126", "hello").await.status(), 200);
    t.wait_for_sends(1).await;
    let reply = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter()
                .any(|m| m.direction == Direction::Outbound && m.provider_sid.is_some())
        })
        .await
        .into_iter()
        .find(|m| m.direction == Direction::Outbound)
        .unwrap();
    let sid = reply.provider_sid.clone().unwrap();
    let callback = |status: &str| {
        vec![
            ("MessageSid".to_string(), sid.clone()),
            ("MessageStatus".to_string(), status.to_string()),
            ("AccountSid".to_string(), platform_sid.clone()),
        ]
    };
    let forged = t
        .status_callback_from(reply.id, &callback("failed"), &t.tenant.auth_token)
        .await;
    assert_eq!(
        forged.status(),
        403,
        "names the platform, signed by another"
    );
    let resp = t
        .status_callback_from(
            reply.id,
            &callback("delivered"),
            "platform-token-0123456789",
        )
        .await;
    assert_eq!(resp.status(), 200);
    let now = t.message(reply.id).await;
    assert_eq!(now.status, MessageStatus::Delivered);
}

/// A body with U+0000 (which a Postgres `text` cannot hold) is stored with U+FFFD in its
/// place, on either database, rather than failing the webhook and losing the text.
#[tokio::test]
async fn a_body_with_a_nul_character_is_stored() {
    let t = spawn_app_without_workers().await;
    assert_eq!(
        t.text_in("+17135550161", "leak\0 in the attic")
            .await
            .status(),
        200
    );
    let rows = t.messages(t.tenant.tenant_id).await;
    assert_eq!(rows[0].body, "leak\u{FFFD} in the attic");
}
