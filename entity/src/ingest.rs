//! The inbound hot path: many webhooks written in ONE transaction (group commit).
//!
//! This runs synchronously on the inbound writer's own thread through its own SQLite
//! connection (rusqlite): each statement is a function call into SQLite, where through sqlx
//! each would be a round trip to SQLite's thread and back (two context switches), about seven
//! per batch. Statements are prepared once and cached; per webhook: a MessageSid lookup
//! (Twilio may send a webhook more than once), a check that the number is still routed here
//! (once per number per batch: the route may come from a cache), the sender's contact row (found by rowid through
//! the writer's [`RowCache`], else by its unique index; inserted only for a new sender: a
//! known sender's row is not rewritten, since every page a webhook dirties is written to the
//! WAL at commit, the largest cost here), the conversation row (updated in place, found the
//! same way; inserted for a new thread), a message insert, and an `UPDATE` per compliance
//! keyword (rare). The caller owns the transaction, enqueues the jobs in it, and answers each
//! webhook only after the commit.
//!
//! Values are stored exactly as sqlx/sea-orm store them (UUIDs as 16-byte blobs, times as
//! RFC 3339 text), so the rest of the application reads these rows like any other.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
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
    /// Correlation id of the webhook (handed on to the job that handles the text).
    pub request_id: Option<String>,
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
    /// The number the text was routed to was removed (released) since the route was read,
    /// perhaps by another process, and perhaps taken by another tenant since: nothing
    /// written. The caller reads the route again.
    Released,
}

/// The answer for a second copy of a text in one batch (a Twilio retry that came while the
/// first was queued): a duplicate of a stored text, but `Released` like its first copy when
/// that one was not stored, so neither copy is answered 200 for a text nobody stored.
fn copy_of(first: &Written) -> Written {
    match first {
        Written::Released => Written::Released,
        Written::Stored { .. } | Written::Duplicate => Written::Duplicate,
    }
}

/// Characters of a message kept as the conversation's preview.
pub const PREVIEW_CHARS: usize = 120;

/// The inbox preview of a body: its first [`PREVIEW_CHARS`] characters, or a media marker.
pub fn preview(body: &str, has_media: bool) -> String {
    if switchboard_domain::message::is_media_only(body, has_media) {
        return "[media]".to_string();
    }
    body.chars().take(PREVIEW_CHARS).collect()
}

/// A time as sqlx encodes `DateTime<Utc>` for SQLite (RFC 3339, automatic sub-seconds).
pub fn sql_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

fn blob(id: Uuid) -> [u8; 16] {
    *id.as_bytes()
}

