//! Mailed links: member invites, email verification and password reset, through the
//! simulator mailbox — and through Resend (faked at the HTTP boundary) when configured.

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use switchboard_domain::accounts::Role;
use switchboard_entity::{email_token, invite, membership, user};
use switchboard_testkit::wiremock::matchers::{header, method, path};
use switchboard_testkit::wiremock::{Mock, MockServer, ResponseTemplate};
use switchboard_testkit::{Options, PASSWORD, TestApp, spawn_app, spawn_app_with};

/// The path of the newest mailed link to `to` that starts with `prefix` (e.g. "/invite/").
pub(crate) async fn mailed_link(t: &TestApp, to: &str, prefix: &str) -> String {
    let mails = switchboard_services::mail::mailbox(&t.app).await.unwrap();
    let mail = mails
        .iter()
        .find(|m| m.to_email == to && m.body_text.contains(prefix))
        .unwrap_or_else(|| panic!("a mail to {to} with {prefix}: {mails:?}"));
    let at = mail
        .body_text
        .find(&format!("{}{prefix}", t.address))
        .unwrap()
        + t.address.len();
    mail.body_text[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn an_invite_brings_a_new_person_into_the_business_with_its_role() {
    let t = spawn_app().await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let resp = owner
        .post_form(
            "/settings/invites",
            &[("email", "New.Agent@Example.com"), ("role", "agent")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(
        owner
            .page("/settings")
            .await
            .contains("new.agent@example.com")
    );
    let link = mailed_link(&t, "new.agent@example.com", "/invite/").await;
    let row = invite::Entity::find()
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert!(
        !link.contains(&row.token_hash),
        "the link carries the token, the row its hash"
    );

    // A newcomer: the page offers sign-up with the invited address, then comes back.
    let mut newcomer = t.browser();
    let page = newcomer.page(&link).await;
    assert!(page.contains("Acme Plumbing") && page.contains("Create one with"));
    let signup = format!(
        "/signup?next={}&email=new.agent%40example.com",
        link.replace('/', "%2F")
    );
    assert!(
        newcomer
            .page(&signup)
            .await
            .contains("new.agent@example.com")
    );
    let resp = newcomer
        .post_form(
            "/signup",
            &[
                ("email", "new.agent@example.com"),
                ("password", PASSWORD),
                ("next", &link),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], link.as_str());
    assert!(
        newcomer
            .page(&link)
            .await
            .contains("Accept and join Acme Plumbing")
    );
    let resp = newcomer.post_form(&format!("{link}/accept"), &[]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let u = user::Entity::find()
        .filter(user::Column::Email.eq("new.agent@example.com"))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    let m = membership::Entity::find()
        .filter(membership::Column::UserId.eq(u.id))
        .one(&t.db.read)
        .await
        .unwrap()
        .expect("a member now");
    assert_eq!((m.tenant_id, m.role), (t.tenant.tenant_id, Role::Agent));
    assert!(newcomer.page("/").await.contains("Acme Plumbing"));
    // Used: the link is dead, and the invite is no longer pending.
    assert_eq!(t.browser().get(&link).await.status(), StatusCode::NOT_FOUND);
    assert!(!owner.page("/settings").await.contains("invited</span>"));
}

#[tokio::test]
async fn only_the_invited_address_accepts_and_links_expire() {
    let t = spawn_app().await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    owner
        .post_form(
            "/settings/invites",
            &[("email", "invited@example.com"), ("role", "admin")],
        )
        .await;
    let link = mailed_link(&t, "invited@example.com", "/invite/").await;
    // Someone else, signed in, cannot use a forwarded link.
    let (mut other, other_id, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    other.page(&link).await;
    let resp = other.post_form(&format!("{link}/accept"), &[]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let m = membership::Entity::find()
        .filter(membership::Column::UserId.eq(other_id))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.role, Role::Agent, "unchanged");
    // Expired: 404.
    invite::Entity::update_many()
        .col_expr(
            invite::Column::ExpiresAt,
            (Utc::now() - Duration::seconds(1)).into(),
        )
        .exec(&t.db.write)
        .await
        .unwrap();
    assert_eq!(t.browser().get(&link).await.status(), StatusCode::NOT_FOUND);

    // Agents do not invite; admins do not invite owners.
    let (mut agent, _, _) = t.member(t.tenant.tenant_id, Role::Agent).await;
    agent.page("/").await;
    let resp = agent
        .post_form(
            "/settings/invites",
            &[("email", "x@example.com"), ("role", "agent")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (mut admin, _, _) = t.member(t.tenant.tenant_id, Role::Admin).await;
    admin.page("/settings").await;
    let resp = admin
        .post_form(
            "/settings/invites",
            &[("email", "boss@example.com"), ("role", "owner")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(invite::Entity::find().count(&t.db.read).await.unwrap(), 1);
}

#[tokio::test]
async fn sign_up_mails_a_verification_link_that_works_once() {
    let t = spawn_app().await;
    let mut b = t.browser();
    b.page("/signup").await;
    b.post_form(
        "/signup",
        &[("email", "verify.me@example.com"), ("password", PASSWORD)],
    )
    .await;
    let link = mailed_link(&t, "verify.me@example.com", "/verify-email/").await;
    let page = b.page(&link).await;
    assert!(page.contains("Confirm my email address"));
    let u = || async {
        user::Entity::find()
            .filter(user::Column::Email.eq("verify.me@example.com"))
            .one(&t.db.read)
            .await
            .unwrap()
            .unwrap()
    };
    assert!(
        u().await.email_verified_at.is_none(),
        "following the link changes nothing"
    );
    let resp = b.post_form(&link, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(u().await.email_verified_at.is_some());
    let resp = b.post_form(&link, &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "once");
    assert_eq!(b.get(&link).await.status(), StatusCode::NOT_FOUND, "used");
}

/// The verification page puts its token into its form's action, and poem decodes `%2F` in a
/// path parameter: a made-up token must not turn the page's button into another form's
/// (here, accepting another business's invite; the CSRF token on the page is genuine).
#[tokio::test]
async fn a_made_up_verification_link_shows_no_button() {
    let t = spawn_app().await;
    let (victim, _, email) = t.member(t.tenant.tenant_id, Role::Agent).await;
    let other = switchboard_testkit::create_tenant(
        &t.app,
        "Rogue Plumbing",
        "+15125550178",
        switchboard_entity::phone_number::BotKind::None,
    )
    .await;
    let (rogue, _) = t.user(other.tenant_id, Role::Owner).await;
    switchboard_services::invites::invite(
        &t.app,
        &switchboard_services::TenantCtx::for_job(other.tenant_id),
        Role::Owner,
        rogue,
        &email,
        Role::Agent,
    )
    .await
    .unwrap();
    let invite = mailed_link(&t, &email, "/invite/").await;
    let token = invite.trim_start_matches("/invite/");
    let crafted = format!("/verify-email/..%2Finvite%2F{token}%2Faccept");
    let resp = victim.get(&crafted).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(!resp.text().await.unwrap().contains("/invite/"));
}

#[tokio::test]
async fn a_password_reset_link_sets_a_new_password_and_ends_every_session() {
    let t = spawn_app().await;
    let (mut signed_in, user_id, email) = t.member(t.tenant.tenant_id, Role::Owner).await;
    let mut b = t.browser();
    b.page("/password/forgot").await;
    // Unknown addresses get the same answer and no mail.
    let resp = b
        .post_form("/password/forgot", &[("email", "nobody@example.com")])
        .await;
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("If an account has this address")
    );
    assert!(
        switchboard_services::mail::mailbox(&t.app)
            .await
            .unwrap()
            .is_empty()
    );
    let resp = b.post_form("/password/forgot", &[("email", &email)]).await;
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("If an account has this address")
    );
    let link = mailed_link(&t, &email, "/password/reset/").await;
    b.page(&link).await;
    let resp = b.post_form(&link, &[("password", "short")]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = b
        .post_form(&link, &[("password", "a brand new passphrase")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/login?reset=1");
    assert!(t.sessions_of(user_id).await.is_empty());
    assert_eq!(signed_in.get("/").await.status(), StatusCode::SEE_OTHER);
    signed_in.page("/login").await;
    let old = signed_in
        .post_form("/login", &[("email", &email), ("password", PASSWORD)])
        .await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let new = signed_in
        .post_form(
            "/login",
            &[("email", &email), ("password", "a brand new passphrase")],
        )
        .await;
    assert_eq!(new.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.get(&link).await.status(), StatusCode::NOT_FOUND, "used");
    // An expired link is dead too.
    b.post_form("/password/forgot", &[("email", &email)]).await;
    email_token::Entity::update_many()
        .col_expr(
            email_token::Column::ExpiresAt,
            (Utc::now() - Duration::seconds(1)).into(),
        )
        .exec(&t.db.write)
        .await
        .unwrap();
    let link = mailed_link(&t, &email, "/password/reset/").await;
    assert_eq!(b.get(&link).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn with_resend_configured_mail_goes_out_and_the_mailbox_is_closed() {
    let resend = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/emails"))
        .and(header("authorization", "Bearer re_test_key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"id": "em_1"})))
        .mount(&resend)
        .await;
    let t = spawn_app_with(Options {
        settings: vec![
            ("RESEND_API_KEY".into(), "re_test_key".into()),
            ("RESEND_API_BASE".into(), resend.uri()),
            (
                "MAIL_FROM".into(),
                "Acme via Switchboard <hello@switchboard.example>".into(),
            ),
        ],
        ..Default::default()
    })
    .await;
    let mut owner = t.owner().await;
    owner.page("/settings").await;
    let resp = owner
        .post_form(
            "/settings/invites",
            &[("email", "friend@example.com"), ("role", "agent")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let sent = resend.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&sent[0].body).unwrap();
    assert_eq!(body["to"], serde_json::json!(["friend@example.com"]));
    assert_eq!(
        body["from"],
        "Acme via Switchboard <hello@switchboard.example>"
    );
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/invite/", t.address))
    );
    assert!(
        switchboard_services::mail::mailbox(&t.app)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        t.browser().get("/simulator/mail").await.status(),
        StatusCode::NOT_FOUND
    );

    // A refusal from Resend is a clear 503, and the invite can be sent again.
    resend.reset().await;
    Mock::given(method("POST"))
        .and(path("/emails"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&resend)
        .await;
    let resp = owner
        .post_form(
            "/settings/invites",
            &[("email", "later@example.com"), ("role", "agent")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    // A reset request gets the same answer whether or not the mail went: a 503 only for an
    // existing account would tell who has one.
    let (_, email) = t.user(t.tenant.tenant_id, Role::Agent).await;
    let mut b = t.browser();
    b.page("/password/forgot").await;
    for address in [email.as_str(), "nobody@example.com"] {
        let resp = b.post_form("/password/forgot", &[("email", address)]).await;
        assert_eq!(resp.status(), StatusCode::OK, "{address}");
        assert!(
            resp.text()
                .await
                .unwrap()
                .contains("If an account has this address")
        );
    }
}

/// Using one reset link ends the others: a link an attacker kept from an earlier request
/// cannot take the account back after the owner reset the password.
#[tokio::test]
async fn a_password_reset_ends_every_other_reset_link() {
    let t = spawn_app().await;
    let (_, email) = t.user(t.tenant.tenant_id, Role::Agent).await;
    let mut b = t.browser();
    b.page("/password/forgot").await;
    b.post_form("/password/forgot", &[("email", &email)]).await;
    let first = mailed_link(&t, &email, "/password/reset/").await;
    b.post_form("/password/forgot", &[("email", &email)]).await;
    let second = mailed_link(&t, &email, "/password/reset/").await;
    assert_ne!(first, second);
    b.page(&second).await;
    let resp = b
        .post_form(&second, &[("password", "the owner's new passphrase")])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(b.get(&first).await.status(), StatusCode::NOT_FOUND);
    let resp = b
        .post_form(&first, &[("password", "the attacker's passphrase")])
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = b
        .post_form(
            "/login",
            &[
                ("email", &email),
                ("password", "the owner's new passphrase"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_simulator_mailbox_shows_mail_on_this_machine() {
    let t = spawn_app().await;
    let mut b = t.browser();
    b.page("/password/forgot").await;
    let (_, email) = t.user(t.tenant.tenant_id, Role::Agent).await;
    b.post_form("/password/forgot", &[("email", &email)]).await;
    let page = b.page("/simulator/mail").await;
    assert!(page.contains("Reset your Switchboard password") && page.contains(&email));
}

/// Behind a reverse proxy on the same machine every client arrives from loopback: the
/// mailbox (live reset links) stays closed when a proxy header is present, or when
/// `APP_URL` is a public address, though the mail is there to show.
#[tokio::test]
async fn the_simulator_mailbox_stays_closed_behind_a_proxy() {
    let t = spawn_app().await;
    let (_, email) = t.user(t.tenant.tenant_id, Role::Agent).await;
    let mut b = t.browser();
    b.page("/password/forgot").await;
    b.post_form("/password/forgot", &[("email", &email)]).await;
    for (name, value) in [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9"),
        ("X-Real-IP", "203.0.113.9"),
    ] {
        let resp = t
            .http
            .get(format!("{}/simulator/mail", t.address))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{name}");
        assert!(!resp.text().await.unwrap().contains(&email), "{name}");
    }
    assert_eq!(
        t.browser().get("/simulator/mail").await.status(),
        StatusCode::OK
    );

    let public = spawn_app_with(Options {
        settings: vec![("APP_URL".into(), "http://switchboard.example".into())],
        ..Options::default()
    })
    .await;
    let (_, email) = public.user(public.tenant.tenant_id, Role::Agent).await;
    let mut b = public.browser();
    b.page("/password/forgot").await;
    b.post_form("/password/forgot", &[("email", &email)]).await;
    assert!(
        !switchboard_services::mail::mailbox(&public.app)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        public.browser().get("/simulator/mail").await.status(),
        StatusCode::NOT_FOUND
    );
}
