//! [`Browser`]: a cookie-keeping HTTP client that uses the pages as a person would — it reads
//! the CSRF token from each page it loads and sends it with its forms.

use reqwest::{Method, Response, StatusCode};
use switchboard_domain::TenantId;
use switchboard_domain::UserId;
use switchboard_domain::accounts::{Email, Password, Role};
use switchboard_services::accounts;

use crate::TestApp;

/// The password of every user the harness creates.
pub const PASSWORD: &str = "correct horse battery staple";

/// One browser: its own cookie jar, no automatic redirects (tests see each 303).
pub struct Browser {
    pub client: reqwest::Client,
    pub address: String,
    csrf: Option<String>,
}

/// The `content` of `<meta name="csrf-token">` in a page, if any.
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find(r#"<meta name="csrf-token" content=""#)?;
    let rest = &html[at + r#"<meta name="csrf-token" content=""#.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

impl Browser {
    pub(crate) fn new(address: &str) -> Self {
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .build()
                .expect("client"),
            address: address.to_string(),
            csrf: None,
        }
    }

    /// The same browser sending `name: value` with every request from now on (e.g. the
    /// client-address header a reverse proxy adds). Cookies start empty.
    #[must_use]
    pub fn with_header(self, name: &'static str, value: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(name, value.parse().expect("header value"));
        Self {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .default_headers(headers)
                .build()
                .expect("client"),
            ..self
        }
    }

    /// `GET path`, as is.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request")
    }

    /// `GET path`, expecting 200; returns the HTML and remembers its CSRF token.
    ///
    /// # Panics
    /// On any other status.
    pub async fn page(&mut self, path: &str) -> String {
        let resp = self.get(path).await;
        let status = resp.status();
        let html = resp.text().await.expect("body");
        assert_eq!(status, StatusCode::OK, "GET {path}: {html}");
        if let Some(token) = csrf_in(&html) {
            self.csrf = Some(token);
        }
        html
    }

    /// The CSRF token of the last page loaded (loading `/login` first when none was).
    pub async fn csrf(&mut self) -> String {
        if self.csrf.is_none() {
            let html = self.get("/login").await.text().await.expect("body");
            self.csrf = csrf_in(&html);
        }
        self.csrf.clone().expect("a page with a CSRF token")
    }

    /// POSTs a form with the CSRF token of the last page loaded.
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Response {
        let token = self.csrf().await;
        let mut fields: Vec<(&str, &str)> = fields.to_vec();
        fields.push(("csrf", &token));
        self.send_form(Method::POST, path, &fields).await
    }

    /// Sends a form exactly as given (no token added).
    pub async fn send_form(&self, method: Method, path: &str, fields: &[(&str, &str)]) -> Response {
        self.client
            .request(method, format!("{}{path}", self.address))
            .form(fields)
            .send()
            .await
            .expect("request")
    }

    /// Signs in; the session cookie is kept, and the dashboard is loaded for a fresh token.
    ///
    /// # Panics
    /// When sign-in does not redirect.
    pub async fn sign_in(&mut self, email: &str, password: &str) {
        self.page("/login").await;
        let resp = self
            .post_form("/login", &[("email", email), ("password", password)])
            .await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "sign-in failed");
        self.csrf = None;
        let html = self.get("/").await.text().await.expect("body");
        self.csrf = csrf_in(&html);
    }
}

impl TestApp {
    /// A browser with an empty cookie jar.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.address)
    }

    /// A new user with `role` in `tenant` and password [`PASSWORD`]; the email is unique per
    /// call.
    ///
    /// # Panics
    /// When the user cannot be created.
    pub async fn user(&self, tenant: TenantId, role: Role) -> (UserId, String) {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let id = accounts::create_member(
            &self.app,
            tenant,
            &Email::parse(&email).expect("email"),
            &Password::parse(PASSWORD).expect("password"),
            role,
        )
        .await
        .expect("member created");
        (id, email)
    }

    /// A new user with `role` in `tenant`, signed in: (browser, user id, email).
    ///
    /// # Panics
    /// When the user cannot be created or signed in.
    pub async fn member(&self, tenant: TenantId, role: Role) -> (Browser, UserId, String) {
        let (id, email) = self.user(tenant, role).await;
        let mut browser = self.browser();
        browser.sign_in(&email, PASSWORD).await;
        (browser, id, email)
    }

    /// An owner of tenant A, signed in.
    pub async fn owner(&self) -> Browser {
        self.member(self.tenant.tenant_id, Role::Owner).await.0
    }

    /// An owner of the demo tenant (`Options::demo`), signed in.
    ///
    /// # Panics
    /// Without the demo tenant.
    pub async fn demo_owner(&self) -> Browser {
        let demo = switchboard_services::tenancy::demo_tenant(&self.app)
            .await
            .expect("query")
            .expect("the demo tenant (Options::demo)");
        self.member(demo.tenant_id(), Role::Owner).await.0
    }
}
