//! Browser sign-in at the HTTP edge: the session cookie, the signed-in extractors, CSRF
//! protection, and the security headers every response carries.
//!
//! - Session cookie: `__Host-sb_session` with `Secure` when `APP_URL` is https; plain
//!   `sb_session` on http (browsers refuse a `__Host-` cookie without `Secure`, and `Secure`
//!   cookies over http). Always `HttpOnly`, `SameSite=Lax`, `Path=/`, no `Domain`, no
//!   `Max-Age` (the server ends sessions: [`switchboard_services::accounts`]).
//! - CSRF: every POST/PUT/PATCH/DELETE outside `/webhooks/` and `/api/` (bearer keys, no
//!   cookies) must carry a token, as the form field `csrf` or the header `X-CSRF-Token`. The
//!   token is HMAC-SHA256(key from `SECRET_KEY`, seed cookie `|` session id): a random seed in
//!   its own cookie, bound to the session, so a new session (sign-in) invalidates old forms.
//!   A request whose `Origin` is not `APP_URL`'s, or that the browser marks
//!   `Sec-Fetch-Site: cross-site`, is refused before the token is even looked at. Both refusals
//!   are 403 and nothing runs.
//! - Headers: `Content-Security-Policy` (scripts and styles from our origin only; `/api/docs`
//!   gets the SHA-256 hashes of its inline scripts), `X-Content-Type-Options: nosniff`,
//!   `Referrer-Policy: same-origin`, `X-Frame-Options: DENY`, and HSTS when https.

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::web::cookie::{Cookie, SameSite};
use poem::{Endpoint, FromRequest, IntoResponse, Middleware, Request, RequestBody, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchboard_domain::UserId;
use switchboard_domain::accounts::Role;
use switchboard_services::accounts::{self, SignedIn, Workspace};
use switchboard_services::{App, ServiceError, TenantCtx, crypto};

/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
/// The header that carries the CSRF token on `fetch` requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest form body the CSRF check reads, in bytes (larger forms send the header).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// Names and flags of our cookies, fixed by `APP_URL`'s scheme.
#[derive(Clone, Copy, Debug)]
pub struct CookieNames {
    pub session: &'static str,
    pub csrf: &'static str,
    /// An OIDC sign-in in progress (sealed: state, nonce, PKCE verifier).
    pub oidc_flow: &'static str,
    /// An OIDC identity waiting to be linked by a password sign-in (sealed).
    pub oidc_link: &'static str,
    pub secure: bool,
}

impl CookieNames {
    /// The names for this deployment.
    pub fn of(app: &App) -> Self {
        if app.settings.app_url.scheme() == "https" {
            Self {
                session: "__Host-sb_session",
                csrf: "__Host-sb_csrf",
                oidc_flow: "__Host-sb_oidc",
                oidc_link: "__Host-sb_oidc_link",
                secure: true,
            }
        } else {
            Self {
                session: "sb_session",
                csrf: "sb_csrf",
                oidc_flow: "sb_oidc",
                oidc_link: "sb_oidc_link",
                secure: false,
            }
        }
    }

    fn build(&self, name: &str, value: &str) -> Cookie {
        let mut c = Cookie::new_with_str(name, value);
        c.set_path("/");
        c.set_http_only(true);
        c.set_same_site(SameSite::Lax);
        c.set_secure(self.secure);
        c
    }

    /// `Set-Cookie` for a new session (sign-in).
    pub fn start_session(&self, session_id: &str) -> HeaderValue {
        header_value(self.build(self.session, session_id))
    }

    /// `Set-Cookie` that removes the session cookie (sign-out).
    pub fn end_session(&self) -> HeaderValue {
        self.remove(self.session)
    }

    /// `Set-Cookie` for a short-lived cookie `name` (one of ours) living `max_age`.
    pub fn short_lived(
        &self,
        name: &str,
        value: &str,
        max_age: std::time::Duration,
    ) -> HeaderValue {
        let mut c = self.build(name, value);
        c.set_max_age(max_age);
        header_value(c)
    }

    /// `Set-Cookie` that removes cookie `name`.
    pub fn remove(&self, name: &str) -> HeaderValue {
        self.short_lived(name, "", std::time::Duration::ZERO)
    }
}

fn header_value(c: Cookie) -> HeaderValue {
    HeaderValue::from_str(&c.to_string()).expect("cookie names and hex values are valid headers")
}

/// The CSRF token for this request's forms (put in by [`WebGuard`]).
#[derive(Clone, Debug)]
pub struct CsrfToken(pub String);

impl<'a> FromRequest<'a> for CsrfToken {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        req.extensions().get::<CsrfToken>().cloned().ok_or_else(|| {
            poem::Error::from_string("CSRF guard missing", StatusCode::INTERNAL_SERVER_ERROR)
        })
    }
}

