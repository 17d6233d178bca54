//! Switchboard's pages, rendered on the server with maud. They work without JavaScript for
//! reading; `/static/app.js` (vendored, a few dozen lines) adds live updates over SSE.
//!
//! Every page but sign-in, sign-up and the simulator needs a session: the tenant comes from
//! it ([`switchboard_api::auth::Member`]), never from the URL or a form field.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{IntoResponse, Response, Route, get, post};
use switchboard_api::RouteTable;
use switchboard_services::{App, ServiceError};

mod agency;
mod auth;
mod dashboard;
mod inbox;
mod layout;
mod links;
mod live;
mod oidc;
mod search;
mod settings;
mod simulator;

/// Every page route's path: the isolation sweep (`tests/e2e/isolation.rs`) must cover each
/// one, so a new route cannot be forgotten there.
pub fn route_list() -> Vec<&'static str> {
    table(Route::new()).into_parts().1
}

/// Adds the page routes to `route` (the binary attaches `App` as data).
pub fn routes(route: Route) -> Route {
    table(route).into_parts().0
}

fn table(route: Route) -> RouteTable {
    let mut t = RouteTable::new(route);
    t.at("/", get(dashboard::page_handler));
    t.at("/login", get(auth::login_page).post(auth::login));
    t.at("/signup", get(auth::signup_page).post(auth::signup));
    t.at(
        "/onboarding",
        get(auth::onboarding_page).post(auth::onboarding),
    );
    t.at("/logout", post(auth::logout));
    t.at("/invite/:token", get(links::invite_page));
    t.at("/invite/:token/accept", post(links::accept_invite));
    t.at(
        "/verify-email/:token",
        get(links::verify_page).post(links::verify),
    );
    t.at(
        "/password/forgot",
        get(links::forgot_page).post(links::forgot),
    );
    t.at(
        "/password/reset/:token",
        get(links::reset_page).post(links::reset),
    );
    t.at("/simulator/mail", get(links::mailbox));
    t.at("/auth/oidc/start", get(oidc::start));
    t.at("/auth/oidc/callback", get(oidc::callback));
    t.at("/activity/:id", get(dashboard::row_fragment));
    t.at("/agency", get(agency::page_handler));
    t.at("/agency/sub-accounts", post(agency::create));
    t.at("/switch", post(agency::switch));
    t.at("/search", get(search::page_handler));
    t.at("/settings", get(settings::page_handler));
    t.at("/settings/profile", post(settings::save_profile));
    t.at("/settings/twilio", post(settings::save_twilio));
    t.at("/settings/twilio/test", post(settings::twilio_test));
    t.at(
        "/settings/twilio/disconnect",
        post(settings::twilio_disconnect),
    );
    t.at("/settings/numbers", post(settings::add_number));
    t.at(
        "/settings/numbers/:id/remove",
        post(settings::remove_number),
    );
    t.at("/settings/api-keys", post(settings::create_key));
    t.at("/settings/api-keys/:id/revoke", post(settings::revoke_key));
    t.at("/settings/members/:id", post(settings::change_member));
    t.at("/settings/invites", post(settings::invite));
    t.at(
        "/settings/invites/:id/revoke",
        post(settings::revoke_invite),
    );
    t.at("/conversations", get(inbox::page_handler));
    t.at("/conversations/list", get(inbox::list_fragment));
    t.at("/conversations/:id/messages", post(inbox::send));
    t.at(
        "/conversations/:id/messages/:mid",
        get(inbox::message_fragment),
    );
    t.at(
        "/conversations/:id/messages/:mid/retry",
        post(inbox::send_again),
    );
    t.at("/conversations/:id/read", post(inbox::read));
    t.at("/conversations/:id/bot", post(inbox::bot));
    t.at("/events", get(live::events));
    t.at("/simulator", get(simulator::page_handler));
    t.at("/simulator/thread", get(simulator::thread_fragment));
    t.at("/simulator/send", post(simulator::send));
    t.at("/simulator/events", get(simulator::events));
    t.at("/static/app.css", get(layout::css));
    t.at("/static/app.js", get(layout::js));
    t.at("/static/favicon.svg", get(layout::icon));
    t.at("/favicon.ico", get(layout::icon));
    t
}

/// An error page: the status and a sentence, causes logged.
pub(crate) struct PageError(StatusCode, String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let markup = layout::bare(
            "",
            self.0.canonical_reason().unwrap_or("Error"),
            maud::html! {
                section.card.auth-card { h1 { (self.0.canonical_reason().unwrap_or("Error")) } p { (self.1) } p { a href="/" { "Back to Switchboard" } } }
            },
        );
        (self.0, markup).into_response()
    }
}

impl From<PageError> for poem::Error {
    fn from(e: PageError) -> Self {
        poem::Error::from_response(e.into_response())
    }
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => PageError(
                StatusCode::NOT_FOUND,
                "Nothing here: it does not exist or is not yours.".into(),
            ),
            ServiceError::Forbidden(m) => PageError(StatusCode::FORBIDDEN, m),
            ServiceError::Mail(m) => {
                tracing::warn!(error = %m, "mail not sent");
                PageError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The mail could not be sent just now; try again in a minute.".into(),
                )
            }
            ServiceError::Invalid { .. } | ServiceError::Conflict(_) => {
                PageError(StatusCode::BAD_REQUEST, e.to_string())
            }
            other => {
                tracing::error!(error = %other, "page failed");
                PageError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side; it has been logged.".into(),
                )
            }
        }
    }
}

pub(crate) type AppData<'a> = Data<&'a Arc<App>>;

/// `s` percent-encoded for a query string value.
pub(crate) fn url_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap_or_default()[1..].to_string()
}

/// An optional phone field: empty is `None`, anything else must be E.164.
///
/// # Errors
/// [`ServiceError::Invalid`] naming `field`.
pub(crate) fn optional_phone(
    field: &'static str,
    value: Option<&str>,
) -> Result<Option<switchboard_domain::phone::E164>, ServiceError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(p) => switchboard_domain::phone::E164::parse(p)
            .map(Some)
            .map_err(|e| ServiceError::invalid(field, e.to_string())),
    }
}
