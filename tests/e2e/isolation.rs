//! The isolation sweep: every route the app serves (pages, fragments, SSE, REST API,
//! webhooks) is requested as tenant B with tenant A's ids. Ids of A are a 404, nothing of A
//! appears in any answer, and A's rows are byte-for-byte the same after every request. The
//! routes are enumerated from the router and the OpenAPI document: a route missing from the
//! table below fails the test.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use switchboard_domain::accounts::Role;
use switchboard_domain::message::Source;
use switchboard_entity::{
    api_key, contact, conversation, invite, membership, message, phone_number, tenant,
};
use switchboard_services::tenancy::BotKind;
use switchboard_testkit::{Browser, TestApp, create_tenant, spawn_app};

/// What a probe must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Tenant A's id: 404, never a 403 that confirms it exists.
    NotFound,
    /// Anything, as long as nothing of A is in it.
    NoLeak,
    /// A live stream: read it while A gets a text; nothing of A may arrive.
    Stream,
}

struct Probe {
    method: Method,
    path: String,
    form: Vec<(String, String)>,
    /// Through the REST API with B's key instead of B's browser session.
    api: bool,
    expect: Expect,
}

fn get(path: impl Into<String>, expect: Expect) -> Probe {
    Probe {
        method: Method::GET,
        path: path.into(),
        form: Vec::new(),
        api: false,
        expect,
    }
}

fn post(path: impl Into<String>, form: &[(&str, &str)], expect: Expect) -> Probe {
    Probe {
        method: Method::POST,
        path: path.into(),
        form: form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        api: false,
        expect,
    }
}

fn api(method: Method, path: impl Into<String>, expect: Expect) -> Probe {
    Probe {
        method,
        path: path.into(),
        form: vec![("body".into(), "from B".into())],
        api: true,
        expect,
    }
}

/// Tenant A's data, the words that must never reach B, and its ids.
struct TenantA {
    invite: String,
    phone: String,
    text: String,
    number: String,
    conversation: String,
    message: String,
    api_key: String,
    number_id: String,
    membership: String,
    tenant: String,
}

/// Every row of tenant A, printed: equal before and after means nothing of A was touched.
async fn snapshot(t: &TestApp) -> String {
    let a = t.tenant.tenant_id;
    let db = &t.db.read;
    format!(
        "{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
        tenant::Entity::find_by_id(a).one(db).await.unwrap(),
        contact::Entity::find()
            .filter(contact::Column::TenantId.eq(a))
            .order_by_asc(contact::Column::Id)
            .all(db)
            .await
            .unwrap(),
        conversation::Entity::find()
            .filter(conversation::Column::TenantId.eq(a))
            .order_by_asc(conversation::Column::Id)
            .all(db)
            .await
            .unwrap(),
        message::Entity::find()
            .filter(message::Column::TenantId.eq(a))
            .order_by_asc(message::Column::Id)
            .all(db)
            .await
            .unwrap(),
        api_key::Entity::find()
            .filter(api_key::Column::TenantId.eq(a))
            .order_by_asc(api_key::Column::Id)
            .all(db)
            .await
            .unwrap(),
        phone_number::Entity::find()
            .filter(phone_number::Column::TenantId.eq(a))
            .order_by_asc(phone_number::Column::Id)
            .all(db)
            .await
            .unwrap(),
        membership::Entity::find()
            .filter(membership::Column::TenantId.eq(a))
            .order_by_asc(membership::Column::Id)
            .all(db)
            .await
            .unwrap(),
        invite::Entity::find()
            .filter(invite::Column::TenantId.eq(a))
            .order_by_asc(invite::Column::Id)
            .all(db)
            .await
            .unwrap(),
    )
}