/// Our Content-Security-Policy; `{scripts}` is where `/api/docs` adds its inline scripts'
/// hashes.
const CSP: &str = "default-src 'self'; script-src 'self'{scripts}; style-src 'self'{styles}; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; object-src 'none'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The middleware that sets the seed cookie, checks CSRF and `Origin`, and adds the security
/// headers. Wraps every route; on the webhook and REST paths it only adds the headers.
#[derive(Clone)]
pub struct WebGuard {
    key: [u8; 32],
    cookies: CookieNames,
    origin: String,
    csp: HeaderValue,
    /// `/api/docs`' policy, computed from its first page (the page never changes).
    docs_csp: Arc<std::sync::OnceLock<HeaderValue>>,
}

impl WebGuard {
    pub fn new(app: &App) -> Self {
        Self {
            key: crypto::derive_key(&app.settings.secret_key, "csrf v1"),
            cookies: CookieNames::of(app),
            origin: app.settings.app_url.origin().ascii_serialization(),
            csp: csp_header("", ""),
            docs_csp: Arc::default(),
        }
    }
}

fn csp_header(scripts: &str, styles: &str) -> HeaderValue {
    HeaderValue::from_str(
        &CSP.replace("{scripts}", scripts)
            .replace("{styles}", styles),
    )
    .expect("base64 hashes are valid header text")
}

impl<E: Endpoint> Middleware<E> for WebGuard {
    type Output = WebGuardEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        WebGuardEndpoint {
            inner,
            guard: self.clone(),
        }
    }
}

/// [`WebGuard`] around an endpoint.
pub struct WebGuardEndpoint<E> {
    inner: E,
    guard: WebGuard,
}

/// The value of cookie `name` in the request's `Cookie` headers (RFC 6265 §5.4: `; `-separated
/// `name=value` pairs), percent-decoded as our `Set-Cookie` encodes it.
pub fn read_cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v.trim_matches('"'))
                .decode_utf8_lossy()
                .into_owned()
        })
}

