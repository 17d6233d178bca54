//! OIDC sign-in against a provider faked at the HTTP boundary, whose ID tokens the tests write:
//! the code flow with PKCE S256, and a tampered state, nonce, issuer, audience or expiry each
//! refused with nobody signed in. Account linking by verified email needs the password.

use base64::Engine;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use sha2::{Digest, Sha256};
use switchboard_domain::accounts::Role;
use switchboard_entity::{identity, user};
use switchboard_testkit::idp::{CLIENT_ID, CLIENT_SECRET, FakeIdp};
use switchboard_testkit::{Browser, Options, PASSWORD, TestApp, spawn_app, spawn_app_with};

async fn app_with(idp: &FakeIdp) -> TestApp {
    spawn_app_with(Options {
        settings: idp.settings(),
        ..Default::default()
    })
    .await
}

/// The provider's authorization request our app redirected to, as (name, value) pairs.
struct Started {
    params: Vec<(String, String)>,
}

impl Started {
    fn get(&self, name: &str) -> &str {
        &self
            .params
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("{name} in the authorization URL"))
            .1
    }
}

async fn start(b: &Browser, idp: &FakeIdp) -> Started {
    let resp = b.get("/auth/oidc/start?next=%2Fsettings").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{location}"
    );
    let url = url::Url::parse(&location).unwrap();
    Started {
        params: url.query_pairs().into_owned().collect(),
    }
}

async fn users(t: &TestApp) -> u64 {
    user::Entity::find().count(&t.db.read).await.unwrap()
}

async fn sessions(t: &TestApp) -> u64 {
    t.stored_sessions().await.len() as u64
}