async fn tenant_a(t: &TestApp) -> TenantA {
    let phone = "+17135550199";
    let text = "isolation-marker: the gate code is 4417";
    t.text_in(phone, text).await;
    t.wait_for_sends(2).await;
    // Settle: the bot's replies are accepted before the snapshot is taken.
    t.wait_messages(t.tenant.tenant_id, |m| {
        m.iter().filter(|m| m.source == Source::Bot).count() == 2
            && m.iter()
                .all(|m| m.provider_sid.is_some() || m.source == Source::Customer)
    })
    .await;
    let (_, _) = t.user(t.tenant.tenant_id, Role::Agent).await;
    // A pending invite of A's.
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    owner
        .post_form(
            "/settings/invites",
            &[("email", "a-invitee@example.com"), ("role", "agent")],
        )
        .await;
    let db = &t.db.read;
    let a = t.tenant.tenant_id;
    let m = message::Entity::find()
        .filter(message::Column::TenantId.eq(a))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let key = api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(a))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let number = phone_number::Entity::find()
        .filter(phone_number::Column::TenantId.eq(a))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let member = membership::Entity::find()
        .filter(membership::Column::TenantId.eq(a))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let invite = invite::Entity::find()
        .filter(invite::Column::TenantId.eq(a))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    TenantA {
        invite: invite.id.to_string(),
        phone: phone.into(),
        text: text.into(),
        number: t.tenant.number.clone(),
        conversation: m.conversation_id.to_string(),
        message: m.id.to_string(),
        api_key: key.id.to_string(),
        number_id: number.id.to_string(),
        membership: member.id.to_string(),
        tenant: a.to_string(),
    }
}

