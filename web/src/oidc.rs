//! Sign-in through the configured OpenID Connect provider: `GET /auth/oidc/start` sends the
//! browser to the provider; `GET /auth/oidc/callback` finishes. The state, nonce and PKCE
//! verifier travel in a sealed (AES-256-GCM), HttpOnly cookie that lives 10 minutes, so the
//! flow is bound to the browser that started it and the callback is single-use.

use std::time::Duration;

use maud::html;
use poem::http::{StatusCode, header};
use poem::web::Query;
use poem::{IntoResponse, Request, Response, handler};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use switchboard_api::auth::{CookieNames, CsrfToken, Visitor, read_cookie};
use switchboard_services::App;
use switchboard_services::accounts;
use switchboard_services::oidc::{self, Outcome};

use crate::layout::card_page;
use crate::{AppData, PageError};

/// How long a started sign-in may take, in seconds.
pub const FLOW_SECS: i64 = 600;

#[derive(Serialize, Deserialize)]
struct Flow {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    /// Unix seconds after which the flow is refused.
    expires: i64,
}

/// An identity waiting for the password sign-in of the account with its email.
#[derive(Serialize, Deserialize)]
pub(crate) struct PendingLink {
    pub issuer: String,
    pub subject: String,
    pub email: String,
    pub expires: i64,
}

fn seal<T: Serialize>(app: &App, value: &T) -> String {
    app.sealer
        .seal(&serde_json::to_string(value).expect("plain structs serialize"))
}

fn open<T: for<'de> Deserialize<'de>>(app: &App, sealed: &str) -> Option<T> {
    use secrecy::ExposeSecret;
    let plain = app.sealer.open(sealed).ok()?;
    serde_json::from_str(plain.expose_secret()).ok()
}

/// The pending link in this request, if any and not expired.
pub(crate) fn pending_link(app: &App, req: &Request) -> Option<PendingLink> {
    let raw = read_cookie(req, CookieNames::of(app).oidc_link)?;
    open::<PendingLink>(app, &raw).filter(|l| l.expires > chrono::Utc::now().timestamp())
}

fn refused(csrf: &CsrfToken, status: StatusCode, why: &str) -> Response {
    let page = card_page(
        &csrf.0,
        "Sign-in failed",
        Some(why),
        html! { p { a href="/login" { "Back to sign in" } } },
    );
    (status, page).into_response()
}

#[derive(Deserialize, Default)]
pub(crate) struct Start {
    next: Option<String>,
}

/// `GET /auth/oidc/start[?next=/path]`: to the provider (404 when OIDC is not configured).
#[handler]
pub(crate) async fn start(
    app: AppData<'_>,
    csrf: CsrfToken,
    Query(q): Query<Start>,
) -> Result<Response, PageError> {
    let Some(oidc) = &app.oidc else {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            "Sign-in with a provider is not configured.".into(),
        ));
    };
    let provider = match oidc.provider().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC provider unavailable");
            return Ok(refused(
                &csrf,
                StatusCode::SERVICE_UNAVAILABLE,
                "The sign-in provider cannot be reached right now. Try again in a minute, or sign in with your password.",
            ));
        }
    };
    let auth = provider.authorize();
    let flow = Flow {
        state: auth.state,
        nonce: auth.nonce,
        verifier: auth.pkce_verifier,
        next: crate::auth::safe_next(q.next.as_deref()),
        expires: chrono::Utc::now().timestamp() + FLOW_SECS,
    };
    let names = CookieNames::of(app.0);
    let cookie = names.short_lived(
        names.oidc_flow,
        &seal(app.0, &flow),
        Duration::from_secs(FLOW_SECS as u64),
    );
    Ok(Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, auth.url)
        .header(header::SET_COOKIE, cookie)
        .finish())
}

#[derive(Deserialize, Default)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /auth/oidc/callback?code=&state=`: checks the state against the browser's flow
/// cookie, exchanges the code, checks the ID token, then signs the user in (a new account goes
/// on to onboarding), or asks the owner of an existing account to sign in with its password
/// to link the provider. Every refusal is a 400 page and signs nobody in.
#[handler]
pub(crate) async fn callback(
    req: &Request,
    app: AppData<'_>,
    Visitor(visitor): Visitor,
    csrf: CsrfToken,
    Query(q): Query<Callback>,
) -> Result<Response, PageError> {
    let names = CookieNames::of(app.0);
    let mut resp = finish(req, app.0, visitor, &csrf, q).await?;
    // The flow is single-use, whatever happened.
    resp.headers_mut()
        .append(header::SET_COOKIE, names.remove(names.oidc_flow));
    Ok(resp)
}

async fn finish(
    req: &Request,
    app: &App,
    visitor: Option<switchboard_api::auth::User>,
    csrf: &CsrfToken,
    q: Callback,
) -> Result<Response, PageError> {
    let names = CookieNames::of(app);
    let bad = |why: &str| Ok(refused(csrf, StatusCode::BAD_REQUEST, why));
    let (Some(oidc), Some(flow)) = (
        &app.oidc,
        read_cookie(req, names.oidc_flow).and_then(|c| open::<Flow>(app, &c)),
    ) else {
        return bad(
            "This sign-in was not started in this browser, or it was already used. Start again.",
        );
    };
    if flow.expires <= chrono::Utc::now().timestamp() {
        return bad("This sign-in took too long. Start again.");
    }
    if let Some(error) = q.error {
        return bad(&format!("The provider did not sign you in ({error})."));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return bad("The provider's answer is missing its code or state.");
    };
    if !bool::from(state.as_bytes().ct_eq(flow.state.as_bytes())) {
        tracing::warn!("OIDC callback with a state that is not this browser's");
        return bad("This sign-in answer does not belong to this browser. Start again.");
    }
    let provider = match oidc.provider().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC provider unavailable");
            return bad("The sign-in provider cannot be reached right now.");
        }
    };
    let identity = match provider.finish(&code, &flow.verifier, &flow.nonce).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "OIDC sign-in refused");
            return bad("The provider's answer could not be verified. Start again.");
        }
    };
    match oidc::resolve(app, &identity).await? {
        Outcome::SignIn(user_id) => {
            if let Some(old) = visitor {
                accounts::end_session(app, &old.session_id).await?;
            }
            let session = accounts::start_session(app, user_id).await?;
            Ok(Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, flow.next)
                .header(header::SET_COOKIE, names.start_session(&session))
                .finish())
        }
        Outcome::LinkFirst { email } => {
            let link = PendingLink {
                issuer: identity.issuer,
                subject: identity.subject,
                email,
                expires: chrono::Utc::now().timestamp() + FLOW_SECS,
            };
            Ok(Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, "/login?link=1")
                .header(
                    header::SET_COOKIE,
                    names.short_lived(
                        names.oidc_link,
                        &seal(app, &link),
                        Duration::from_secs(FLOW_SECS as u64),
                    ),
                )
                .finish())
        }
        Outcome::Refused(why) => bad(&why),
    }
}
