//! The pages behind mailed links — invites, email verification, password reset — and the
//! simulator mailbox. Following a link (GET) only shows a page; the change is its form's POST.

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::{Form, Path, Redirect, RemoteAddr};
use poem::{IntoResponse, Request, Response, handler};
use serde::Deserialize;
use switchboard_api::auth::{CsrfToken, User, Visitor};
use switchboard_domain::accounts::Password;
use switchboard_services::recovery::Link;
use switchboard_services::{ServiceError, invites, mail, recovery};
use url::{Host, Url};

use crate::layout::{Chrome, card_page, page};
use crate::{AppData, PageError, url_encode};

fn card(csrf: &CsrfToken, title: &str, body: Markup) -> Markup {
    card_page(&csrf.0, title, None, body)
}

/// `GET /invite/:token`: who invites whom, and the way to accept.
#[handler]
pub(crate) async fn invite_page(
    app: AppData<'_>,
    Visitor(visitor): Visitor,
    csrf: CsrfToken,
    Path(token): Path<String>,
) -> Result<Markup, PageError> {
    let offer = invites::offer(app.0, &token).await.map_err(|e| match e {
        ServiceError::NotFound => PageError(
            StatusCode::NOT_FOUND,
            "This invite link has expired, was withdrawn, or was already used. Ask for a new one."
                .into(),
        ),
        other => other.into(),
    })?;
    let chrome = Chrome::visitor(&csrf);
    let here = format!("/invite/{token}");
    let body = html! {
        p { "You are invited to " strong { (offer.business) } " as " (offer.role.as_str()) ", with the address " strong { (offer.email) } "." }
        @match &visitor {
            Some(v) if v.user.email == offer.email => {
                form method="post" action={ (here) "/accept" } {
                    (chrome.csrf_field())
                    button type="submit" { "Accept and join " (offer.business) }
                }
            }
            Some(v) => {
                p.form-error { "You are signed in as " (v.user.email) ". Sign out, then sign in as " (offer.email) " to accept." }
            }
            None => {
                p { a.button href={ "/login?next=" (url_encode(&here)) } { "Sign in to accept" } }
                p.alt { "No account yet? " a href={ "/signup?next=" (url_encode(&here)) "&email=" (url_encode(&offer.email)) } { "Create one with " (offer.email) } }
            }
        }
    };
    Ok(card(&csrf, "Invitation", body))
}

/// `POST /invite/:token/accept`: joins the business and works in it.
#[handler]
pub(crate) async fn accept_invite(
    app: AppData<'_>,
    user: User,
    Path(token): Path<String>,
) -> Result<Redirect, PageError> {
    invites::accept(
        app.0,
        &token,
        &user.session_id,
        user.user.user_id,
        &user.user.email,
    )
    .await?;
    Ok(Redirect::see_other("/"))
}

/// `GET /verify-email/:token`: a button that confirms the address, for a live link only (404
/// otherwise). The token goes into the form's action, so an unchecked one could point the
/// button at any other same-site form: `..%2Finvite%2F…%2Faccept` decodes to `../invite/…`.
#[handler]
pub(crate) async fn verify_page(
    app: AppData<'_>,
    csrf: CsrfToken,
    Path(token): Path<String>,
) -> Result<Markup, PageError> {
    if !recovery::link_live(app.0, &token, Link::Verify).await? {
        return Err(dead_verify_link());
    }
    let chrome = Chrome::visitor(&csrf);
    Ok(card(
        &csrf,
        "Confirm your email",
        html! {
            form method="post" action={ "/verify-email/" (token) } {
                (chrome.csrf_field())
                button type="submit" { "Confirm my email address" }
            }
        },
    ))
}

fn dead_verify_link() -> PageError {
    PageError(
        StatusCode::NOT_FOUND,
        "This link has expired or was already used. Sign in and ask for a new one.".into(),
    )
}

/// `POST /verify-email/:token`.
#[handler]
pub(crate) async fn verify(
    app: AppData<'_>,
    csrf: CsrfToken,
    Path(token): Path<String>,
) -> Result<Markup, PageError> {
    match recovery::verify_email(app.0, &token).await {
        Ok(()) => Ok(card(
            &csrf,
            "Email confirmed",
            html! { p.notice { "Thanks: your address is confirmed." } p { a href="/" { "Go to Switchboard" } } },
        )),
        Err(ServiceError::NotFound) => Err(dead_verify_link()),
        Err(e) => Err(e.into()),
    }
}

fn forgot_form(csrf: &CsrfToken, notice: Option<&str>) -> Markup {
    let chrome = Chrome::visitor(csrf);
    card(
        csrf,
        "Reset your password",
        html! {
            @if let Some(n) = notice { p.notice role="status" { (n) } }
            form method="post" action="/password/forgot" {
                (chrome.csrf_field())
                label { "Email" input type="email" name="email" required autofocus autocomplete="username"; }
                button type="submit" { "Mail me a reset link" }
            }
            p.alt { a href="/login" { "Back to sign in" } }
        },
    )
}

