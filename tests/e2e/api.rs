//! The REST API: authentication, tenant isolation, manual sends and human takeover.

use reqwest::Method;
use switchboard_domain::message::{MessageStatus, Source};
use switchboard_services::tenancy::BotKind;
use switchboard_testkit::{create_tenant, param, spawn_app};

#[tokio::test]
async fn requests_without_a_valid_key_are_401() {
    let t = spawn_app().await;
    let none = t
        .http
        .get(format!("{}/api/v1/conversations", t.address))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    let bad = t
        .api(
            Method::GET,
            "/conversations",
            "sb_0000000000000000000000000000000000000000",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
}

#[tokio::test]
async fn tenant_b_cannot_see_or_touch_tenant_a() {
    let t = spawn_app().await;
    let b = create_tenant(&t.app, "Bravo Clinic", "+14155550111", BotKind::Qualify).await;
    t.text_in("+17135550150", "hello A").await;
    t.wait_for_sends(2).await;

    let a_list: serde_json::Value = t.conversations(&t.tenant.api_key).await;
    let a_conversation = a_list[0]["id"].as_str().unwrap().to_string();

    let b_list: serde_json::Value = t.conversations(&b.api_key).await;
    assert_eq!(
        b_list.as_array().unwrap().len(),
        0,
        "B's list never includes A's rows"
    );

    let read = t
        .api(
            Method::GET,
            &format!("/conversations/{a_conversation}/messages"),
            &b.api_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 404);
    let before = t.counts(t.tenant.tenant_id).await;
    let write = t
        .api(
            Method::POST,
            &format!("/conversations/{a_conversation}/messages"),
            &b.api_key,
        )
        .json(&serde_json::json!({"body": "hi from B"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 404);
    assert_eq!(
        t.counts(t.tenant.tenant_id).await,
        before,
        "zero rows touched"
    );
    assert_eq!(t.counts(b.tenant_id).await, (0, 0, 0));

    let own = t
        .api(
            Method::GET,
            &format!("/conversations/{a_conversation}/messages"),
            &t.tenant.api_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
}

#[tokio::test]
async fn a_manual_reply_pauses_the_bot_until_resumed() {
    let t = spawn_app().await;
    let from = "+17135550151";
    t.text_in(from, "hello").await;
    t.wait_for_sends(2).await;
    let list: serde_json::Value = t.conversations(&t.tenant.api_key).await;
    let cid = list[0]["id"].as_str().unwrap().to_string();

    let resp = t
        .api(
            Method::POST,
            &format!("/conversations/{cid}/messages"),
            &t.tenant.api_key,
        )
        .header("Idempotency-Key", "reply-1")
        .json(&serde_json::json!({"body": "Hi, this is Sam. I can come today."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let created: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(created["source"], "manual");
    assert_eq!(created["status"], "queued");
    // The same Idempotency-Key returns the same message without a second send.
    let again: serde_json::Value = t
        .api(
            Method::POST,
            &format!("/conversations/{cid}/messages"),
            &t.tenant.api_key,
        )
        .header("Idempotency-Key", "reply-1")
        .json(&serde_json::json!({"body": "Hi, this is Sam. I can come today."}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["id"], created["id"]);
    let sends = t.wait_for_sends(3).await;
    assert_eq!(
        param(&sends[2], "Body"),
        Some("Hi, this is Sam. I can come today.")
    );

    // The customer answers: stored, the bot stays quiet.
    t.text_in(from, "great, thanks").await;
    t.wait_messages(t.tenant.tenant_id, |m| {
        m.iter()
            .any(|m| m.body == "great, thanks" && m.handled_at.is_some())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(t.twilio_sends().await.len(), 3);

    let list: serde_json::Value = t.conversations(&t.tenant.api_key).await;
    assert_eq!(list[0]["bot_paused"], true);

    // Validation names the field.
    let bad = t
        .api(
            Method::POST,
            &format!("/conversations/{cid}/messages"),
            &t.tenant.api_key,
        )
        .json(&serde_json::json!({"body": "   "}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let err: serde_json::Value = bad.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().starts_with("body"));

    let messages: serde_json::Value = t
        .api(
            Method::GET,
            &format!("/conversations/{cid}/messages"),
            &t.tenant.api_key,
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let manual = messages
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["source"] == "manual")
        .count();
    assert_eq!(manual, 1);
    let rows = t.messages(t.tenant.tenant_id).await;
    assert!(
        rows.iter()
            .all(|m| m.source != Source::Manual || m.status != MessageStatus::Failed)
    );

    // Resumed, the bot does not take the next text for the answer to the question it asked
    // before the person wrote: it asks again, then goes on.
    let ctx = switchboard_services::TenantCtx::for_job(t.tenant.tenant_id);
    let id = cid.parse().unwrap();
    switchboard_services::messaging::set_bot_paused(&t.app, &ctx, id, false)
        .await
        .unwrap();
    t.text_in(from, "ok").await;
    let sends = t.wait_for_sends(4).await;
    assert!(param(&sends[3], "Body").unwrap().contains("1 for Repair"));
    assert_eq!(t.contact(from).await.fields, None, "'ok' is no answer");
    t.text_in(from, "1").await;
    let sends = t.wait_for_sends(5).await;
    assert!(param(&sends[4], "Body").unwrap().contains("How soon"));
    assert_eq!(t.contact(from).await.fields.unwrap()["service"], "Repair");
}

#[tokio::test]
async fn openapi_document_and_docs_are_served() {
    let t = spawn_app().await;
    let spec: serde_json::Value = t
        .http
        .get(format!("{}/api/openapi.json", t.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["paths"]["/conversations/{id}/messages"]["post"].is_object());
    assert_eq!(spec["servers"][0]["url"], format!("{}/api/v1", t.address));
    let docs = t
        .http
        .get(format!("{}/api/docs", t.address))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert_eq!(
        t.http
            .get(format!("{}/health", t.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        t.http
            .get(format!("{}/ready", t.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// An `Idempotency-Key` the API cannot honour is refused, not ignored: a key that is not
/// visible ASCII would reach the handler as no key (each retry would send again), an empty
/// one would tie unrelated requests together, and a very long one exceeds the index. A
/// replayed request changes nothing: a bot resumed since stays resumed.
#[tokio::test]
async fn idempotency_keys_are_checked_and_a_replay_changes_nothing() {
    let t = spawn_app().await;
    t.text_in("+17135550152", "hello").await;
    t.wait_for_sends(2).await;
    let list: serde_json::Value = t.conversations(&t.tenant.api_key).await;
    let cid = list[0]["id"].as_str().unwrap().to_string();
    let post = |key: reqwest::header::HeaderValue| {
        t.api(
            Method::POST,
            &format!("/conversations/{cid}/messages"),
            &t.tenant.api_key,
        )
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"body": "On our way"}))
        .send()
    };
    let header = |bytes: &[u8]| reqwest::header::HeaderValue::from_bytes(bytes).unwrap();
    for bad in [
        "réponse-1".as_bytes().to_vec(),
        Vec::new(),
        vec![b'k'; 256],
        b"two words".to_vec(),
    ] {
        let resp = post(header(&bad)).await.unwrap();
        assert_eq!(resp.status(), 400, "{bad:?}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .starts_with("Idempotency-Key"),
            "{err}"
        );
    }
    assert_eq!(t.twilio_sends().await.len(), 2, "nothing sent");

    let first: serde_json::Value = post(header(b"reply-1"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cid_typed = switchboard_domain::ConversationId(cid.parse().unwrap());
    let ctx = switchboard_services::TenantCtx::for_job(t.tenant.tenant_id);
    switchboard_services::messaging::set_bot_paused(&t.app, &ctx, cid_typed, false)
        .await
        .unwrap();
    let again = post(header(b"reply-1")).await.unwrap();
    assert_eq!(again.status(), 202);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let list: serde_json::Value = t.conversations(&t.tenant.api_key).await;
    assert_eq!(
        list[0]["bot_paused"], false,
        "the replay did not pause the bot"
    );
    // The same key with another text is refused, not taken for a repeat.
    let other = t
        .api(
            Method::POST,
            &format!("/conversations/{cid}/messages"),
            &t.tenant.api_key,
        )
        .header("Idempotency-Key", "reply-1")
        .json(&serde_json::json!({"body": "Something else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
}

/// Requests the API cannot read get the same JSON error as any other 400, naming what was
/// wrong; a body past 64 KiB is a 413, read no further; `limit` outside 1 to 200 is a 400.
#[tokio::test]
async fn unreadable_requests_get_json_errors_and_bodies_are_limited() {
    let t = spawn_app().await;
    t.text_in("+17135550153", "hello").await;
    t.wait_for_sends(2).await;
    let list: serde_json::Value = t.conversations(&t.tenant.api_key).await;
    let cid = list[0]["id"].as_str().unwrap().to_string();
    let path = format!("/conversations/{cid}/messages");
    for body in ["{}", "not json"] {
        let resp = t
            .api(Method::POST, &path, &t.tenant.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(err["error"].is_string(), "{err}");
    }
    for limit in ["0", "201", "abc"] {
        let resp = t
            .api(
                Method::GET,
                &format!("/conversations?limit={limit}"),
                &t.tenant.api_key,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "limit={limit}");
        let err: serde_json::Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains("limit"), "{err}");
    }
    let huge = serde_json::json!({"body": "x".repeat(100 * 1024)}).to_string();
    let resp = t
        .api(Method::POST, &path, &t.tenant.api_key)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(t.twilio_sends().await.len(), 2, "nothing sent");
}