/// The probes of each route path. Every path of the router must be a key.
fn probes(a: &TenantA) -> BTreeMap<&'static str, Vec<Probe>> {
    use Expect::*;
    let enc = |s: &str| s.replace('+', "%2B");
    let c = &a.conversation;
    let mut m: BTreeMap<&'static str, Vec<Probe>> = BTreeMap::new();
    m.insert("/", vec![get("/", NoLeak)]);
    m.insert(
        "/login",
        vec![
            get("/login", NoLeak),
            post(
                "/login",
                &[("email", "x@example.com"), ("password", "nope")],
                NoLeak,
            ),
        ],
    );
    m.insert("/signup", vec![get("/signup", NoLeak)]);
    m.insert("/onboarding", vec![get("/onboarding", NoLeak)]);
    // Sign-out ends B's session: probed last, by the sweep itself.
    m.insert("/logout", vec![]);
    m.insert("/auth/oidc/start", vec![get("/auth/oidc/start", NoLeak)]);
    m.insert(
        "/auth/oidc/callback",
        vec![get("/auth/oidc/callback?code=x&state=y", NoLeak)],
    );
    let dead = "0123456789abcdef0123456789abcdef";
    m.insert(
        "/invite/:token",
        vec![get(format!("/invite/{dead}"), NotFound)],
    );
    m.insert(
        "/invite/:token/accept",
        vec![post(format!("/invite/{dead}/accept"), &[], NotFound)],
    );
    m.insert(
        "/verify-email/:token",
        vec![
            get(format!("/verify-email/{dead}"), NoLeak),
            post(format!("/verify-email/{dead}"), &[], NotFound),
        ],
    );
    m.insert(
        "/password/forgot",
        vec![
            get("/password/forgot", NoLeak),
            post(
                "/password/forgot",
                &[("email", "a-invitee@example.com")],
                NoLeak,
            ),
        ],
    );
    m.insert(
        "/password/reset/:token",
        vec![
            get(format!("/password/reset/{dead}"), NotFound),
            post(
                format!("/password/reset/{dead}"),
                &[("password", "0123456789ab")],
                NotFound,
            ),
        ],
    );
    m.insert("/simulator/mail", vec![get("/simulator/mail", NoLeak)]);
    m.insert(
        "/settings/invites",
        vec![post(
            "/settings/invites",
            &[("email", "b-invitee@example.com"), ("role", "agent")],
            NoLeak,
        )],
    );
    m.insert(
        "/settings/invites/:id/revoke",
        vec![post(
            format!("/settings/invites/{}/revoke", a.invite),
            &[],
            NotFound,
        )],
    );
    m.insert(
        "/activity/:id",
        vec![get(format!("/activity/{}", a.message), NotFound)],
    );
    m.insert("/agency", vec![get("/agency", NoLeak)]);
    m.insert(
        "/agency/sub-accounts",
        vec![post(
            "/agency/sub-accounts",
            &[("business_name", "X"), ("time_zone", "UTC")],
            NoLeak,
        )],
    );
    m.insert(
        "/switch",
        vec![post("/switch", &[("tenant", &a.tenant)], NotFound)],
    );
    m.insert(
        "/search",
        vec![
            get("/search?q=gate+code", NoLeak),
            // Part of A's contact's phone (the page echoes the query back).
            get(format!("/search?q={}", &a.phone[5..]), NoLeak),
        ],
    );
    m.insert("/settings", vec![get("/settings", NoLeak)]);
    m.insert(
        "/settings/profile",
        vec![post(
            "/settings/profile",
            &[("business_name", "Bravo Clinic"), ("time_zone", "UTC")],
            NoLeak,
        )],
    );
    m.insert(
        "/settings/twilio",
        vec![post(
            "/settings/twilio",
            &[("account_sid", "AC123"), ("auth_token", "")],
            NoLeak,
        )],
    );
    m.insert(
        "/settings/twilio/test",
        vec![post("/settings/twilio/test", &[], NoLeak)],
    );
    m.insert(
        "/settings/twilio/disconnect",
        vec![post("/settings/twilio/disconnect", &[], NoLeak)],
    );
    m.insert(
        "/settings/numbers",
        vec![post("/settings/numbers", &[("e164", &a.number)], NoLeak)],
    );
    m.insert(
        "/settings/numbers/:id/remove",
        vec![post(
            format!("/settings/numbers/{}/remove", a.number_id),
            &[],
            NotFound,
        )],
    );
    m.insert(
        "/settings/api-keys",
        vec![post("/settings/api-keys", &[("name", "b")], NoLeak)],
    );
    m.insert(
        "/settings/api-keys/:id/revoke",
        vec![post(
            format!("/settings/api-keys/{}/revoke", a.api_key),
            &[],
            NotFound,
        )],
    );
    m.insert(
        "/settings/members/:id",
        vec![
            post(
                format!("/settings/members/{}", a.membership),
                &[("role", "remove")],
                NotFound,
            ),
            post(
                format!("/settings/members/{}", a.membership),
                &[("role", "admin")],
                NotFound,
            ),
        ],
    );
    m.insert(
        "/conversations",
        vec![
            get("/conversations", NoLeak),
            get(format!("/conversations?c={c}"), NotFound),
        ],
    );
    m.insert(
        "/conversations/list",
        vec![get(format!("/conversations/list?c={c}"), NoLeak)],
    );
    m.insert(
        "/conversations/:id/messages",
        vec![post(
            format!("/conversations/{c}/messages"),
            &[("body", "from B")],
            NotFound,
        )],
    );
    m.insert(
        "/conversations/:id/messages/:mid",
        vec![get(
            format!("/conversations/{c}/messages/{}", a.message),
            NotFound,
        )],
    );
    m.insert(
        "/conversations/:id/messages/:mid/retry",
        vec![post(
            format!("/conversations/{c}/messages/{}/retry", a.message),
            &[],
            NotFound,
        )],
    );
    m.insert(
        "/conversations/:id/read",
        vec![post(format!("/conversations/{c}/read"), &[], NotFound)],
    );
    m.insert(
        "/conversations/:id/bot",
        vec![
            post(
                format!("/conversations/{c}/bot"),
                &[("paused", "true")],
                NotFound,
            ),
            post(
                format!("/conversations/{c}/bot"),
                &[("paused", "false")],
                NotFound,
            ),
        ],
    );
    m.insert("/events", vec![get("/events", Stream)]);
    m.insert(
        "/simulator",
        vec![get(
            format!(
                "/simulator?number={}&phone={}",
                enc(&a.number),
                enc(&a.phone)
            ),
            NoLeak,
        )],
    );
    m.insert(
        "/simulator/thread",
        vec![get(
            format!(
                "/simulator/thread?number={}&phone={}",
                enc(&a.number),
                enc(&a.phone)
            ),
            NotFound,
        )],
    );
    m.insert(
        "/simulator/send",
        vec![post(
            "/simulator/send",
            &[("to", &a.number), ("from", &a.phone), ("body", "x")],
            NotFound,
        )],
    );
    m.insert(
        "/simulator/events",
        vec![get(
            format!("/simulator/events?number={}", enc(&a.number)),
            NotFound,
        )],
    );
    for p in [
        "/static/app.css",
        "/static/app.js",
        "/static/favicon.svg",
        "/favicon.ico",
    ] {
        m.insert(p, vec![get(p, NoLeak)]);
    }
    m.insert(
        "/webhooks/twilio/sms",
        vec![post(
            "/webhooks/twilio/sms",
            &[("To", &a.number), ("From", &a.phone), ("Body", "x")],
            NoLeak,
        )],
    );
    m.insert(
        "/webhooks/twilio/status",
        vec![post(
            "/webhooks/twilio/status",
            &[("MessageSid", "SMx"), ("MessageStatus", "failed")],
            NoLeak,
        )],
    );
    m.insert(
        "/api/v1",
        vec![
            api(Method::GET, "/conversations", NoLeak),
            api(
                Method::GET,
                format!("/conversations/{c}/messages"),
                NotFound,
            ),
            api(
                Method::POST,
                format!("/conversations/{c}/messages"),
                NotFound,
            ),
            api(
                Method::POST,
                format!("/conversations/{c}/messages/{}/retry", a.message),
                NotFound,
            ),
        ],
    );
    for p in [
        "/api/openapi.json",
        "/api/docs",
        "/health",
        "/ready",
        "/metrics",
    ] {
        m.insert(p, vec![get(p, NoLeak)]);
    }
    m
}