/// `GET /password/forgot`.
#[handler]
pub(crate) fn forgot_page(csrf: CsrfToken) -> Markup {
    forgot_form(&csrf, None)
}

#[derive(Deserialize)]
pub(crate) struct ForgotForm {
    email: String,
}

/// `POST /password/forgot` (`email`): the same answer whether or not the account exists.
#[handler]
pub(crate) async fn forgot(
    app: AppData<'_>,
    csrf: CsrfToken,
    Form(f): Form<ForgotForm>,
) -> Result<Markup, PageError> {
    recovery::request_reset(app.0, &f.email).await?;
    Ok(forgot_form(
        &csrf,
        Some("If an account has this address, a reset link is on its way. It works for 1 hour."),
    ))
}

fn reset_form(csrf: &CsrfToken, token: &str, error: Option<&str>) -> Markup {
    let chrome = Chrome::visitor(csrf);
    card(
        csrf,
        "Choose a new password",
        html! {
            @if let Some(e) = error { p.form-error role="alert" { (e) } }
            form method="post" action={ "/password/reset/" (token) } {
                (chrome.csrf_field())
                label { "New password " small { "(at least 10 characters)" }
                    input type="password" name="password" minlength="10" required autofocus autocomplete="new-password";
                }
                button type="submit" { "Set password" }
            }
        },
    )
}

fn dead_link() -> PageError {
    PageError(
        StatusCode::NOT_FOUND,
        "This reset link has expired or was already used. Ask for a new one at /password/forgot."
            .into(),
    )
}

/// `GET /password/reset/:token`.
#[handler]
pub(crate) async fn reset_page(
    app: AppData<'_>,
    csrf: CsrfToken,
    Path(token): Path<String>,
) -> Result<Markup, PageError> {
    if !recovery::link_live(app.0, &token, Link::Reset).await? {
        return Err(dead_link());
    }
    Ok(reset_form(&csrf, &token, None))
}

#[derive(Deserialize)]
pub(crate) struct ResetForm {
    password: String,
}

/// `POST /password/reset/:token` (`password`): sets it, ends every session, then sign-in.
#[handler]
pub(crate) async fn reset(
    app: AppData<'_>,
    csrf: CsrfToken,
    Path(token): Path<String>,
    Form(f): Form<ResetForm>,
) -> Result<Response, PageError> {
    let password = match Password::parse(&f.password) {
        Ok(p) => p,
        Err(e) => {
            // The form goes back with the token in its action: only for a live link.
            if !recovery::link_live(app.0, &token, Link::Reset).await? {
                return Err(dead_link());
            }
            let page = reset_form(&csrf, &token, Some(&format!("password: {e}")));
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    match recovery::reset_password(app.0, &token, &password).await {
        Ok(_) => Ok(Redirect::see_other("/login?reset=1").into_response()),
        Err(ServiceError::NotFound) => Err(dead_link()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a request comes from the machine Switchboard runs on, with nobody in between: a
/// loopback client, no proxy header (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`), and an
/// `APP_URL` on a loopback host. Behind a reverse proxy on the same machine every internet
/// client arrives from loopback; its `APP_URL` is then the public address, and most proxies
/// add one of those headers.
fn from_this_machine(app_url: &Url, remote: &RemoteAddr, req: &Request) -> bool {
    let loopback_client = remote
        .as_socket_addr()
        .is_some_and(|a| a.ip().is_loopback());
    let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| req.headers().contains_key(*h));
    let local_app = match app_url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    loopback_client && !proxied && local_app
}

/// `GET /simulator/mail`: the mail Switchboard would have sent, while no mail provider is
/// configured. It holds live invite and reset links, so it answers only in simulator mode and
/// only [`from_this_machine`]; 404 otherwise.
#[handler]
pub(crate) async fn mailbox(
    app: AppData<'_>,
    remote: &RemoteAddr,
    req: &Request,
    csrf: CsrfToken,
) -> Result<Markup, PageError> {
    if !from_this_machine(&app.0.settings.app_url, remote, req) || !mail::simulated(app.0) {
        return Err(PageError(
            StatusCode::NOT_FOUND,
            "The simulator mailbox is only available on this machine, without a mail provider."
                .into(),
        ));
    }
    let mails = mail::mailbox(app.0).await?;
    let body = html! {
        div.settings {
            section.card {
                p.hint { "Mail is not sent anywhere: set RESEND_API_KEY to deliver it. Newest first." }
                @if mails.is_empty() { p.empty { "No mail yet." } }
                @for m in &mails {
                    article.mail {
                        header { strong { (m.subject) } " " small { "to " (m.to_email) " · " (m.created_at.to_rfc3339()) } }
                        pre { (m.body_text) }
                    }
                }
            }
        }
    };
    Ok(page(
        &Chrome::visitor(&csrf),
        "Simulator mailbox",
        Some("/simulator/mail"),
        body,
    ))
}
