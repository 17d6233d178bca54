//! The inbound hot path: many webhooks written in ONE transaction (group commit) with a fixed,
//! small number of set-based statements per tenant in the batch, instead of several statements
//! per webhook.
//!
//! Per batch: one `SELECT` finds MessageSids already stored (Twilio retries); then, for each
//! tenant in the batch: one `SELECT` of the known senders (plus one multi-row insert when some
//! are new), one multi-row conversation upsert, one multi-row message insert, and one
//! `UPDATE` per compliance keyword (rare). Known senders' rows are not rewritten: every page a
//! webhook dirties is written to the WAL at commit, and that write is the largest cost here. The caller owns
//! the transaction, so it can enqueue jobs in it and answer each webhook only after the commit.
//!
//! SQLite dialect (the embedded default). Every statement binds the tenant id of its group.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use switchboard_domain::compliance::{Keyword, KeywordKind};
use switchboard_domain::message::{Direction, MessageStatus, Source};
use switchboard_domain::{ContactId, ConversationId, MessageId, PhoneNumberId, TenantId};
use uuid::Uuid;

/// One inbound text, already verified and parsed at the edge.
#[derive(Clone, Debug)]
pub struct NewInbound {
    pub tenant_id: TenantId,
    pub phone_number_id: PhoneNumberId,
    /// Sender, E.164.
    pub from: String,
    /// Twilio MessageSid (or a simulator sid).
    pub provider_sid: String,
    pub body: String,
    /// JSON array of `{url, content_type}`, `None` for plain SMS.
    pub media: Option<serde_json::Value>,
    pub segments: i32,
    pub encoding: &'static str,
    pub received_at: DateTime<Utc>,
    /// The compliance keyword the text is (ours, or Twilio's `OptOutType`), if any.
    pub keyword: Option<Keyword>,
    /// Twilio Advanced Opt-Out already handled the keyword (`OptOutType` present).
    pub provider_replied: bool,
}

/// The result for one [`NewInbound`] of a batch, in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    /// Stored now.
    Stored {
        message_id: MessageId,
        conversation_id: ConversationId,
        contact_id: ContactId,
        /// The compliance action that took effect: an opt-out always does; an opt-in only when
        /// the sender was opted out (or Twilio re-subscribed them), otherwise "YES" is just a
        /// reply for the bot.
        compliance: Option<KeywordKind>,
    },
    /// A message with this MessageSid was already stored (a retried webhook): nothing written.
    Duplicate,
}

/// Characters of a message kept as the conversation's preview.
pub const PREVIEW_CHARS: usize = 120;

/// The inbox preview of a body: its first [`PREVIEW_CHARS`] characters, or a media marker.
pub fn preview(body: &str, has_media: bool) -> String {
    if body.trim().is_empty() && has_media {
        return "[media]".to_string();
    }
    body.chars().take(PREVIEW_CHARS).collect()
}

/// Writes a batch of inbound texts inside the caller's transaction.
///
/// # Errors
/// Any database error; the caller rolls the whole batch back and fails every webhook in it
/// (Twilio then retries them).
pub async fn write_batch(
    conn: &mut SqliteConnection,
    items: &[NewInbound],
) -> Result<Vec<Written>, sqlx::Error> {
    let mut results = vec![Written::Duplicate; items.len()];

    // 1. Duplicates: already stored, or repeated inside this batch.
    let mut seen = HashSet::new();
    let mut fresh: Vec<usize> = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        if seen.insert(it.provider_sid.as_str()) {
            fresh.push(i);
        }
    }
    if fresh.is_empty() {
        return Ok(results);
    }
    let mut q =
        QueryBuilder::<Sqlite>::new("SELECT provider_sid FROM messages WHERE provider_sid IN (");
    let mut sep = q.separated(", ");
    for &i in &fresh {
        sep.push_bind(items[i].provider_sid.as_str());
    }
    q.push(")");
    let stored: HashSet<String> = q
        .build()
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    fresh.retain(|&i| !stored.contains(&items[i].provider_sid));

    // 2. Per tenant: contacts, conversations, messages, compliance.
    let mut by_tenant: HashMap<TenantId, Vec<usize>> = HashMap::new();
    for &i in &fresh {
        by_tenant.entry(items[i].tenant_id).or_default().push(i);
    }
    for (tenant, idx) in by_tenant {
        write_tenant_group(conn, tenant, items, &idx, &mut results).await?;
    }
    Ok(results)
}

