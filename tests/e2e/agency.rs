//! Agencies: sign up as an agency, create sub-accounts, switch between them with the tenant
//! kept in the session; other tenants stay out of reach.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use switchboard_domain::accounts::Role;
use switchboard_entity::{api_key, tenant, user};
use switchboard_testkit::{Browser, PASSWORD, TestApp, spawn_app};

async fn tenant_named(t: &TestApp, name: &str) -> tenant::Model {
    tenant::Entity::find()
        .filter(tenant::Column::Name.eq(name))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("tenant {name}"))
}

async fn session_tenant(t: &TestApp, email: &str) -> Option<switchboard_domain::TenantId> {
    let u = user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    t.sessions_of(u.id).await.remove(0).tenant_id
}

/// Signs up `email` as the agency "Northwind Marketing" with first business "Rivera HVAC".
async fn agency_admin(t: &TestApp, email: &str) -> Browser {
    let mut b = t.browser();
    b.page("/signup").await;
    let resp = b
        .post_form("/signup", &[("email", email), ("password", PASSWORD)])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    b.page("/onboarding").await;
    let resp = b
        .post_form(
            "/onboarding",
            &[
                ("business_name", "Rivera HVAC"),
                ("time_zone", "America/Denver"),
                ("agency_name", "Northwind Marketing"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    b
}

#[tokio::test]
async fn an_agency_creates_sub_accounts_and_switches_between_them() {
    let t = spawn_app().await;
    let email = "ops@northwind.example";
    let mut b = agency_admin(&t, email).await;
    let rivera = tenant_named(&t, "Rivera HVAC").await;
    assert!(
        rivera.agency_id.is_some(),
        "the first business is a sub-account"
    );
    let html = b.page("/agency").await;
    assert!(html.contains("Northwind Marketing") && html.contains("Rivera HVAC"));
    // A refused sub-account form comes back with what was typed.
    let resp = b
        .post_form(
            "/agency/sub-accounts",
            &[
                ("business_name", "Lopez Dental"),
                ("time_zone", "Mars/Base"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.unwrap();
    assert!(html.contains("time_zone:") && html.contains(r#"value="Lopez Dental""#));

    let resp = b
        .post_form(
            "/agency/sub-accounts",
            &[
                ("business_name", "Lopez Dental"),
                ("time_zone", "America/Chicago"),
            ],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let lopez = tenant_named(&t, "Lopez Dental").await;
    assert_eq!(lopez.agency_id, rivera.agency_id);
    assert_eq!(
        session_tenant(&t, email).await,
        Some(lopez.id),
        "switched to the new one"
    );
    let dashboard = b.page("/").await;
    assert!(
        dashboard.contains(r#"action="/switch""#),
        "the switcher is shown"
    );
    assert!(dashboard.contains("Lopez Dental") && dashboard.contains("Rivera HVAC"));

    // Work in Lopez Dental as an admin: a key made here is Lopez Dental's, whatever the form
    // says about tenants.
    b.page("/settings").await;
    let resp = b
        .post_form(
            "/settings/api-keys",
            &[("name", "lopez"), ("tenant", &rivera.id.to_string())],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let key = api_key::Entity::find()
        .filter(api_key::Column::Name.eq("lopez"))
        .one(&t.db.read)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key.tenant_id, lopez.id);

    let resp = b
        .post_form("/switch", &[("tenant", &rivera.id.to_string())])
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(session_tenant(&t, email).await, Some(rivera.id));
    assert!(b.page("/settings").await.contains(r#"value="Rivera HVAC""#));

    // A lead alert's link to a conversation of Lopez Dental, opened while working in Rivera
    // HVAC: a button switches, then opens it; the link alone switches nothing.
    let thread = uuid::Uuid::now_v7();
    let html = b
        .page(&format!("/conversations?b={}&c={thread}", lopez.id))
        .await;
    assert!(html.contains("Switch to Lopez Dental"), "{html}");
    assert!(html.contains(&format!(r#"value="/conversations?c={thread}""#)));
    assert_eq!(session_tenant(&t, email).await, Some(rivera.id));
    let next = format!("/conversations?c={thread}");
    let resp = b
        .post_form(
            "/switch",
            &[("tenant", &lopez.id.to_string()), ("next", &next)],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], next.as_str());
    assert_eq!(session_tenant(&t, email).await, Some(lopez.id));
    // Only to a path of ours.
    let resp = b
        .post_form(
            "/switch",
            &[
                ("tenant", &rivera.id.to_string()),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(resp.headers()["location"], "/");
}

#[tokio::test]
async fn nobody_switches_into_a_tenant_they_cannot_work_in() {
    let t = spawn_app().await;
    let email = "ops@northwind.example";
    let mut b = agency_admin(&t, email).await;
    let rivera = tenant_named(&t, "Rivera HVAC").await;
    b.page("/").await;
    // Tenant A (Acme) is not the agency's.
    let resp = b
        .post_form("/switch", &[("tenant", &t.tenant.tenant_id.to_string())])
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        session_tenant(&t, email).await,
        Some(rivera.id),
        "unchanged"
    );

    // A member of Acme is no agency admin: no agency page, no sub-accounts, no switching
    // into the agency's tenants.
    let (mut owner, _, _) = t.member(t.tenant.tenant_id, Role::Owner).await;
    assert_eq!(owner.get("/agency").await.status(), StatusCode::FORBIDDEN);
    let before = tenant::Entity::find().count(&t.db.read).await.unwrap();
    owner.page("/").await;
    let resp = owner
        .post_form(
            "/agency/sub-accounts",
            &[("business_name", "Sneaky"), ("time_zone", "UTC")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        tenant::Entity::find().count(&t.db.read).await.unwrap(),
        before
    );
    let resp = owner
        .post_form("/switch", &[("tenant", &rivera.id.to_string())])
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(!owner.page("/").await.contains("Rivera HVAC"));
    // Nor does a link naming the agency's tenant offer to switch there.
    let resp = owner.get(&format!("/conversations?b={}", rivera.id)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