#[tokio::test]
async fn the_code_flow_with_pkce_signs_a_new_user_in() {
    let idp = FakeIdp::start().await;
    let t = app_with(&idp).await;
    let mut b = t.browser();
    assert!(
        b.page("/login").await.contains("/auth/oidc/start"),
        "the button is shown"
    );
    let s = start(&b, &idp).await;
    assert_eq!(s.get("response_type"), "code");
    assert_eq!(s.get("client_id"), CLIENT_ID);
    assert_eq!(s.get("code_challenge_method"), "S256");
    assert_eq!(
        s.get("redirect_uri"),
        format!("{}/auth/oidc/callback", t.address)
    );
    assert!(s.get("scope").split(' ').any(|x| x == "openid"));
    assert!(s.get("state").len() >= 16 && s.get("nonce").len() >= 16);

    idp.answer(&idp.claims(s.get("nonce"), "alice-1", "Alice@Example.com"))
        .await;
    let resp = b
        .get(&format!(
            "/auth/oidc/callback?code=the-code&state={}",
            s.get("state")
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/settings");

    // The token request carried the code, our credentials and the PKCE verifier whose S256
    // is the challenge we sent.
    let token_req = idp
        .server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == "/token")
        .expect("a token request");
    let form = switchboard_testkit::url_decode_form(&token_req.body);
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(field("grant_type").as_deref(), Some("authorization_code"));
    assert_eq!(field("code").as_deref(), Some("the-code"));
    let verifier = field("code_verifier").expect("PKCE verifier");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    assert_eq!(challenge, s.get("code_challenge"));
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    assert_eq!(token_req.headers["authorization"], format!("Basic {basic}"));

    // A new account, identified by (iss, sub), with the verified email; onboarding next.
    let u = user::Entity::find()
        .filter(user::Column::Email.eq("alice@example.com"))
        .one(&t.db.read)
        .await
        .unwrap()
        .expect("the user");
    assert!(u.password_hash.is_none() && u.email_verified_at.is_some());
    let id = identity::Entity::find_by_id((idp.issuer.clone(), "alice-1".to_string()))
        .one(&t.db.read)
        .await
        .unwrap()
        .expect("the identity");
    assert_eq!(id.user_id, u.id);
    assert_eq!(b.get("/").await.headers()["location"], "/onboarding");

    // The callback is single-use: replaying it signs nobody in.
    let before = sessions(&t).await;
    let mut replay = t.browser();
    replay.page("/login").await;
    let resp = replay
        .get(&format!(
            "/auth/oidc/callback?code=the-code&state={}",
            s.get("state")
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sessions(&t).await, before);
}

#[tokio::test]
async fn a_tampered_state_nonce_issuer_audience_or_expiry_is_refused() {
    let idp = FakeIdp::start().await;
    let t = app_with(&idp).await;
    let cases = ["state", "nonce", "issuer", "audience", "expiry"];
    for what in cases {
        let b = t.browser();
        let s = start(&b, &idp).await;
        let mut claims = idp.claims(s.get("nonce"), what, &format!("{what}@example.com"));
        match what {
            "nonce" => claims.nonce = "another-nonce".into(),
            "issuer" => claims.issuer = "https://evil.example".into(),
            "audience" => claims.audience = "someone-else".into(),
            "expiry" => claims.expires_in = -60,
            _ => {}
        }
        idp.answer(&claims).await;
        let state = if what == "state" {
            "forged-state-value".to_string()
        } else {
            s.get("state").to_string()
        };
        let resp = b
            .get(&format!("/auth/oidc/callback?code=c&state={state}"))
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{what}");
        assert!(resp.headers().get_all("set-cookie").iter().all(|c| {
            !c.to_str().unwrap().starts_with("sb_session=")
                || c.to_str().unwrap().contains("Max-Age=0")
        }));
        assert_eq!(users(&t).await, 0, "{what}: nobody was created");
        assert_eq!(sessions(&t).await, 0, "{what}: nobody signed in");
    }
    // A callback in a browser that never started a flow.
    let resp = t
        .browser()
        .get("/auth/oidc/callback?code=c&state=whatever")
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // The provider's own refusal.
    let b = t.browser();
    let s = start(&b, &idp).await;
    let resp = b
        .get(&format!(
            "/auth/oidc/callback?error=access_denied&state={}",
            s.get("state")
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("access_denied"));
    assert_eq!(sessions(&t).await, 0);
}

#[tokio::test]
async fn a_verified_email_links_to_a_local_account_only_after_its_password_sign_in() {
    let idp = FakeIdp::start().await;
    let t = app_with(&idp).await;
    let (owner_id, email) = t.user(t.tenant.tenant_id, Role::Owner).await;

    // Unverified at the provider: refused outright.
    let b = t.browser();
    let s = start(&b, &idp).await;
    let mut claims = idp.claims(s.get("nonce"), "bob-1", &email);
    claims.email_verified = Some(false);
    idp.answer(&claims).await;
    let resp = b
        .get(&format!(
            "/auth/oidc/callback?code=c&state={}",
            s.get("state")
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sessions(&t).await, 0);

    // Verified: not signed in, but asked for the account's password.
    let mut b = t.browser();
    let s = start(&b, &idp).await;
    idp.answer(&idp.claims(s.get("nonce"), "bob-1", &email))
        .await;
    let resp = b
        .get(&format!(
            "/auth/oidc/callback?code=c&state={}",
            s.get("state")
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/login?link=1");
    assert_eq!(sessions(&t).await, 0, "the email alone signs nobody in");
    let page = b.page("/login?link=1").await;
    assert!(page.contains("already exists") && page.contains(&email));
    assert_eq!(identity::Entity::find().count(&t.db.read).await.unwrap(), 0);
    let resp = b
        .post_form("/login", &[("email", &email), ("password", PASSWORD)])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let linked = identity::Entity::find_by_id((idp.issuer.clone(), "bob-1".to_string()))
        .one(&t.db.read)
        .await
        .unwrap()
        .expect("linked after the password sign-in");
    assert_eq!(linked.user_id, owner_id);
    // The provider verified the address, the password proved the account: verified now, so
    // a later password reset keeps this sign-in.
    let owner = user::Entity::find_by_id(owner_id)
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert!(owner.email_verified_at.is_some());

    // From now on the provider signs this account in directly.
    let other = t.browser();
    let s = start(&other, &idp).await;
    idp.answer(&idp.claims(s.get("nonce"), "bob-1", &email))
        .await;
    let resp = other
        .get(&format!(
            "/auth/oidc/callback?code=c&state={}",
            s.get("state")
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/settings");
    assert_eq!(other.get("/settings").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_oidc_settings_the_button_is_hidden_and_the_routes_are_404() {
    let t = spawn_app().await;
    let mut b = t.browser();
    let page = b.page("/login").await;
    assert!(!page.contains("/auth/oidc/start"));
    assert_eq!(
        b.get("/auth/oidc/start").await.status(),
        StatusCode::NOT_FOUND
    );
}

/// A provider that has not verified an address still gets an account made for it (there is
/// no other account with that address), but that sign-in does not survive the mailbox's owner
/// proving the address: a password reset removes the identities made before, so whoever
/// claimed the address at the provider cannot sign in to the account the owner now uses.
#[tokio::test]
async fn a_password_reset_removes_sign_ins_made_from_an_unverified_address() {
    let idp = FakeIdp::start().await;
    let t = app_with(&idp).await;
    let email = "victim@example.com";
    let claim = async |sub: &str| {
        let b = t.browser();
        let s = start(&b, &idp).await;
        let mut claims = idp.claims(s.get("nonce"), sub, email);
        claims.email_verified = Some(false);
        idp.answer(&claims).await;
        b.get(&format!(
            "/auth/oidc/callback?code=c&state={}",
            s.get("state")
        ))
        .await
        .status()
    };
    assert_eq!(claim("mallory-1").await, StatusCode::SEE_OTHER, "signed in");
    let u = user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(&t.db.read)
        .await
        .unwrap()
        .expect("an account for the address");
    assert!(u.email_verified_at.is_none());

    // The mailbox's owner resets the password through the mailed link.
    let mut owner = t.browser();
    owner.page("/password/forgot").await;
    owner
        .post_form("/password/forgot", &[("email", email)])
        .await;
    let link = crate::mail::mailed_link(&t, email, "/password/reset/").await;
    owner.page(&link).await;
    let resp = owner
        .post_form(&link, &[("password", "the owner's own passphrase")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    assert_eq!(
        identity::Entity::find()
            .filter(identity::Column::UserId.eq(u.id))
            .count(&t.db.read)
            .await
            .unwrap(),
        0
    );
    assert_eq!(claim("mallory-1").await, StatusCode::BAD_REQUEST);
    assert!(t.sessions_of(u.id).await.is_empty());
}