fn is_token(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Paths whose unsafe requests carry no cookies of ours: provider webhooks (signed) and the
/// REST API (bearer keys).
fn csrf_exempt(path: &str) -> bool {
    path.starts_with("/webhooks/") || path.starts_with("/api/")
}

impl WebGuard {
    fn token(&self, seed: &str, session_id: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(seed.as_bytes());
        mac.update(b"|");
        mac.update(session_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Why an unsafe request is refused, if it is.
    async fn refuse(&self, req: &mut Request, token: &str) -> Option<&'static str> {
        let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        if let Some(origin) = header(header::ORIGIN.as_str())
            && origin != self.origin
        {
            return Some("This request came from another site and was refused.");
        }
        if header("sec-fetch-site") == Some("cross-site") {
            return Some("This request came from another site and was refused.");
        }
        let from_header = header(CSRF_HEADER).map(str::to_string);
        // A form is read here, within MAX_FORM_BYTES, token in a header or not: the form
        // extractor behind this reads whatever it is given.
        let submitted = if is_form(req) {
            let Ok(body) = req.take_body().into_bytes_limit(MAX_FORM_BYTES).await else {
                return Some("This form is too large.");
            };
            let field = || {
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
                    .ok()?
                    .into_iter()
                    .find(|(k, _)| k == CSRF_FIELD)
                    .map(|(_, v)| v)
            };
            let submitted = from_header.or_else(field);
            req.set_body(body);
            submitted
        } else {
            from_header
        };
        match submitted {
            Some(s) if bool::from(s.as_bytes().ct_eq(token.as_bytes())) => None,
            _ => Some(
                "This form has expired or did not come from Switchboard. Go back, reload the page and try again.",
            ),
        }
    }

    fn headers(&self, resp: &mut Response, csp: HeaderValue) {
        let h = resp.headers_mut();
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        if self.cookies.secure {
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000; includeSubDomains"),
            );
        }
    }
}

fn is_form(req: &Request) -> bool {
    req.content_type()
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

fn unsafe_method(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The CSP of `/api/docs` (Swagger UI inlines its scripts): our policy, plus the SHA-256 of
/// each inline `<script>` of the page; inline styles are allowed there only.
fn docs_csp(html: &str) -> HeaderValue {
    let mut hashes = String::new();
    let mut rest = html;
    while let Some(open) = rest.find("<script") {
        let after = &rest[open..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let Some(close) = after.find("</script>") else {
            break;
        };
        let tag = &after[..tag_end];
        if !tag.contains(" src=") && tag_end < close {
            let body = &after[tag_end + 1..close];
            let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
            hashes.push_str(&format!(" 'sha256-{digest}'"));
        }
        rest = &after[close + "</script>".len()..];
    }
    csp_header(&hashes, " 'unsafe-inline'")
}

impl<E: Endpoint> Endpoint for WebGuardEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let g = &self.guard;
        let path = req.uri().path();
        if csrf_exempt(path) {
            // Webhooks and the REST API carry no cookies of ours: no seed, no token.
            let docs = path.starts_with("/api/docs");
            let mut resp = match self.inner.call(req).await {
                Ok(r) => r.into_response(),
                Err(e) => e.into_response(),
            };
            let csp = if docs && resp.status().is_success() {
                match g.docs_csp.get() {
                    Some(csp) => csp.clone(),
                    None => {
                        let body = resp.take_body().into_string().await.unwrap_or_default();
                        let csp = g.docs_csp.get_or_init(|| docs_csp(&body)).clone();
                        resp.set_body(body);
                        csp
                    }
                }
            } else {
                g.csp.clone()
            };
            g.headers(&mut resp, csp);
            return Ok(resp);
        }

        let seed = read_cookie(&req, g.cookies.csrf).filter(|v| is_token(v));
        let fresh_seed = seed.is_none();
        let seed = seed.unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
        let session_id = read_cookie(&req, g.cookies.session).unwrap_or_default();
        let token = g.token(&seed, &session_id);
        let refused = if unsafe_method(req.method()) {
            g.refuse(&mut req, &token).await
        } else {
            None
        };
        let mut resp = match refused {
            Some(reason) => (StatusCode::FORBIDDEN, reason).into_response(),
            None => {
                req.extensions_mut().insert(CsrfToken(token));
                match self.inner.call(req).await {
                    Ok(r) => r.into_response(),
                    Err(e) => e.into_response(),
                }
            }
        };
        g.headers(&mut resp, g.csp.clone());
        if fresh_seed {
            resp.headers_mut().append(
                header::SET_COOKIE,
                header_value(g.cookies.build(g.cookies.csrf, &seed)),
            );
        }
        Ok(resp)
    }
}

/// Where a page request without a live session goes: the sign-in page, then back.
fn sign_in_first(req: &Request) -> poem::Error {
    if req.method() == Method::GET {
        let next = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let location = format!(
            "/login?next={}",
            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        poem::Error::from_response(
            Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, location)
                .finish(),
        )
    } else {
        poem::Error::from_string(
            "Your session has ended. Sign in again.",
            StatusCode::UNAUTHORIZED,
        )
    }
}

/// The session id from the request's cookie, if any.
pub fn session_id(req: &Request) -> Option<String> {
    let app = req.data::<Arc<App>>()?;
    read_cookie(req, CookieNames::of(app).session).filter(|v| is_token(v))
}

async fn signed_in(req: &Request) -> poem::Result<Option<(String, SignedIn)>> {
    let Some(id) = session_id(req) else {
        return Ok(None);
    };
    let app = req
        .data::<Arc<App>>()
        .expect("the app is attached to every route");
    match accounts::session(app, &id).await {
        Ok(Some(user)) => Ok(Some((id, user))),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            Err(poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR))
        }
    }
}

/// Any request: who is signed in, if anyone (the sign-in pages use it to skip ahead).
pub struct Visitor(pub Option<User>);

impl<'a> FromRequest<'a> for Visitor {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Visitor(
            signed_in(req)
                .await?
                .map(|(session_id, user)| User { session_id, user }),
        ))
    }
}

/// A signed-in user, with or without a business yet. Without a live session: GET redirects
/// to `/login?next=…`, anything else is 401.
pub struct User {
    pub session_id: String,
    pub user: SignedIn,
}

impl<'a> FromRequest<'a> for User {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        match signed_in(req).await? {
            Some((session_id, user)) => Ok(User { session_id, user }),
            None => Err(sign_in_first(req)),
        }
    }
}

/// A signed-in member working in a tenant: the only way pages get a [`TenantCtx`]. Without a
/// tenant (new account, or removed from the session's tenant), GET goes to `/onboarding`.
pub struct Member {
    pub session_id: String,
    pub user_id: UserId,
    pub email: String,
    pub workspace: Workspace,
}

