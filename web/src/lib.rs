//! Switchboard's pages, rendered on the server with maud. They work without JavaScript for
//! reading; `/static/app.js` (vendored, a few dozen lines) adds live updates over SSE.
//!
//! Every page but sign-in, sign-up and the simulator needs a session: the tenant comes from
//! it ([`switchboard_api::auth::Member`]), never from the URL or a form field.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{IntoResponse, Response, Route, get, post};
use switchboard_services::{App, ServiceError};

mod agency;
mod auth;
mod dashboard;
mod inbox;
mod layout;
mod live;
mod oidc;
mod search;
mod settings;
mod simulator;

/// Adds the page routes to `route` (the binary attaches `App` as data).
pub fn routes(route: Route) -> Route {
    route
        .at("/", get(dashboard::page_handler))
        .at("/login", get(auth::login_page).post(auth::login))
        .at("/signup", get(auth::signup_page).post(auth::signup))
        .at(
            "/onboarding",
            get(auth::onboarding_page).post(auth::onboarding),
        )
        .at("/logout", post(auth::logout))
        .at("/auth/oidc/start", get(oidc::start))
        .at("/auth/oidc/callback", get(oidc::callback))
        .at("/activity/:id", get(dashboard::row_fragment))
        .at("/agency", get(agency::page_handler))
        .at("/agency/sub-accounts", post(agency::create))
        .at("/switch", post(agency::switch))
        .at("/search", get(search::page_handler))
        .at("/settings", get(settings::page_handler))
        .at("/settings/profile", post(settings::save_profile))
        .at("/settings/twilio", post(settings::save_twilio))
        .at("/settings/twilio/test", post(settings::twilio_test))
        .at(
            "/settings/twilio/disconnect",
            post(settings::twilio_disconnect),
        )
        .at("/settings/numbers", post(settings::add_number))
        .at(
            "/settings/numbers/:id/remove",
            post(settings::remove_number),
        )
        .at("/settings/api-keys", post(settings::create_key))
        .at("/settings/api-keys/:id/revoke", post(settings::revoke_key))
        .at("/settings/members/:id", post(settings::change_member))
        .at("/conversations", get(inbox::page_handler))
        .at("/conversations/list", get(inbox::list_fragment))
        .at("/conversations/:id/messages", post(inbox::send))
        .at(
            "/conversations/:id/messages/:mid",
            get(inbox::message_fragment),
        )
        .at("/conversations/:id/read", post(inbox::read))
        .at("/conversations/:id/bot", post(inbox::bot))
        .at("/events", get(live::events))
        .at("/simulator", get(simulator::page_handler))
        .at("/simulator/thread", get(simulator::thread_fragment))
        .at("/simulator/send", post(simulator::send))
        .at("/simulator/events", get(simulator::events))
        .at("/static/app.css", get(layout::css))
        .at("/static/app.js", get(layout::js))
        .at("/static/favicon.svg", get(layout::icon))
        .at("/favicon.ico", get(layout::icon))
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
