//! Sign-up, onboarding, sign-in and sign-out pages.

use maud::{Markup, html};
use poem::http::{StatusCode, header};
use std::sync::Arc;

use poem::web::{Data, Form, Query, Redirect};
use poem::{IntoResponse, Request, Response, handler};
use serde::Deserialize;
use switchboard_api::auth::{ClientIp, CookieNames, CsrfToken, SignInLimiter, User, Visitor};
use switchboard_domain::accounts::{Email, Password};
use switchboard_services::accounts::{self, NewBusiness, start_session};
use switchboard_services::oidc;
use switchboard_services::{ServiceError, agency, recovery};

use crate::layout::{Chrome, business_fields, card_page};
use crate::{AppData, PageError, optional_phone, url_encode};

/// Where to go after signing in: a local path only (no `//host`, no scheme), else `/`.
///
/// Only visible ASCII is accepted: browsers drop tabs and line breaks from a URL before
/// parsing it (WHATWG URL Standard, "basic URL parser"), so `/<TAB>/evil.example` would
/// reach them as `//evil.example`, another site; and a backslash counts as a slash.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            n.into()
        }
        _ => "/".into(),
    }
}

/// A 303 to `to` that also sets or clears the session cookie.
fn redirect_with_cookie(to: &str, cookie: poem::http::HeaderValue) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .header(header::SET_COOKIE, cookie)
        .finish()
}

#[derive(Deserialize, Default)]
pub(crate) struct Next {
    next: Option<String>,
    /// Set after a password reset.
    reset: Option<String>,
}

/// What the sign-in page shows besides the form.
pub(crate) struct LoginExtras<'a> {
    /// Offer the OIDC provider (only when configured).
    pub oidc: bool,
    /// The email of an account a provider identity waits to be linked to.
    pub link: Option<&'a str>,
    /// Coming back from a password reset.
    pub reset: bool,
}

fn login_form(
    chrome: &Chrome,
    extras: &LoginExtras,
    email: &str,
    next: &str,
    error: Option<&str>,
) -> Markup {
    card_page(
        chrome.csrf,
        "Sign in",
        error,
        html! {
                @if extras.reset {
                    p.notice role="status" { "Your password was changed and every session signed out. Sign in with the new one." }
                }
                @if let Some(link) = extras.link {
                    p.notice role="status" { "An account with " strong { (link) } " already exists. Sign in with its password to link your sign-in provider to it." }
                }
                form method="post" action="/login" {
                    (chrome.csrf_field())
                    input type="hidden" name="next" value=(next);
                    label { "Email" input type="email" name="email" value=(email) autocomplete="username" required autofocus; }
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    button type="submit" { "Sign in" }
                }
                p.alt { a href="/password/forgot" { "Forgot your password?" } }
                @if extras.oidc {
                    p.alt { a.button.secondary href={ "/auth/oidc/start?next=" (url_encode(next)) } { "Sign in with your company account (SSO)" } }
                }
                p.alt { "New to Switchboard? " a href="/signup" { "Create an account" } }
        },
    )
}

