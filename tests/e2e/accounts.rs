//! Accounts and sessions through the pages: sign-up -> onboarding -> dashboard, sign-in and
//! sign-out, cookie attributes, session fixation, timeouts, CSRF and Origin checks, security
//! headers, disabled users and removed members.

use chrono::Duration;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use switchboard_domain::accounts::Role;
use switchboard_entity::{membership, tenant, user};
use switchboard_testkit::{Options, PASSWORD, SessionTime, spawn_app, spawn_app_with};

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn session_cookie(resp: &reqwest::Response) -> String {
    set_cookies(resp)
        .into_iter()
        .find(|c| c.starts_with("sb_session="))
        .expect("a session cookie")
}

fn location(resp: &reqwest::Response) -> &str {
    resp.headers()["location"].to_str().unwrap()
}

async fn sessions_of(t: &switchboard_testkit::TestApp, user: switchboard_domain::UserId) -> u64 {
    t.sessions_of(user).await.len() as u64
}

#[tokio::test]
async fn sign_up_then_onboarding_then_the_dashboard() {
    let t = spawn_app().await;
    let mut b = t.browser();
    b.page("/signup").await;
    let resp = b
        .post_form(
            "/signup",
            &[
                ("email", "Owner@Rivera-HVAC.example"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/onboarding");
    let cookie = session_cookie(&resp);
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(
        !cookie.contains("Secure") && !cookie.contains("Max-Age"),
        "{cookie}"
    );

    // Without a business, every page leads to onboarding.
    let resp = b.get("/conversations").await;
    assert_eq!(location(&resp), "/onboarding");
    b.page("/onboarding").await;
    let resp = b
        .post_form(
            "/onboarding",
            &[
                ("business_name", "Rivera HVAC"),
                ("time_zone", "Bogus/Zone"),
                ("notify_phone", ""),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("time_zone"));
    let resp = b
        .post_form(
            "/onboarding",
            &[
                ("business_name", "Rivera HVAC"),
                ("time_zone", "America/Denver"),
                ("notify_phone", "+13035550142"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");
    let dashboard = b.page("/").await;
    assert!(dashboard.contains("Rivera HVAC"));
    assert!(dashboard.contains("Active conversations"));
    assert!(dashboard.contains("owner@rivera-hvac.example"));

    let u = user::Entity::find()
        .filter(user::Column::Email.eq("owner@rivera-hvac.example"))
        .one(&t.db.read)
        .await
        .unwrap()
        .expect("the user row, email lower-cased");
    assert!(u.password_hash.unwrap().starts_with("$argon2id$"));
    let m = membership::Entity::find()
        .filter(membership::Column::UserId.eq(u.id))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.role, Role::Owner);
    let biz = tenant::Entity::find_by_id(m.tenant_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(biz.name, "Rivera HVAC");
    assert_eq!(biz.time_zone, "America/Denver");
    assert_eq!(biz.notify_phone.as_deref(), Some("+13035550142"));
}

#[tokio::test]
async fn sign_up_refuses_bad_input_naming_the_field_and_stores_nothing() {
    let t = spawn_app().await;
    let mut b = t.browser();
    b.page("/signup").await;
    let resp = b
        .post_form(
            "/signup",
            &[("email", "not-an-email"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("email:"));
    let resp = b
        .post_form(
            "/signup",
            &[("email", "a@example.com"), ("password", "short")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("password:"));
    assert_eq!(user::Entity::find().count(&t.db.read).await.unwrap(), 0);

    let (_, _, email) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let resp = b
        .post_form("/signup", &[("email", &email), ("password", PASSWORD)])
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(user::Entity::find().count(&t.db.read).await.unwrap(), 1);
}

#[tokio::test]
async fn pages_need_a_session_and_come_back_after_sign_in() {
    let t = spawn_app().await;
    let mut b = t.browser();
    for path in ["/", "/conversations", "/settings", "/events"] {
        let resp = b.get(path).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert!(location(&resp).starts_with("/login?next="), "{path}");
    }
    let (_, _, email) = t.member(t.tenant.tenant_id, Role::Agent).await;
    b.page("/login?next=%2Fconversations").await;
    let resp = b
        .post_form(
            "/login",
            &[
                ("email", &email),
                ("password", "wrong password!"),
                ("next", "/conversations"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.text().await.unwrap().contains("do not match"));
    let resp = b
        .post_form(
            "/login",
            &[
                ("email", &email),
                ("password", PASSWORD),
                ("next", "/conversations"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/conversations");
    b.page("/conversations").await;
}

/// The CSRF seed cookie a fresh visitor gets (`name=value`).
async fn seed_cookie(t: &switchboard_testkit::TestApp) -> String {
    let resp = t
        .http
        .get(format!("{}/login", t.address))
        .send()
        .await
        .unwrap();
    set_cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("sb_csrf="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn sign_in_never_adopts_a_planted_session_id_and_rotates_the_session() {
    let t = spawn_app().await;
    let (user_id, email) = t.user(t.tenant.tenant_id, Role::Admin).await;
    // An attacker planted a session id in the victim's browser (fixation).
    let planted = "0123456789abcdef0123456789abcdef";
    let cookies = format!("{}; sb_session={planted}", seed_cookie(&t).await);
    let page = t
        .http
        .get(format!("{}/login", t.address))
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = switchboard_testkit::csrf_in(&page).unwrap();
    let resp = t
        .http
        .post(format!("{}/login", t.address))
        .header("cookie", &cookies)
        .form(&[
            ("email", email.as_str()),
            ("password", PASSWORD),
            ("csrf", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let issued = session_cookie(&resp);
    let id = issued
        .trim_start_matches("sb_session=")
        .split(';')
        .next()
        .unwrap();
    assert_ne!(id, planted);
    assert_eq!(id.len(), 32, "128-bit id in hex");
    let with_planted = t
        .http
        .get(format!("{}/", t.address))
        .header("cookie", format!("sb_session={planted}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        with_planted.status(),
        StatusCode::SEE_OTHER,
        "the planted id is nobody"
    );

    // Signing in again in the same browser replaces its session; other browsers keep theirs.
    let mut b = t.browser();
    b.sign_in(&email, PASSWORD).await;
    assert_eq!(
        sessions_of(&t, user_id).await,
        2,
        "two browsers, two sessions"
    );
    assert_eq!(
        b.get("/login").await.status(),
        StatusCode::SEE_OTHER,
        "already signed in"
    );
    let resp = b
        .post_form("/login", &[("email", &email), ("password", PASSWORD)])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        sessions_of(&t, user_id).await,
        2,
        "the replaced session ended"
    );
}

#[tokio::test]
async fn sign_out_ends_the_session_on_the_server() {
    let t = spawn_app().await;
    let (mut b, user_id, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let stolen = b
        .client
        .get(format!("{}/", t.address))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), StatusCode::OK);
    assert_eq!(sessions_of(&t, user_id).await, 1);
    let resp = b.post_form("/logout", &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(session_cookie(&resp).contains("Max-Age=0"));
    assert_eq!(sessions_of(&t, user_id).await, 0);
    assert!(t.stored_sessions().await.is_empty());
    assert_eq!(b.get("/").await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn idle_and_absolute_timeouts_end_sessions() {
    let t = spawn_app().await;
    let (b, user_id, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let age = |user_id, which, by| t.age_sessions(user_id, which, by);
    age(user_id, SessionTime::LastSeen, Duration::hours(11)).await;
    assert_eq!(
        b.get("/").await.status(),
        StatusCode::OK,
        "11 h idle is fine"
    );
    age(user_id, SessionTime::LastSeen, Duration::hours(13)).await;
    assert_eq!(b.get("/").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        sessions_of(&t, user_id).await,
        0,
        "an expired session is deleted"
    );

    let (b, user_id, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    age(user_id, SessionTime::Expires, Duration::seconds(1)).await;
    assert_eq!(b.get("/").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(sessions_of(&t, user_id).await, 0);
}

#[tokio::test]
async fn forms_without_the_right_csrf_token_or_from_another_origin_are_403() {
    let t = spawn_app().await;
    let (mut b, _, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    t.text_in("+17135550101", "hello").await;
    let rows = t.wait_messages(t.tenant.tenant_id, |m| !m.is_empty()).await;
    let cid = rows[0].conversation_id;
    let path = format!("/conversations/{cid}/messages");

    let missing = b
        .send_form(reqwest::Method::POST, &path, &[("body", "no token")])
        .await;
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    let wrong = b
        .send_form(
            reqwest::Method::POST,
            &path,
            &[("body", "wrong token"), ("csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    // Another user's valid token does not work in this session.
    let (mut other, _, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let foreign = b
        .send_form(
            reqwest::Method::POST,
            &path,
            &[("body", "other token"), ("csrf", &other.csrf().await)],
        )
        .await;
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let token = b.csrf().await;
    let cross_site = b
        .client
        .post(format!("{}{path}", t.address))
        .header("origin", "https://evil.example")
        .form(&[("body", "cross site"), ("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let fetch_header = b
        .client
        .post(format!("{}/conversations/{cid}/read", t.address))
        .header("x-csrf-token", token.as_str())
        .header("origin", t.address.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_header.status(), StatusCode::NO_CONTENT);
    // A form is held to its size limit with the token in a header too: the form extractor
    // behind the guard would read any body whole.
    let huge = b
        .client
        .post(format!("{}{path}", t.address))
        .header("x-csrf-token", token.as_str())
        .header("origin", t.address.as_str())
        .form(&[("body", "x".repeat(300 * 1024))])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::FORBIDDEN);
    assert!(huge.text().await.unwrap().contains("too large"));
    // Sign-out is a POST with a token too: a GET changes nothing.
    assert_eq!(
        b.get("/logout").await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(b.get("/").await.status(), StatusCode::OK);

    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = t.messages(t.tenant.tenant_id).await;
    assert!(
        after
            .iter()
            .all(|m| m.source != switchboard_domain::message::Source::Manual),
        "no refused form sent anything"
    );

    // With the token, the same form works.
    let ok = b.post_form(&path, &[("body", "with token")]).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let t = spawn_app().await;
    let mut b = t.browser();
    for path in ["/login", "/simulator", "/api/docs", "/health"] {
        let resp = b.get(path).await;
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") || path == "/api/docs",
            "{path}: {csp}"
        );
        if path != "/api/docs" {
            assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        } else {
            assert!(
                csp.contains("'sha256-"),
                "Swagger UI's inline scripts are hashed"
            );
            assert!(!csp.contains("script-src 'self' 'unsafe-inline'"));
        }
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "same-origin");
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS on http"
        );
    }
    let html = b.page("/login").await;
    assert!(!html.contains("<script>"), "no inline script on our pages");
    // Webhooks and the REST API get the headers but no cookie of ours.
    let params = switchboard_testkit::inbound(
        &t.tenant.account_sid,
        "+17135550111",
        &t.tenant.number,
        "hi",
    );
    let api = t
        .api(reqwest::Method::GET, "/conversations", &t.tenant.api_key)
        .send()
        .await
        .unwrap();
    for resp in [t.post_sms(&params).await, api] {
        assert!(resp.status().is_success(), "{}", resp.status());
        assert!(resp.headers().get("set-cookie").is_none());
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }
}

#[tokio::test]
async fn https_deployments_use_host_prefixed_secure_cookies_and_hsts() {
    let t = spawn_app_with(Options {
        settings: vec![("APP_URL".into(), "https://switchboard.example".into())],
        ..Default::default()
    })
    .await;
    let (_, email) = t.user(t.tenant.tenant_id, Role::Owner).await;
    let b = t.browser();
    let login = b.get("/login").await;
    assert!(
        login.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age=")
    );
    let seed = set_cookies(&login)
        .into_iter()
        .find(|c| c.starts_with("__Host-sb_csrf="))
        .expect("the CSRF seed cookie");
    assert!(seed.contains("Secure") && seed.contains("Path=/") && !seed.contains("Domain"));
    let token = switchboard_testkit::csrf_in(&login.text().await.unwrap()).unwrap();
    let seed_value = seed.split(';').next().unwrap().to_string();
    let resp = b
        .client
        .post(format!("{}/login", t.address))
        .header("cookie", seed_value)
        .header("origin", "https://switchboard.example")
        .form(&[
            ("email", email.as_str()),
            ("password", PASSWORD),
            ("csrf", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookies(&resp)
        .into_iter()
        .find(|c| c.starts_with("__Host-sb_session="))
        .expect("a __Host- session cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Domain"));
}

#[tokio::test]
async fn disabling_a_user_or_removing_a_member_ends_access_at_once() {
    let t = spawn_app().await;
    let (mut agent, agent_id, email) = t.member(t.tenant.tenant_id, Role::Agent).await;
    agent.page("/conversations").await;
    switchboard_services::accounts::disable_user(&t.app, agent_id)
        .await
        .unwrap();
    assert_eq!(
        agent.get("/conversations").await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(sessions_of(&t, agent_id).await, 0);
    let mut again = t.browser();
    again.page("/login").await;
    let resp = again
        .post_form("/login", &[("email", &email), ("password", PASSWORD)])
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a disabled user cannot sign in"
    );

    let (mut removed, removed_id, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    removed.page("/conversations").await;
    membership::Entity::delete_many()
        .filter(membership::Column::UserId.eq(removed_id))
        .exec(&t.db.write)
        .await
        .unwrap();
    let resp = removed.get("/conversations").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/onboarding");
    assert_eq!(removed.get("/events").await.status(), StatusCode::SEE_OTHER);
}

/// An open live stream is not a way around signing out or being removed: it ends within
/// `SESSION_CHECK_SECS` (15 s), while a stream whose session stays valid keeps going.
#[tokio::test]
async fn live_streams_end_when_their_session_does() {
    let t = spawn_app().await;
    let (mut leaving, _, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let (removed, removed_id, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let (staying, _, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let mut streams = Vec::new();
    for b in [&leaving, &removed, &staying] {
        let resp = b.get("/events").await;
        assert_eq!(resp.status(), StatusCode::OK);
        streams.push(resp);
    }
    assert_eq!(
        leaving.post_form("/logout", &[]).await.status(),
        StatusCode::SEE_OTHER
    );
    membership::Entity::delete_many()
        .filter(membership::Column::UserId.eq(removed_id))
        .exec(&t.db.write)
        .await
        .unwrap();

    /// Reads `resp` to its end; `None` when it is still open after `secs`.
    async fn ended_within(resp: &mut reqwest::Response, secs: u64) -> Option<()> {
        let read = async { while resp.chunk().await.unwrap().is_some() {} };
        tokio::time::timeout(std::time::Duration::from_secs(secs), read)
            .await
            .ok()
    }
    let mut staying_stream = streams.pop().unwrap();
    let [mut leaving_stream, mut removed_stream] = <[_; 2]>::try_from(streams).unwrap();
    let (signed_out, removed_stream) = tokio::join!(
        ended_within(&mut leaving_stream, 25),
        ended_within(&mut removed_stream, 25)
    );
    assert!(
        signed_out.is_some(),
        "the signed-out session's stream ended"
    );
    assert!(
        removed_stream.is_some(),
        "the removed member's stream ended"
    );
    assert!(
        ended_within(&mut staying_stream, 1).await.is_none(),
        "a valid session's stream stays open"
    );
    assert_eq!(staying.get("/conversations").await.status(), StatusCode::OK);
    // Events lost on the way (a failed Redis PUBLISH, a dropped pub/sub connection) end the
    // stream at once, so that the page reconnects and reloads what it missed.
    t.app.events.gap();
    assert!(
        ended_within(&mut staying_stream, 2).await.is_some(),
        "a gap ends the stream"
    );
    let resp = staying.get("/events").await;
    assert_eq!(resp.status(), StatusCode::OK, "and a new one starts");
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_account_with_a_clear_message() {
    let t = spawn_app().await;
    let (_, email) = t.user(t.tenant.tenant_id, Role::Owner).await;
    let mut b = t.browser();
    b.page("/login").await;
    for _ in 0..5 {
        let resp = b
            .post_form(
                "/login",
                &[("email", &email), ("password", "guess guess guess")],
            )
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // The sixth attempt is refused before the password is even checked, the right one too.
    let resp = b
        .post_form(
            "/login",
            &[("email", &email.to_uppercase()), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Too many sign-in attempts")
    );
    assert_eq!(
        sessions_of_email(&t, &email).await,
        0,
        "no session was started"
    );
    // Another account from the same address is not locked by it.
    let (_, other) = t.user(t.tenant.tenant_id, Role::Agent).await;
    let resp = b
        .post_form("/login", &[("email", &other), ("password", PASSWORD)])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

/// Behind a reverse proxy every connection comes from the proxy: with `CLIENT_IP_HEADER`
/// the per-address sign-in limit counts each client's own address (20 at once), so one
/// client's attempts do not lock everyone else out.
#[tokio::test]
async fn behind_a_proxy_the_sign_in_limit_counts_each_clients_address() {
    let t = switchboard_testkit::spawn_app_with(switchboard_testkit::Options {
        settings: vec![("CLIENT_IP_HEADER".into(), "Fly-Client-IP".into())],
        ..Default::default()
    })
    .await;
    let attempt = async |ip: &str, n: usize| {
        let mut b = t.browser().with_header("fly-client-ip", ip);
        b.page("/login").await;
        b.post_form(
            "/login",
            &[
                ("email", &format!("guess{n}@example.com")),
                ("password", "guess guess guess"),
            ],
        )
        .await
        .status()
    };
    for n in 0..20 {
        assert_eq!(attempt("203.0.113.7", n).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        attempt("203.0.113.7", 20).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        attempt("198.51.100.4", 21).await,
        StatusCode::UNAUTHORIZED,
        "another client behind the same proxy is not locked out"
    );
}

async fn sessions_of_email(t: &switchboard_testkit::TestApp, email: &str) -> u64 {
    let u = user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    sessions_of(t, u.id).await
}