fn uuid_of(bytes: Vec<u8>) -> rusqlite::Result<Uuid> {
    Uuid::from_slice(&bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// The compliance action `it` takes for a sender who is (`opted_out`) or is not opted out.
fn compliance_effect(it: &NewInbound, opted_out: bool) -> Option<KeywordKind> {
    match it.keyword.map(|k| k.kind) {
        // A repeated STOP from a contact who is already opted out changes nothing and gets no
        // second confirmation (unless Twilio handled it: then only the record changes).
        Some(KeywordKind::OptOut) if it.provider_replied || !opted_out => Some(KeywordKind::OptOut),
        Some(KeywordKind::OptIn) if it.provider_replied || opted_out => Some(KeywordKind::OptIn),
        Some(KeywordKind::Help) => Some(KeywordKind::Help),
        _ => None,
    }
}

/// Most senders (and conversations) [`RowCache`] remembers; past that it starts over.
pub const ROW_CACHE_ENTRIES: usize = 50_000;

/// Where the inbound writer last found each recent sender's contact row and conversation row
/// (SQLite rowid and id), kept across batches by the writer (one per writer connection).
///
/// A text from a known sender then reaches its contact and its conversation with one B-tree
/// lookup each, by rowid, instead of a unique-index lookup followed by a table lookup (and the
/// conversation is updated in place instead of through an `INSERT … ON CONFLICT DO UPDATE …
/// RETURNING`, which SQLite runs as a trigger with a statement journal).
///
/// It is a hint, never the truth: every use re-reads the row by rowid *and* checks its id,
/// tenant and key columns in the same statement, so a row that was deleted, re-created,
/// renumbered (`VACUUM`) or written by a batch that rolled back is simply not found, and the
/// writer falls back to the unique-index lookup (and refreshes the entry).
#[derive(Debug, Default)]
pub struct RowCache {
    /// Tenant -> sender E.164 -> the contact row.
    contacts: HashMap<TenantId, HashMap<String, (i64, ContactId)>>,
    /// Entries in `contacts`, all tenants.
    contact_count: usize,
    /// (contact, our number) -> the conversation row.
    conversations: HashMap<(ContactId, PhoneNumberId), (i64, ConversationId)>,
}

impl RowCache {
    fn contact(&self, tenant: TenantId, phone: &str) -> Option<(i64, ContactId)> {
        self.contacts.get(&tenant)?.get(phone).copied()
    }

    fn remember_contact(&mut self, tenant: TenantId, phone: &str, row: (i64, ContactId)) {
        if self.contact_count >= ROW_CACHE_ENTRIES {
            self.contacts.clear();
            self.contact_count = 0;
        }
        let known = self.contacts.entry(tenant).or_default();
        if known.insert(phone.to_string(), row).is_none() {
            self.contact_count += 1;
        }
    }

    fn remember_conversation(
        &mut self,
        key: (ContactId, PhoneNumberId),
        row: (i64, ConversationId),
    ) {
        if self.conversations.len() >= ROW_CACHE_ENTRIES {
            self.conversations.clear();
        }
        self.conversations.insert(key, row);
    }
}

/// Writes a batch of inbound texts inside the caller's transaction, in arrival order.
///
/// `rows` is the writer's [`RowCache`]; it is read and refreshed here.
///
/// # Errors
/// Any database error; the caller rolls the whole batch back and fails every webhook in it
/// (Twilio then retries them).
pub fn write_batch(
    tx: &Transaction<'_>,
    items: &[NewInbound],
    rows: &mut RowCache,
) -> rusqlite::Result<Vec<Written>> {
    let mut results = vec![Written::Duplicate; items.len()];
    let mut seen = HashMap::new();
    let mut stored_sid = tx.prepare_cached("SELECT 1 FROM messages WHERE provider_sid = ?1")?;
    let mut number_live =
        tx.prepare_cached("SELECT 1 FROM phone_numbers WHERE id = ?1 AND released_at IS NULL")?;
    // Number -> still ours, read once per batch (the transaction holds the write lock).
    let mut numbers: HashMap<PhoneNumberId, bool> = HashMap::new();
    let mut contact_at = tx.prepare_cached(
        "SELECT opted_out_at IS NOT NULL FROM contacts WHERE rowid = ?1 AND id = ?2 AND tenant_id = ?3 AND phone = ?4",
    )?;
    let mut find_contact = tx.prepare_cached(
        "SELECT rowid, id, opted_out_at IS NOT NULL FROM contacts WHERE tenant_id = ?1 AND phone = ?2",
    )?;
    let mut new_contact = tx.prepare_cached(
        "INSERT INTO contacts (id, tenant_id, phone, name, status, fields, opted_out_at, opt_out_keyword, created_at, updated_at) \
         VALUES (?1, ?2, ?3, NULL, 'new', NULL, NULL, NULL, ?4, ?4)",
    )?;
    // A new text: one more unread, the preview and time of the latest text (texts of one
    // batch may arrive out of order), and the conversation reopens.
    let mut bump_conversation = tx.prepare_cached(
        "UPDATE conversations SET unread_count = unread_count + 1, \
         last_message_preview = CASE WHEN ?1 >= last_message_at THEN ?2 ELSE last_message_preview END, \
         last_message_at = MAX(last_message_at, ?1), status = 'open', updated_at = ?1 \
         WHERE rowid = ?3 AND id = ?4 AND tenant_id = ?5 AND contact_id = ?6 AND phone_number_id = ?7",
    )?;
    let mut find_conversation = tx.prepare_cached(
        "SELECT rowid, id FROM conversations WHERE tenant_id = ?1 AND contact_id = ?2 AND phone_number_id = ?3",
    )?;
    let mut new_conversation = tx.prepare_cached(
        "INSERT INTO conversations (id, tenant_id, contact_id, phone_number_id, status, bot_paused, bot_state, unread_count, \
         last_message_at, last_message_preview, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'open', 0, NULL, 1, ?5, ?6, ?5, ?5)",
    )?;
    let mut insert_message = tx.prepare_cached(
        "INSERT INTO messages (id, tenant_id, conversation_id, contact_id, direction, source, body, media, provider_sid, status, \
         error_code, error_message, idempotency_key, segments, encoding, attempts, handled_at, compliance, provider_replied, \
         created_at, updated_at, sent_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, NULL, NULL, ?11, ?12, 0, NULL, ?13, ?14, ?15, ?15, NULL)",
    )?;
    // Sender -> (contact, opted out now), kept through the batch so that "STOP" then "START"
    // in one batch ends subscribed, and an opt-in keyword only counts for a sender who is
    // opted out at that point.
    let mut contacts: HashMap<(TenantId, &str), (ContactId, bool)> = HashMap::new();

    for (i, it) in items.iter().enumerate() {
        if let Some(&first) = seen.get(it.provider_sid.as_str()) {
            results[i] = copy_of(&results[first]);
            continue;
        }
        seen.insert(it.provider_sid.as_str(), i);
        if stored_sid.exists([&it.provider_sid])? {
            continue;
        }
        let live = match numbers.get(&it.phone_number_id) {
            Some(live) => *live,
            None => {
                let live = number_live.exists([blob(it.phone_number_id.uuid())])?;
                numbers.insert(it.phone_number_id, live);
                live
            }
        };
        if !live {
            results[i] = Written::Released;
            continue;
        }
        let at = sql_time(it.received_at);
        let tenant = blob(it.tenant_id.uuid());
        let key = (it.tenant_id, it.from.as_str());
        let (contact, opted_out) = match contacts.get(&key) {
            Some(known) => *known,
            None => {
                let still = match rows.contact(it.tenant_id, &it.from) {
                    Some((rowid, id)) => contact_at
                        .query_row(params![rowid, blob(id.uuid()), tenant, it.from], |r| {
                            r.get::<_, bool>(0)
                        })
                        .optional()?
                        .map(|opted_out| (id, opted_out)),
                    None => None,
                };
                let known = match still {
                    Some(known) => known,
                    None => {
                        let found = find_contact
                            .query_row(params![tenant, it.from], |r| {
                                Ok((
                                    r.get::<_, i64>(0)?,
                                    r.get::<_, Vec<u8>>(1)?,
                                    r.get::<_, bool>(2)?,
                                ))
                            })
                            .optional()?;
                        let (rowid, id, opted_out) = match found {
                            Some((rowid, id, opted_out)) => {
                                (rowid, ContactId(uuid_of(id)?), opted_out)
                            }
                            None => {
                                let id = ContactId::new();
                                new_contact.execute(params![
                                    blob(id.uuid()),
                                    tenant,
                                    it.from,
                                    at
                                ])?;
                                (tx.last_insert_rowid(), id, false)
                            }
                        };
                        rows.remember_contact(it.tenant_id, &it.from, (rowid, id));
                        (id, opted_out)
                    }
                };
                contacts.insert(key, known);
                known
            }
        };
        let preview = preview(&it.body, it.media.is_some());
        let thread = (contact, it.phone_number_id);
        let (contact_blob, number_blob) = (blob(contact.uuid()), blob(it.phone_number_id.uuid()));
        let mut bump = |rowid: i64, id: ConversationId| {
            bump_conversation
                .execute(params![
                    at,
                    preview,
                    rowid,
                    blob(id.uuid()),
                    tenant,
                    contact_blob,
                    number_blob
                ])
                .map(|changed| changed == 1)
        };
        let conversation = match rows.conversations.get(&thread).copied() {
            Some((rowid, id)) if bump(rowid, id)? => id,
            _ => {
                let found = find_conversation
                    .query_row(params![tenant, contact_blob, number_blob], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })
                    .optional()?;
                let (rowid, id) = match found {
                    Some((rowid, id)) => {
                        let id = ConversationId(uuid_of(id)?);
                        // Found a moment ago in this transaction, which holds the write
                        // lock: not updating it would be a fault, so the batch fails.
                        if !bump(rowid, id)? {
                            return Err(rusqlite::Error::QueryReturnedNoRows);
                        }
                        (rowid, id)
                    }
                    None => {
                        let id = ConversationId::new();
                        new_conversation.execute(params![
                            blob(id.uuid()),
                            tenant,
                            contact_blob,
                            number_blob,
                            at,
                            preview
                        ])?;
                        (tx.last_insert_rowid(), id)
                    }
                };
                rows.remember_conversation(thread, (rowid, id));
                id
            }
        };

        let effect = compliance_effect(it, opted_out);
        let message = MessageId::new();
        insert_message.execute(params![
            blob(message.uuid()),
            tenant,
            blob(conversation.uuid()),
            blob(contact.uuid()),
            Direction::Inbound.as_str(),
            Source::Customer.as_str(),
            it.body,
            it.media.as_ref().map(|m| m.to_string()),
            it.provider_sid,
            MessageStatus::Received.as_str(),
            it.segments,
            it.encoding,
            effect.map(KeywordKind::as_str),
            it.provider_replied,
            at,
        ])?;
        match (effect, it.keyword) {
            (Some(KeywordKind::OptOut), Some(keyword)) => {
                tx.prepare_cached(
                    "UPDATE contacts SET opted_out_at = ?1, opt_out_keyword = ?2, updated_at = ?1 WHERE tenant_id = ?3 AND id = ?4",
                )?
                .execute(params![at, keyword.word, tenant, blob(contact.uuid())])?;
                contacts.insert(key, (contact, true));
            }
            (Some(KeywordKind::OptIn), _) => {
                tx.prepare_cached(
                    "UPDATE contacts SET opted_out_at = NULL, opt_out_keyword = NULL, updated_at = ?1 WHERE tenant_id = ?2 AND id = ?3",
                )?
                .execute(params![at, tenant, blob(contact.uuid())])?;
                contacts.insert(key, (contact, false));
            }
            _ => {}
        }
        results[i] = Written::Stored {
            message_id: message,
            conversation_id: conversation,
            contact_id: contact,
            compliance: effect,
        };
    }
    Ok(results)
}

/// [`write_batch`] on Postgres, inside the caller's transaction.
///
/// Each item first binds its tenant for row-level security (`app.tenant_id`, local to the
/// transaction), so a batch that spans tenants writes every row under its own tenant. A
/// sender is found or created in one statement (insert, or the existing row when the insert
/// conflicts); when a concurrent transaction created the same sender a moment ago, the
/// statement's snapshot may not show that row yet, and it runs once more.
///
/// # Errors
/// Any database error; the caller rolls the whole batch back.
pub async fn write_batch_pg(
    tx: &mut sqlx::PgConnection,
    items: &[NewInbound],
) -> Result<Vec<Written>, sqlx::Error> {
    let mut results = vec![Written::Duplicate; items.len()];
    let mut seen = HashMap::new();
    let mut contacts: HashMap<(TenantId, &str), (ContactId, bool)> = HashMap::new();
    let mut numbers: HashMap<PhoneNumberId, bool> = HashMap::new();
    let mut bound: Option<TenantId> = None;
    for (i, it) in items.iter().enumerate() {
        if let Some(&first) = seen.get(it.provider_sid.as_str()) {
            results[i] = copy_of(&results[first]);
            continue;
        }
        seen.insert(it.provider_sid.as_str(), i);
        if bound != Some(it.tenant_id) {
            crate::tenancy::bind_tenant_pg(&mut *tx, it.tenant_id).await?;
            bound = Some(it.tenant_id);
        }
        let stored: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM messages WHERE provider_sid = $1")
                .bind(&it.provider_sid)
                .fetch_optional(&mut *tx)
                .await?;
        if stored.is_some() {
            continue;
        }
        let live = match numbers.get(&it.phone_number_id) {
            Some(live) => *live,
            None => {
                let live: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM phone_numbers WHERE id = $1 AND released_at IS NULL",
                )
                .bind(it.phone_number_id.uuid())
                .fetch_optional(&mut *tx)
                .await?;
                numbers.insert(it.phone_number_id, live.is_some());
                live.is_some()
            }
        };
        if !live {
            results[i] = Written::Released;
            continue;
        }
        let tenant = it.tenant_id.uuid();
        let key = (it.tenant_id, it.from.as_str());
        let (contact, opted_out) = match contacts.get(&key) {
            Some(known) => *known,
            None => {
                let mut found = None;
                for _ in 0..2 {
                    found = sqlx::query_as::<_, (Uuid, bool)>(
                        "WITH ins AS (INSERT INTO contacts (id, tenant_id, phone, status, created_at, updated_at) \
                         VALUES ($1, $2, $3, 'new', $4, $4) ON CONFLICT (tenant_id, phone) DO NOTHING RETURNING id) \
                         SELECT id, false FROM ins UNION ALL \
                         SELECT id, opted_out_at IS NOT NULL FROM contacts WHERE tenant_id = $2 AND phone = $3 LIMIT 1",
                    )
                    .bind(ContactId::new().uuid())
                    .bind(tenant)
                    .bind(&it.from)
                    .bind(it.received_at)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if found.is_some() {
                        break;
                    }
                }
                let (id, opted_out) = found.ok_or(sqlx::Error::RowNotFound)?;
                let known = (ContactId(id), opted_out);
                contacts.insert(key, known);
                known
            }
        };
        let conversation: Uuid = sqlx::query_scalar(
            "INSERT INTO conversations (id, tenant_id, contact_id, phone_number_id, status, bot_paused, bot_state, unread_count, \
             last_message_at, last_message_preview, created_at, updated_at) VALUES ($1, $2, $3, $4, 'open', false, NULL, 1, $5, $6, $5, $5) \
             ON CONFLICT (tenant_id, contact_id, phone_number_id) DO UPDATE SET \
             unread_count = conversations.unread_count + 1, \
             last_message_preview = CASE WHEN excluded.last_message_at >= conversations.last_message_at \
                 THEN excluded.last_message_preview ELSE conversations.last_message_preview END, \
             last_message_at = GREATEST(conversations.last_message_at, excluded.last_message_at), \
             status = 'open', updated_at = excluded.updated_at \
             RETURNING id",
        )
        .bind(ConversationId::new().uuid())
        .bind(tenant)
        .bind(contact.uuid())
        .bind(it.phone_number_id.uuid())
        .bind(it.received_at)
        .bind(preview(&it.body, it.media.is_some()))
        .fetch_one(&mut *tx)
        .await?;
        let conversation = ConversationId(conversation);
        let effect = compliance_effect(it, opted_out);
        let message = MessageId::new();
        sqlx::query(
            "INSERT INTO messages (id, tenant_id, conversation_id, contact_id, direction, source, body, media, provider_sid, status, \
             segments, encoding, attempts, compliance, provider_replied, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::json, $9, $10, $11, $12, 0, $13, $14, $15, $15)",
        )
        .bind(message.uuid())
        .bind(tenant)
        .bind(conversation.uuid())
        .bind(contact.uuid())
        .bind(Direction::Inbound.as_str())
        .bind(Source::Customer.as_str())
        .bind(&it.body)
        .bind(it.media.as_ref().map(|m| m.to_string()))
        .bind(&it.provider_sid)
        .bind(MessageStatus::Received.as_str())
        .bind(it.segments)
        .bind(it.encoding)
        .bind(effect.map(KeywordKind::as_str))
        .bind(it.provider_replied)
        .bind(it.received_at)
        .execute(&mut *tx)
        .await?;
        match (effect, it.keyword) {
            (Some(KeywordKind::OptOut), Some(keyword)) => {
                sqlx::query(
                    "UPDATE contacts SET opted_out_at = $1, opt_out_keyword = $2, updated_at = $1 WHERE tenant_id = $3 AND id = $4",
                )
                .bind(it.received_at)
                .bind(keyword.word)
                .bind(tenant)
                .bind(contact.uuid())
                .execute(&mut *tx)
                .await?;
                contacts.insert(key, (contact, true));
            }
            (Some(KeywordKind::OptIn), _) => {
                sqlx::query(
                    "UPDATE contacts SET opted_out_at = NULL, opt_out_keyword = NULL, updated_at = $1 WHERE tenant_id = $2 AND id = $3",
                )
                .bind(it.received_at)
                .bind(tenant)
                .bind(contact.uuid())
                .execute(&mut *tx)
                .await?;
                contacts.insert(key, (contact, false));
            }
            _ => {}
        }
        results[i] = Written::Stored {
            message_id: message,
            conversation_id: conversation,
            contact_id: contact,
            compliance: effect,
        };
    }
    Ok(results)
}