/// `GET /login[?next=/path]`.
#[handler]
pub(crate) async fn login_page(
    req: &Request,
    app: AppData<'_>,
    Visitor(visitor): Visitor,
    csrf: CsrfToken,
    Query(q): Query<Next>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if visitor.is_some() {
        return Redirect::see_other(next).into_response();
    }
    let link = crate::oidc::pending_link(app.0, req);
    let extras = LoginExtras {
        oidc: app.oidc.is_some(),
        link: link.as_ref().map(|l| l.email.as_str()),
        reset: q.reset.is_some(),
    };
    let email = link.as_ref().map_or("", |l| l.email.as_str());
    login_form(&Chrome::visitor(&csrf), &extras, email, &next, None).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// `POST /login` (form `email`, `password`, `next`): a new session, whatever the browser had
/// before (its old session, if any, ends: no fixation). Attempts are limited per account and
/// per client IP ([`SignInLimiter`]): past the limit, 429 with `Retry-After` and a sentence.
#[handler]
pub(crate) async fn login(
    req: &Request,
    app: AppData<'_>,
    limiter: Data<&Arc<SignInLimiter>>,
    ClientIp(ip): ClientIp,
    Visitor(visitor): Visitor,
    csrf: CsrfToken,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    let link = crate::oidc::pending_link(app.0, req);
    let extras = LoginExtras {
        oidc: app.oidc.is_some(),
        link: link.as_ref().map(|l| l.email.as_str()),
        reset: false,
    };
    if let Err(wait) = limiter.check(&form.email, ip) {
        let message = format!(
            "Too many sign-in attempts. For your security, wait {wait} seconds and try again."
        );
        let page = login_form(
            &Chrome::visitor(&csrf),
            &extras,
            &form.email,
            &next,
            Some(&message),
        );
        let mut resp = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            wait.to_string().parse().expect("digits"),
        );
        return Ok(resp);
    }
    let Some(user_id) = accounts::sign_in(app.0, &form.email, &form.password).await? else {
        let page = login_form(
            &Chrome::visitor(&csrf),
            &extras,
            &form.email,
            &next,
            Some("That email and password do not match an account."),
        );
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    if let Some(old) = visitor {
        accounts::end_session(app.0, &old.session_id).await?;
    }
    let names = CookieNames::of(app.0);
    let mut resp = redirect_with_cookie(
        &next,
        names.start_session(&start_session(app.0, user_id).await?),
    );
    if let Some(link) = link {
        // The provider identity joins this account only if it is the account it named.
        let linked = oidc::link(app.0, user_id, &link.issuer, &link.subject, &link.email).await?;
        tracing::info!(%user_id, linked, "password sign-in with a pending provider link");
        resp.headers_mut()
            .append(header::SET_COOKIE, names.remove(names.oidc_link));
    }
    Ok(resp)
}

fn signup_form(chrome: &Chrome, email: &str, next: &str, error: Option<&str>) -> Markup {
    card_page(
        chrome.csrf,
        "Create your account",
        error,
        html! {
                form method="post" action="/signup" {
                    (chrome.csrf_field())
                    input type="hidden" name="next" value=(next);
                    label { "Work email" input type="email" name="email" value=(email) autocomplete="username" required autofocus; }
                    label { "Password " small { "(at least 10 characters)" }
                        input type="password" name="password" autocomplete="new-password" minlength="10" required;
                    }
                    button type="submit" { "Create account" }
                }
                p.alt { "Already have an account? " a href="/login" { "Sign in" } }
        },
    )
}

/// `GET /signup`.
#[handler]
pub(crate) async fn signup_page(
    Visitor(visitor): Visitor,
    csrf: CsrfToken,
    Query(q): Query<SignupQuery>,
) -> Response {
    let next = q
        .next
        .as_deref()
        .map(|n| safe_next(Some(n)))
        .unwrap_or_default();
    if visitor.is_some() {
        return Redirect::see_other(if next.is_empty() { "/" } else { &next }).into_response();
    }
    let email = q.email.as_deref().unwrap_or("");
    signup_form(&Chrome::visitor(&csrf), email, &next, None).into_response()
}

#[derive(Deserialize, Default)]
pub(crate) struct SignupQuery {
    next: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct SignupForm {
    email: String,
    password: String,
    /// Where to go instead of onboarding (an invite page).
    next: Option<String>,
}

/// `POST /signup` (form `email`, `password`, `next`): the account, a session, a mail with the
/// verification link, then `/onboarding` (or `next`, e.g. the invite that brought them).
#[handler]
pub(crate) async fn signup(
    app: AppData<'_>,
    Visitor(visitor): Visitor,
    csrf: CsrfToken,
    Form(form): Form<SignupForm>,
) -> Result<Response, PageError> {
    let chrome = Chrome::visitor(&csrf);
    let next = match form.next.as_deref() {
        Some(n) if !n.is_empty() => safe_next(Some(n)),
        _ => "/onboarding".to_string(),
    };
    let refuse = |status, message: String| {
        let page = signup_form(&chrome, &form.email, &next, Some(&message));
        Ok((status, page).into_response())
    };
    let email = match Email::parse(&form.email) {
        Ok(e) => e,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("email: {e}")),
    };
    let password = match Password::parse(&form.password) {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("password: {e}")),
    };
    let user_id = match accounts::create_account(app.0, &email, &password).await {
        Ok(id) => id,
        Err(ServiceError::Conflict(m)) => return refuse(StatusCode::CONFLICT, m),
        Err(e) => return Err(e.into()),
    };
    if let Some(old) = visitor {
        accounts::end_session(app.0, &old.session_id).await?;
    }
    if let Err(e) = recovery::send_verification(app.0, user_id).await {
        // The account works without it; the address stays unverified until a later link.
        tracing::warn!(error = %e, %user_id, "verification mail not sent");
    }
    let session = accounts::start_session(app.0, user_id).await?;
    Ok(redirect_with_cookie(
        &next,
        CookieNames::of(app.0).start_session(&session),
    ))
}