/// The REST API's operations covered by the `/api/v1` probes, as "METHOD /path".
const API_OPERATIONS: &[&str] = &[
    "GET /conversations",
    "GET /conversations/{id}/messages",
    "POST /conversations/{id}/messages",
    "POST /conversations/{id}/messages/{message_id}/retry",
];

async fn send(t: &TestApp, b: &mut Browser, key: &str, p: &Probe) -> reqwest::Response {
    if p.api {
        let req = t.api(p.method.clone(), &p.path, key);
        return if p.method == Method::POST {
            req.json(&serde_json::json!({ "body": "from B" }))
        } else {
            req
        }
        .send()
        .await
        .unwrap();
    }
    if p.method == Method::POST {
        let form: Vec<(&str, &str)> = p
            .form
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        b.post_form(&p.path, &form).await
    } else {
        b.get(&p.path).await
    }
}

#[tokio::test]
async fn every_route_keeps_tenant_a_out_of_tenant_bs_reach() {
    let t = spawn_app().await;
    let a = tenant_a(&t).await;
    let bravo = create_tenant(&t.app, "Bravo Clinic", "+14155550111", BotKind::Qualify).await;
    let (mut b, _, _) = t.member(bravo.tenant_id, Role::Owner).await;
    b.page("/").await;

    // Every route of the router, and every REST operation, is in the sweep.
    let table = probes(&a);
    let missing: Vec<_> = switchboard::route_list(&t.app)
        .into_iter()
        .filter(|p| !table.contains_key(p))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from the isolation sweep: {missing:?}"
    );
    let spec: serde_json::Value = t
        .http
        .get(format!("{}/api/openapi.json", t.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut operations = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    let uncovered: Vec<_> = operations
        .iter()
        .filter(|o| !API_OPERATIONS.contains(&o.as_str()))
        .collect();
    assert!(
        uncovered.is_empty(),
        "REST operations missing from the sweep: {uncovered:?}"
    );

    let before = snapshot(&t).await;
    let leaks = [
        a.text.as_str(),
        a.phone.as_str(),
        a.conversation.as_str(),
        a.message.as_str(),
    ];
    let mut streams = Vec::new();
    for (route, list) in &table {
        for p in list {
            if p.expect == Expect::Stream {
                streams.push(p);
                continue;
            }
            let resp = send(&t, &mut b, &bravo.api_key, p).await;
            let status = resp.status();
            let what = format!("{} {} ({route})", p.method, p.path);
            if p.expect == Expect::NotFound {
                assert_eq!(status, StatusCode::NOT_FOUND, "{what}");
            } else {
                assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}");
            }
            let body = resp.text().await.unwrap();
            for leak in leaks {
                assert!(!body.contains(leak), "{what} answered with A's {leak}");
            }
            assert!(
                snapshot(&t).await == before,
                "{what} touched tenant A's rows"
            );
        }
    }

    // Live streams: B listens while A gets a text; nothing of it may reach B.
    for p in streams {
        let mut resp = send(&t, &mut b, &bravo.api_key, p).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", p.path);
        t.text_in("+17135550198", "isolation-marker: second text")
            .await;
        let mut seen = String::new();
        let _ = tokio::time::timeout(Duration::from_millis(800), async {
            while let Ok(Some(chunk)) = resp.chunk().await {
                seen.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await;
        assert!(
            !seen.contains("isolation-marker") && !seen.contains("message_created"),
            "{}: {seen}",
            p.path
        );
    }

    let resp = b.post_form("/logout", &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}