impl Member {
    /// The tenant this request acts for.
    pub fn ctx(&self) -> &TenantCtx {
        &self.workspace.ctx
    }

    pub fn role(&self) -> Role {
        self.workspace.role
    }

    /// Settings, members and billing are for owners and admins.
    ///
    /// # Errors
    /// [`ServiceError::Forbidden`] (403) for agents.
    pub fn must_manage(&self) -> Result<(), ServiceError> {
        if self.workspace.role.manages() {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "Only owners and admins can do this.".into(),
            ))
        }
    }
}

impl<'a> FromRequest<'a> for Member {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let Some((session_id, user)) = signed_in(req).await? else {
            return Err(sign_in_first(req));
        };
        match user.workspace {
            Some(workspace) => Ok(Member {
                session_id,
                user_id: user.user_id,
                email: user.email,
                workspace,
            }),
            None if req.method() == Method::GET => Err(poem::Error::from_response(
                Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, "/onboarding")
                    .finish(),
            )),
            None => Err(poem::Error::from_string(
                "You are not a member of this business any more.",
                StatusCode::FORBIDDEN,
            )),
        }
    }
}

/// The client's IP address, as the per-address limits count it: the first address in the
/// header named by `CLIENT_IP_HEADER` (set behind a reverse proxy, e.g. Fly's
/// `Fly-Client-IP`) when the request has one, else the connection's peer address.
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<'a> FromRequest<'a> for ClientIp {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        Ok(ClientIp(client_ip(req)))
    }
}

/// See [`ClientIp`].
pub fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    let from_proxy = req
        .data::<Arc<App>>()
        .and_then(|app| app.settings.client_ip_header.as_deref())
        .and_then(|name| req.header(name))
        .and_then(|value| value.split(',').next())
        .and_then(|first| first.trim().parse().ok());
    from_proxy.or_else(|| req.remote_addr().as_socket_addr().map(|a| a.ip()))
}

/// Sign-in attempts allowed per account (the email as typed, lower-cased) and per client IP,
/// so neither guessing one account's password from many addresses nor many accounts' from
/// one address goes fast. Per account: 5 at once, then 1 a minute; per IP: 20 at once, then
/// 1 every 6 seconds. In memory, per process (a Redis-backed limiter is for several web
/// processes).
pub struct SignInLimiter {
    per_account: governor::DefaultKeyedRateLimiter<String>,
    per_ip: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    clock: governor::clock::DefaultClock,
}

/// Keys kept before old ones are pruned.
const LIMITER_KEYS: usize = 100_000;

impl Default for SignInLimiter {
    fn default() -> Self {
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;
        let n = |v| NonZeroU32::new(v).expect("non-zero");
        Self {
            per_account: RateLimiter::keyed(Quota::per_minute(n(1)).allow_burst(n(5))),
            per_ip: RateLimiter::keyed(
                Quota::with_period(std::time::Duration::from_secs(6))
                    .expect("non-zero period")
                    .allow_burst(n(20)),
            ),
            clock: governor::clock::DefaultClock::default(),
        }
    }
}

impl SignInLimiter {
    /// Counts one attempt for `email` from `ip`.
    ///
    /// # Errors
    /// The whole seconds to wait when either limit is reached (the attempt is not counted
    /// against the other).
    pub fn check(&self, email: &str, ip: Option<std::net::IpAddr>) -> Result<(), u64> {
        use governor::clock::Clock;
        if self.per_account.len() > LIMITER_KEYS {
            self.per_account.retain_recent();
        }
        if self.per_ip.len() > LIMITER_KEYS {
            self.per_ip.retain_recent();
        }
        let wait = |n: governor::NotUntil<_>| n.wait_time_from(self.clock.now()).as_secs() + 1;
        if let Some(ip) = ip {
            self.per_ip.check_key(&ip).map_err(wait)?;
        }
        self.per_account
            .check_key(&email.trim().to_lowercase())
            .map_err(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_csp_hashes_inline_scripts_only() {
        let html = r#"<script src="/x.js"></script><script>alert(1)</script><script charset="UTF-8">b()</script>"#;
        let csp = docs_csp(html);
        let csp = csp.to_str().unwrap();
        let hash = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
        };
        assert!(
            csp.contains(&format!("'sha256-{}'", hash("alert(1)"))),
            "{csp}"
        );
        assert!(csp.contains(&format!("'sha256-{}'", hash("b()"))), "{csp}");
        assert_eq!(csp.matches("sha256-").count(), 2);
        assert!(csp.contains("object-src 'none'") && csp.contains("frame-ancestors 'none'"));
    }
}
