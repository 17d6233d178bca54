//! OIDC sign-in against a real provider: panva's oidc-provider, started by `.ci/oidc/run` on
//! http://127.0.0.1:9400. Ignored by plain `cargo test`, which has no Node; the same checks
//! against a provider faked at the HTTP boundary are in `tests/e2e/oidc.rs`.

use reqwest::StatusCode;
use sea_orm::{EntityTrait, PaginatorTrait};
use switchboard_entity::{identity, session, user};
use switchboard_testkit::{Browser, Options, TestApp, spawn_app_with};

/// The issuer `.ci/oidc/start` serves (its default port).
const ISSUER: &str = "http://127.0.0.1:9400";

async fn app() -> TestApp {
    spawn_app_with(Options {
        settings: vec![
            ("OIDC_ISSUER_URL".into(), ISSUER.into()),
            ("OIDC_CLIENT_ID".into(), "switchboard-test".into()),
            (
                "OIDC_CLIENT_SECRET".into(),
                "switchboard-test-secret".into(),
            ),
        ],
        ..Default::default()
    })
    .await
}

/// Follows redirects by hand (the browser's cookie jar holds the provider's cookies too)
/// until one points back at our callback, whose URL is returned.
async fn follow_to_callback(b: &Browser, mut url: String, form: Option<&[(&str, &str)]>) -> String {
    let mut pending_form = form;
    for _ in 0..10 {
        let resp = match pending_form.take() {
            Some(fields) => b.client.post(&url).form(fields).send().await.unwrap(),
            None => b.client.get(&url).send().await.unwrap(),
        };
        let status = resp.status();
        if status == StatusCode::OK {
            // The provider's sign-in form: post the user to the same URL.
            return url;
        }
        assert!(status.is_redirection(), "{url}: {status}");
        let location = resp.headers()["location"].to_str().unwrap();
        let next = url::Url::parse(&url)
            .unwrap()
            .join(location)
            .unwrap()
            .to_string();
        if next.contains("/auth/oidc/callback") {
            return next;
        }
        url = next;
    }
    panic!("too many redirects");
}

/// Starts sign-in in `b`, optionally rewriting the authorization URL, signs in at the
/// provider as `sub`, and returns our callback URL (not yet visited).
async fn sign_in_at_provider(
    b: &Browser,
    sub: &str,
    email: &str,
    rewrite: impl Fn(String) -> String,
) -> String {
    let resp = b.get("/auth/oidc/start?next=%2F").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let auth = rewrite(resp.headers()["location"].to_str().unwrap().to_string());
    assert!(auth.starts_with(ISSUER), "{auth}");
    let form_url = follow_to_callback(b, auth, None).await;
    follow_to_callback(b, form_url, Some(&[("sub", sub), ("email", email)])).await
}

async fn sessions(t: &TestApp) -> u64 {
    session::Entity::find().count(&t.db.read).await.unwrap()
}

#[tokio::test]
#[ignore = "needs the OIDC provider of .ci/oidc/run"]
async fn a_real_provider_signs_a_new_user_in_with_the_code_flow() {
    let t = app().await;
    let b = t.browser();
    let callback = sign_in_at_provider(&b, "real-alice", "real-alice@example.com", |u| u).await;
    let resp = b.client.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{callback}");
    assert_eq!(resp.headers()["location"], "/");
    let id = identity::Entity::find_by_id((ISSUER.to_string(), "real-alice".to_string()))
        .one(&t.db.read)
        .await
        .unwrap()
        .expect("the identity (iss, sub)");
    let u = user::Entity::find_by_id(id.user_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .expect("the account made for it");
    assert_eq!(u.email, "real-alice@example.com");
    assert!(u.email_verified_at.is_some() && u.password_hash.is_none());
    assert_eq!(sessions(&t).await, 1);
    assert_eq!(b.get("/").await.headers()["location"], "/onboarding");
}

#[tokio::test]
#[ignore = "needs the OIDC provider of .ci/oidc/run"]
async fn a_real_providers_answer_with_a_tampered_state_or_nonce_is_refused() {
    let t = app().await;
    // State: the provider's genuine answer, with another state, in the browser that started.
    let b = t.browser();
    let callback = sign_in_at_provider(&b, "real-state", "real-state@example.com", |u| u).await;
    let url = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                (k, "tampered".into())
            } else {
                (k, v)
            }
        })
        .collect();
    let mut tampered = url.clone();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    let resp = b.client.get(tampered.as_str()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sessions(&t).await, 0);

    // Nonce: the authorization request is sent with another nonce, so the provider's ID
    // token carries a nonce this browser never chose.
    let b = t.browser();
    let callback = sign_in_at_provider(&b, "real-nonce", "real-nonce@example.com", |u| {
        let url = url::Url::parse(&u).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .map(|(k, v)| {
                if k == "nonce" {
                    (k, "attacker-nonce".into())
                } else {
                    (k, v)
                }
            })
            .collect();
        let mut out = url.clone();
        out.query_pairs_mut().clear().extend_pairs(pairs);
        out.to_string()
    })
    .await;
    let resp = b.client.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sessions(&t).await, 0);
    assert_eq!(
        identity::Entity::find().count(&t.db.read).await.unwrap(),
        0,
        "nobody was created"
    );
}
