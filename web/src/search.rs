//! `/search?q=`: the top bar's search over the current business's contacts and messages.

use maud::{Markup, html};
use poem::handler;
use poem::web::Query;
use serde::Deserialize;
use switchboard_api::auth::{CsrfToken, Member};
use switchboard_services::conversations;

use crate::layout::{Chrome, ago, page};
use crate::{AppData, PageError};

#[derive(Deserialize, Default)]
pub(crate) struct Search {
    #[serde(default)]
    q: String,
}

/// `GET /search?q=`.
#[handler]
pub(crate) async fn page_handler(
    app: AppData<'_>,
    member: Member,
    csrf: CsrfToken,
    Query(s): Query<Search>,
) -> Result<Markup, PageError> {
    let found = conversations::search(app.0, member.ctx(), &s.q).await?;
    let body = html! {
        div.settings {
            section.card {
                form.row method="get" action="/search" role="search" {
                    input type="search" name="q" value=(s.q) placeholder="Name, phone or words from a message" aria-label="Search" autofocus;
                    button type="submit" { "Search" }
                }
                @if s.q.trim().chars().count() < 2 { p.hint { "Type at least 2 characters." } }
            }
            section.card {
                h2 { "Contacts (" (found.contacts.len()) ")" }
                @if found.contacts.is_empty() { p.empty { "No contact matches." } }
                ul.results {
                    @for (c, conversation) in &found.contacts {
                        li {
                            @match conversation {
                                Some(id) => a href={ "/conversations?c=" (id) } { (c.name.as_deref().unwrap_or(&c.phone)) },
                                None => span { (c.name.as_deref().unwrap_or(&c.phone)) },
                            }
                            " " small { (c.phone) }
                            @if c.opted_out_at.is_some() { " " span.pill.closed { "opted out" } }
                        }
                    }
                }
            }
            section.card {
                h2 { "Messages (" (found.messages.len()) ")" }
                @if found.messages.is_empty() { p.empty { "No message matches." } }
                ul.results {
                    @for m in &found.messages {
                        li {
                            a href={ "/conversations?c=" (m.conversation_id) } { (m.body) }
                            " " small { (ago(m.created_at)) }
                        }
                    }
                }
            }
        }
    };
    let chrome = Chrome::member(app.0, &member, &csrf).await?;
    Ok(page(&chrome, "Search", None, body))
}
