//! Twilio's real-shaped webhook samples, signed and posted to our endpoints.

use switchboard_domain::message::MessageStatus;
use switchboard_entity::phone_number::BotKind;
use switchboard_services::webhooks::parse_inbound;
use switchboard_testkit::{create_tenant, param, set, spawn_app, twilio_fixture};

#[test]
fn every_sms_sample_parses() {
    for name in ["inbound_sms", "inbound_mms", "inbound_stop_advanced_optout"] {
        let params = twilio_fixture(name);
        let sms = parse_inbound(&params).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sms.from.as_str(), "+17135550123", "{name}");
        assert_eq!(sms.to.as_str(), "+14155550100", "{name}");
        assert_eq!(Some(sms.message_sid.as_str()), param(&params, "MessageSid"));
    }
}

#[tokio::test]
async fn every_status_sample_is_applied_in_order() {
    let t = spawn_app().await;
    t.text_in("+17135550123", "HELP").await;
    let rows = t
        .wait_messages(t.tenant.tenant_id, |m| {
            m.iter().any(|m| {
                m.provider_sid.is_some()
                    && m.source == switchboard_domain::message::Source::Compliance
            })
        })
        .await;
    let reply = rows
        .iter()
        .find(|m| m.source == switchboard_domain::message::Source::Compliance)
        .unwrap();
    let sid = reply.provider_sid.clone().unwrap();
    let post = |name: &str| {
        let mut params = twilio_fixture(name);
        set(&mut params, "MessageSid", &sid);
        set(&mut params, "SmsSid", &sid);
        set(&mut params, "AccountSid", &t.tenant.account_sid);
        params
    };
    for (name, expected) in [
        ("status_sent", MessageStatus::Sent),
        ("status_undelivered_30007", MessageStatus::Undelivered),
        ("status_delivered", MessageStatus::Undelivered),
    ] {
        let resp = t
            .post_signed("/webhooks/twilio/status", &t.tenant.auth_token, &post(name))
            .await;
        assert_eq!(resp.status(), 200, "{name}");
        let now = t.message(reply.id).await;
        assert_eq!(now.status, expected, "{name}");
    }
    let now = t.message(reply.id).await;
    assert_eq!(now.error_code, Some(30007), "ErrorCode kept");

    // A callback for a MessageSid we never sent is a 404, and writes nothing.
    let mut unknown = twilio_fixture("status_delivered");
    set(&mut unknown, "AccountSid", &t.tenant.account_sid);
    let resp = t
        .post_signed("/webhooks/twilio/status", &t.tenant.auth_token, &unknown)
        .await;
    assert_eq!(resp.status(), 404);
    // Unsigned, or signed with another token, it is a 403, as for a message we do know:
    // nobody without the token learns which MessageSids are ours.
    let resp = t
        .post_signed("/webhooks/twilio/status", "wrong-token", &unknown)
        .await;
    assert_eq!(resp.status(), 403);
    // A forged callback is a 403 and writes nothing.
    let resp = t
        .post_signed(
            "/webhooks/twilio/status",
            "wrong-token",
            &post("status_delivered"),
        )
        .await;
    assert_eq!(resp.status(), 403);

    // Another tenant signing with its own account gets the same answer for our message as
    // for a MessageSid nobody has: it cannot find out which are ours.
    let other = create_tenant(&t.app, "Other", "+14155550177", BotKind::Qualify).await;
    for params in [post("status_delivered"), unknown] {
        let mut params = params;
        set(&mut params, "AccountSid", &other.account_sid);
        let resp = t
            .post_signed("/webhooks/twilio/status", &other.auth_token, &params)
            .await;
        assert_eq!(resp.status(), 404);
    }
    assert_eq!(t.message(reply.id).await.status, MessageStatus::Undelivered);
}

#[tokio::test]
async fn whatsapp_sample_is_refused_with_a_clear_error_and_nothing_stored() {
    // Until conversations know their channel, a WhatsApp text must not be answered by SMS.
    let params = twilio_fixture("inbound_whatsapp");
    let err = parse_inbound(&params).unwrap_err().to_string();
    assert!(err.starts_with("To: only SMS"), "{err}");
    let t = spawn_app().await;
    let mut params = twilio_fixture("inbound_whatsapp");
    set(&mut params, "To", &format!("whatsapp:{}", t.tenant.number));
    set(&mut params, "AccountSid", &t.tenant.account_sid);
    let resp = t.post_sms(&params).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().starts_with("To: only SMS"));
    assert_eq!(t.counts(t.tenant.tenant_id).await, (0, 0, 0));
}
