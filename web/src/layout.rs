//! The page shell and the vendored static assets.

use maud::{DOCTYPE, Markup, html};
use poem::http::header;
use poem::{IntoResponse, Response, handler};
use switchboard_api::auth::{CSRF_FIELD, CsrfToken, Member};
use switchboard_services::App;
use switchboard_services::agency::{self, Reach};

use crate::PageError;

const CSS: &str = include_str!("../static/app.css");
const JS: &str = include_str!("../static/app.js");
const ICON: &str = include_str!("../static/favicon.svg");

/// The sidebar: (path, label, built). Entries not built yet are shown, muted, so the shape of
/// the product is visible, but are not links.
const NAV: &[(&str, &str, bool)] = &[
    ("/", "Dashboard", true),
    ("/conversations", "Conversations", true),
    ("/contacts", "Contacts", false),
    ("/bots", "Bots", false),
    ("/routing", "Routing", false),
    ("/campaigns", "Campaigns", false),
    ("/analytics", "Analytics", false),
    ("/settings", "Settings", true),
    ("/billing", "Billing", false),
];

/// Who the page is for: the signed-in member (sidebar, switcher, sign-out) or nobody (the
/// sign-in pages and the public simulator), and the CSRF token its forms carry.
pub(crate) struct Chrome<'a> {
    pub csrf: &'a str,
    pub member: Option<&'a Member>,
    /// The member's tenants (the switcher) and agency (the Agency entry); empty for visitors.
    pub reach: Reach,
}

impl<'a> Chrome<'a> {
    /// A member's page chrome. Loaded by full pages only (fragments, streams and form posts
    /// do not need the switcher).
    ///
    /// # Errors
    /// Database errors.
    pub(crate) async fn member(
        app: &App,
        member: &'a Member,
        csrf: &'a CsrfToken,
    ) -> Result<Self, PageError> {
        Ok(Self {
            csrf: &csrf.0,
            member: Some(member),
            reach: agency::reach(app, member.user_id).await?,
        })
    }

    pub(crate) fn visitor(csrf: &'a CsrfToken) -> Self {
        Self {
            csrf: &csrf.0,
            member: None,
            reach: Reach::default(),
        }
    }

    /// The hidden CSRF field every state-changing form carries.
    pub(crate) fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name=(CSRF_FIELD) value=(self.csrf); }
    }
}

fn head(title: &str, csrf: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="csrf-token" content=(csrf);
            title { (title) " · Switchboard" }
            link rel="icon" type="image/svg+xml" href="/static/favicon.svg";
            link rel="stylesheet" href="/static/app.css";
            script src="/static/app.js" defer {}
        }
    }
}

/// A full page: sidebar, top bar, and `body` in the main area. `active` is the current path.
pub(crate) fn page(chrome: &Chrome, title: &str, active: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, chrome.csrf))
            body {
                aside.sidebar {
                    a.logo href="/" { span.dot {} "Switchboard" }
                    nav {
                        @if chrome.member.is_some() {
                            @for (href, label, built) in NAV {
                                @if *built {
                                    a href=(href) class=[(active == Some(*href)).then_some("active")] { (label) }
                                } @else {
                                    span.soon title="Not available yet" { (label) }
                                }
                            }
                        }
                        @if chrome.reach.agency.is_some() {
                            a href="/agency" class=[(active == Some("/agency")).then_some("active")] { "Agency" }
                        }
                        a href="/simulator" class=[(active == Some("/simulator")).then_some("active")] { "Simulator" }
                        a href="/api/docs" { "API" }
                    }
                }
                main.main {
                    header.topbar {
                        h1 { (title) }
                        @if let Some(m) = chrome.member {
                            form.search method="get" action="/search" role="search" {
                                input type="search" name="q" placeholder="Search contacts and messages" aria-label="Search";
                            }
                            @if chrome.reach.choices.len() > 1 {
                                form.switcher method="post" action="/switch" {
                                    (chrome.csrf_field())
                                    select name="tenant" aria-label="Business" {
                                        @for c in &chrome.reach.choices {
                                            option value=(c.tenant_id) selected[c.tenant_id == m.ctx().tenant_id()] { (c.name) }
                                        }
                                    }
                                    button.secondary type="submit" { "Switch" }
                                }
                            } @else {
                                span.workspace title="Current business" { (m.workspace.name) }
                            }
                            span.who-am-i { (m.email) }
                            form.signout method="post" action="/logout" {
                                (chrome.csrf_field())
                                button.secondary type="submit" { "Sign out" }
                            }
                        } @else {
                            a.signin href="/login" { "Sign in" }
                        }
                    }
                    (body)
                }
            }
        }
    }
}

/// A page without the app's chrome (sign-in, sign-up, errors): a centered card.
pub(crate) fn bare(csrf: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, csrf))
            body.bare {
                main.auth {
                    a.logo href="/" { span.dot {} "Switchboard" }
                    (body)
                }
            }
        }
    }
}

/// A [`bare`] page holding one card titled `title`, with `error` above `body`.
pub(crate) fn card_page(csrf: &str, title: &str, error: Option<&str>, body: Markup) -> Markup {
    bare(
        csrf,
        title,
        html! {
            section.card.auth-card {
                h1 { (title) }
                @if let Some(e) = error { p.form-error role="alert" { (e) } }
                (body)
            }
        },
    )
}

/// The business's name, time zone (with every IANA name offered) and notification phone
/// fields, as onboarding, sub-accounts and settings ask for them.
pub(crate) fn business_fields(name: &str, time_zone: &str, notify_phone: &str) -> Markup {
    html! {
        label { "Business name" input name="business_name" value=(name) maxlength="100" required; }
        label { "Time zone " small { "(business and quiet hours are local)" }
            input name="time_zone" value=(time_zone) list="time-zones" required;
            datalist id="time-zones" {
                @for tz in switchboard_services::accounts::time_zones() { option value=(tz) {} }
            }
        }
        label { "Your mobile " small { "(the bot texts you each new lead once it has their ZIP; optional)" }
            input type="tel" name="notify_phone" value=(notify_phone) placeholder="+15125550123";
        }
    }
}

fn asset(content_type: &str, body: &'static str) -> Response {
    Response::builder()
        .content_type(content_type)
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .body(body)
}

#[handler]
pub(crate) fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

#[handler]
pub(crate) fn js() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", JS)
}

#[handler]
pub(crate) fn icon() -> impl IntoResponse {
    asset("image/svg+xml", ICON)
}

/// "3 min ago" style time for lists, with the exact time as a tooltip elsewhere.
pub(crate) fn ago(at: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (chrono::Utc::now() - at).num_seconds().max(0);
    match secs {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86399 => format!("{} h ago", secs / 3600),
        _ => at.format("%b %-d").to_string(),
    }
}
