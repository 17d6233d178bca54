//! The page shell and the vendored static assets.

use maud::{DOCTYPE, Markup, html};
use poem::http::header;
use poem::{IntoResponse, Response, handler};

const CSS: &str = include_str!("../static/app.css");
const JS: &str = include_str!("../static/app.js");

/// One entry of the sidebar: (path, label).
const NAV: &[(&str, &str)] = &[
    ("/conversations", "Conversations"),
    ("/simulator", "Simulator"),
    ("/api/docs", "API"),
];

/// A full page: sidebar, top bar, and `body` in the main area. `active` is the current path.
pub(crate) fn page(title: &str, active: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Switchboard" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                aside.sidebar {
                    a.logo href="/" { span.dot {} "Switchboard" }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=[(active == Some(*href)).then_some("active")] { (label) }
                        }
                    }
                }
                main.main {
                    header.topbar { h1 { (title) } }
                    (body)
                }
            }
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