#[derive(Deserialize, Default)]
pub(crate) struct BusinessForm {
    business_name: String,
    time_zone: String,
    notify_phone: Option<String>,
    /// Set when the user runs an agency: the business becomes its first sub-account.
    agency_name: Option<String>,
}

fn onboarding_form(chrome: &Chrome, form: &BusinessForm, error: Option<&str>) -> Markup {
    let tz = if form.time_zone.is_empty() {
        "America/Chicago"
    } else {
        &form.time_zone
    };
    card_page(
        chrome.csrf,
        "Tell us about your business",
        error,
        html! {
                form method="post" action="/onboarding" {
                    (chrome.csrf_field())
                    (business_fields(&form.business_name, tz, form.notify_phone.as_deref().unwrap_or("")))
                    details.agency open[form.agency_name.as_deref().is_some_and(|a| !a.is_empty())] {
                        summary { "I am an agency managing several businesses" }
                        label { "Agency name " small { "(this business becomes your first sub-account)" }
                            input name="agency_name" value=(form.agency_name.as_deref().unwrap_or("")) maxlength="100";
                        }
                    }
                    button type="submit" { "Create business" }
                }
        },
    )
}

/// `GET /onboarding`: the business form, for a signed-in user without one. A user whose
/// session has no business but who can work in one (removed from the session's business,
/// still a member of another) is switched to the first of them, as sign-in would, instead.
#[handler]
pub(crate) async fn onboarding_page(
    app: AppData<'_>,
    user: User,
    csrf: CsrfToken,
) -> Result<Response, PageError> {
    if user.user.workspace.is_some()
        || agency::switch_to_first(app.0, &user.session_id, user.user.user_id).await?
    {
        return Ok(Redirect::see_other("/").into_response());
    }
    Ok(onboarding_form(&Chrome::visitor(&csrf), &BusinessForm::default(), None).into_response())
}

/// `POST /onboarding` (form `business_name`, `time_zone`, `notify_phone`, `agency_name`):
/// creates the business with the user as its owner — or, with an agency name, the agency run
/// by the user and the business as its first sub-account — then the dashboard.
#[handler]
pub(crate) async fn onboarding(
    app: AppData<'_>,
    user: User,
    csrf: CsrfToken,
    Form(form): Form<BusinessForm>,
) -> Result<Response, PageError> {
    let chrome = Chrome::visitor(&csrf);
    let notify_phone = match optional_phone("notify_phone", form.notify_phone.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            let page = onboarding_form(&chrome, &form, Some(&e.to_string()));
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let new = NewBusiness {
        name: form.business_name.clone(),
        time_zone: form.time_zone.clone(),
        notify_phone,
    };
    let (session, user_id) = (&user.session_id, user.user.user_id);
    let created = match form.agency_name.as_deref().map(str::trim) {
        Some(agency_name) if !agency_name.is_empty() => {
            agency::create_agency(app.0, session, user_id, agency_name, new)
                .await
                .map(|_| ())
        }
        _ => accounts::create_business(app.0, session, user_id, new)
            .await
            .map(|_| ()),
    };
    match created {
        Ok(()) => Ok(Redirect::see_other("/").into_response()),
        Err(e @ ServiceError::Invalid { .. }) => {
            let page = onboarding_form(&chrome, &form, Some(&e.to_string()));
            Ok((StatusCode::BAD_REQUEST, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /logout`: ends the session on the server and clears the cookie.
#[handler]
pub(crate) async fn logout(
    app: AppData<'_>,
    Visitor(visitor): Visitor,
) -> Result<Response, PageError> {
    if let Some(user) = visitor {
        accounts::end_session(app.0, &user.session_id).await?;
    }
    Ok(redirect_with_cookie(
        "/login",
        CookieNames::of(app.0).end_session(),
    ))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_local_path_only() {
        assert_eq!(safe_next(Some("/conversations?c=1")), "/conversations?c=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/caf\u{e9}",
            "evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