async fn write_tenant_group(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    items: &[NewInbound],
    idx: &[usize],
    results: &mut [Written],
) -> Result<(), sqlx::Error> {
    // Contacts: known senders are only read (no page written for them); new ones inserted.
    let mut phones: Vec<(&str, DateTime<Utc>)> = Vec::new();
    for &i in idx {
        let it = &items[i];
        if !phones.iter().any(|(p, _)| *p == it.from) {
            phones.push((it.from.as_str(), it.received_at));
        }
    }
    let mut contacts: HashMap<String, (ContactId, bool)> = HashMap::new();
    let mut q = QueryBuilder::<Sqlite>::new(
        "SELECT id, phone, opted_out_at IS NOT NULL FROM contacts WHERE tenant_id = ",
    );
    q.push_bind(tenant.uuid()).push(" AND phone IN (");
    let mut sep = q.separated(", ");
    for (phone, _) in &phones {
        sep.push_bind(*phone);
    }
    q.push(")");
    for row in q.build().fetch_all(&mut *conn).await? {
        contacts.insert(row.get(1), (ContactId(row.get(0)), row.get(2)));
    }
    let new: Vec<&(&str, DateTime<Utc>)> = phones
        .iter()
        .filter(|(p, _)| !contacts.contains_key(*p))
        .collect();
    if !new.is_empty() {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO contacts (id, tenant_id, phone, name, status, fields, opted_out_at, opt_out_keyword, created_at, updated_at) ",
        );
        q.push_values(&new, |mut b, (phone, at)| {
            b.push_bind(Uuid::now_v7())
                .push_bind(tenant.uuid())
                .push_bind(*phone)
                .push_bind(None::<String>)
                .push_bind("new")
                .push_bind(None::<String>)
                .push_bind(None::<DateTime<Utc>>)
                .push_bind(None::<String>)
                .push_bind(*at)
                .push_bind(*at);
        });
        // Another process may have inserted the same sender meanwhile (Postgres, several
        // writers): take its row.
        q.push(" ON CONFLICT (tenant_id, phone) DO UPDATE SET phone = excluded.phone RETURNING id, phone, opted_out_at IS NOT NULL");
        for row in q.build().fetch_all(&mut *conn).await? {
            contacts.insert(row.get(1), (ContactId(row.get(0)), row.get(2)));
        }
    }

    // Conversations: one row per (contact, number); unread grows by the texts in this batch.
    struct Thread {
        contact: ContactId,
        number: PhoneNumberId,
        unread: i32,
        last_at: DateTime<Utc>,
        preview: String,
    }
    let mut threads: Vec<Thread> = Vec::new();
    for &i in idx {
        let it = &items[i];
        let contact = contacts[&it.from].0;
        let preview = preview(&it.body, it.media.is_some());
        match threads
            .iter_mut()
            .find(|t| t.contact == contact && t.number == it.phone_number_id)
        {
            Some(t) => {
                t.unread += 1;
                if it.received_at >= t.last_at {
                    t.last_at = it.received_at;
                    t.preview = preview;
                }
            }
            None => threads.push(Thread {
                contact,
                number: it.phone_number_id,
                unread: 1,
                last_at: it.received_at,
                preview,
            }),
        }
    }
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO conversations (id, tenant_id, contact_id, phone_number_id, status, bot_paused, bot_state, unread_count, last_message_at, last_message_preview, created_at, updated_at) ",
    );
    q.push_values(&threads, |mut b, t| {
        b.push_bind(Uuid::now_v7())
            .push_bind(tenant.uuid())
            .push_bind(t.contact.uuid())
            .push_bind(t.number.uuid())
            .push_bind("open")
            .push_bind(false)
            .push_bind(None::<String>)
            .push_bind(t.unread)
            .push_bind(t.last_at)
            .push_bind(t.preview.as_str())
            .push_bind(t.last_at)
            .push_bind(t.last_at);
    });
    q.push(
        " ON CONFLICT (tenant_id, contact_id, phone_number_id) DO UPDATE SET \
         unread_count = conversations.unread_count + excluded.unread_count, \
         last_message_preview = CASE WHEN excluded.last_message_at >= conversations.last_message_at \
             THEN excluded.last_message_preview ELSE conversations.last_message_preview END, \
         last_message_at = MAX(conversations.last_message_at, excluded.last_message_at), \
         status = 'open', updated_at = excluded.updated_at \
         RETURNING id, contact_id, phone_number_id",
    );
    let mut conversations: HashMap<(ContactId, PhoneNumberId), ConversationId> = HashMap::new();
    for row in q.build().fetch_all(&mut *conn).await? {
        conversations.insert(
            (ContactId(row.get(1)), PhoneNumberId(row.get(2))),
            ConversationId(row.get(0)),
        );
    }

    // Compliance, in arrival order: "STOP" then "START" in one batch ends subscribed, and an
    // opt-in keyword only counts for a sender who is opted out at that point.
    let mut opted_out: HashMap<ContactId, bool> = contacts.values().copied().collect();
    let mut effects: Vec<Option<KeywordKind>> = Vec::with_capacity(idx.len());
    for &i in idx {
        let it = &items[i];
        let contact = contacts[&it.from].0;
        let effect = match it.keyword.map(|k| k.kind) {
            Some(KeywordKind::OptOut) => {
                opted_out.insert(contact, true);
                Some(KeywordKind::OptOut)
            }
            Some(KeywordKind::OptIn) if it.provider_replied || opted_out[&contact] => {
                opted_out.insert(contact, false);
                Some(KeywordKind::OptIn)
            }
            Some(KeywordKind::Help) => Some(KeywordKind::Help),
            _ => None,
        };
        effects.push(effect);
    }

    // Messages.
    let ids: Vec<MessageId> = idx.iter().map(|_| MessageId::new()).collect();
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO messages (id, tenant_id, conversation_id, contact_id, direction, source, body, media, provider_sid, status, \
         error_code, error_message, idempotency_key, segments, encoding, attempts, handled_at, compliance, provider_replied, \
         created_at, updated_at, sent_at) ",
    );
    q.push_values(
        idx.iter().zip(&ids).zip(&effects),
        |mut b, ((&i, id), effect)| {
            let it = &items[i];
            let contact = contacts[&it.from].0;
            let conversation = conversations[&(contact, it.phone_number_id)];
            b.push_bind(id.uuid())
                .push_bind(tenant.uuid())
                .push_bind(conversation.uuid())
                .push_bind(contact.uuid())
                .push_bind(Direction::Inbound.as_str())
                .push_bind(Source::Customer.as_str())
                .push_bind(it.body.as_str())
                .push_bind(it.media.as_ref().map(|m| m.to_string()))
                .push_bind(it.provider_sid.as_str())
                .push_bind(MessageStatus::Received.as_str())
                .push_bind(None::<i32>)
                .push_bind(None::<String>)
                .push_bind(None::<String>)
                .push_bind(it.segments)
                .push_bind(it.encoding)
                .push_bind(0_i32)
                .push_bind(None::<DateTime<Utc>>)
                .push_bind(effect.map(KeywordKind::as_str))
                .push_bind(it.provider_replied)
                .push_bind(it.received_at)
                .push_bind(it.received_at)
                .push_bind(None::<DateTime<Utc>>);
        },
    );
    q.build().execute(&mut *conn).await?;

    for ((&i, id), effect) in idx.iter().zip(&ids).zip(&effects) {
        let it = &items[i];
        let contact = contacts[&it.from].0;
        match (effect, it.keyword) {
            (Some(KeywordKind::OptOut), Some(keyword)) => {
                sqlx::query(
                    "UPDATE contacts SET opted_out_at = ?, opt_out_keyword = ?, updated_at = ? WHERE tenant_id = ? AND id = ?",
                )
                .bind(it.received_at)
                .bind(keyword.word)
                .bind(it.received_at)
                .bind(tenant.uuid())
                .bind(contact.uuid())
                .execute(&mut *conn)
                .await?;
            }
            (Some(KeywordKind::OptIn), _) => {
                sqlx::query(
                    "UPDATE contacts SET opted_out_at = NULL, opt_out_keyword = NULL, updated_at = ? WHERE tenant_id = ? AND id = ?",
                )
                .bind(it.received_at)
                .bind(tenant.uuid())
                .bind(contact.uuid())
                .execute(&mut *conn)
                .await?;
            }
            _ => {}
        }
        results[i] = Written::Stored {
            message_id: *id,
            conversation_id: conversations[&(contact, it.phone_number_id)],
            contact_id: contact,
            compliance: *effect,
        };
    }
    Ok(())
}
