//! `/api/v1`: the tenant-scoped REST API. Authenticated with `Authorization: Bearer <API key>`;
//! every id is looked up within the key's tenant (another tenant's id is a 404).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::web::Data;
use poem_openapi::auth::Bearer;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, OpenApiService, SecurityScheme};
use switchboard_domain::{ConversationId, MessageId};
use switchboard_services::conversations::{self, ConversationSummary, MessageView};
use switchboard_services::{App, TenantCtx, messaging, tenancy};
use uuid::Uuid;

use crate::error::ApiError;

/// `Authorization: Bearer sb_…`: a tenant API key.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "api_key_checker")]
pub struct ApiKey(TenantCtx);

/// 401 for an unknown or revoked key; 503 when the key cannot be checked right now.
async fn api_key_checker(req: &Request, bearer: Bearer) -> poem::Result<TenantCtx> {
    let unauthorized = || poem::Error::from_status(poem::http::StatusCode::UNAUTHORIZED);
    let app = req.data::<Arc<App>>().ok_or_else(unauthorized)?;
    match tenancy::authenticate_api_key(app, &bearer.token).await {
        Ok(Some(ctx)) => Ok(ctx),
        Ok(None) => Err(unauthorized()),
        Err(e) => {
            tracing::error!(error = %e, "API key check failed");
            Err(poem::Error::from_status(
                poem::http::StatusCode::SERVICE_UNAVAILABLE,
            ))
        }
    }
}

/// A conversation in the inbox list.
#[derive(Debug, Object)]
pub struct Conversation {
    pub id: Uuid,
    pub contact_id: Uuid,
    pub contact_name: Option<String>,
    /// Contact's phone, E.164.
    pub contact_phone: String,
    /// The business number of this thread, E.164.
    pub number: String,
    /// `open` or `closed`.
    pub status: String,
    /// True while a person has taken over (the bot does not answer).
    pub bot_paused: bool,
    /// True when the contact opted out (sends are suppressed).
    pub opted_out: bool,
    /// True when the business number was removed: the history stays, and sending in this
    /// conversation is refused (409) until the number is added again.
    pub number_removed: bool,
    pub unread_count: i32,
    pub last_message_at: DateTime<Utc>,
    pub last_message_preview: String,
}

impl From<ConversationSummary> for Conversation {
    fn from(c: ConversationSummary) -> Self {
        Self {
            id: c.id.uuid(),
            contact_id: c.contact_id.uuid(),
            contact_name: c.contact_name,
            contact_phone: c.contact_phone,
            number: c.number,
            status: c.status,
            bot_paused: c.bot_paused,
            opted_out: c.opted_out,
            number_removed: c.number_removed,
            unread_count: c.unread_count,
            last_message_at: c.last_message_at,
            last_message_preview: c.last_message_preview,
        }
    }
}

/// A media attachment (MMS).
#[derive(Debug, Object)]
pub struct MediaItem {
    pub url: String,
    pub content_type: String,
}

/// A message.
#[derive(Debug, Object)]
pub struct Message {
    pub id: Uuid,
    pub conversation_id: Uuid,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `customer`, `bot`, `manual`, `compliance` or `alert` (a lead alert to the owner).
    pub source: String,
    pub body: String,
    pub media: Vec<MediaItem>,
    /// `received` (inbound); `queued`, `sending`, `sent`, `delivered`, `undelivered`,
    /// `failed` or `suppressed` (outbound).
    pub status: String,
    /// Provider error code of a failed send (e.g. 21610 unsubscribed, 30007 filtered).
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    /// Twilio MessageSid once known.
    pub provider_sid: Option<String>,
    /// SMS segments the body takes.
    pub segments: i32,
    pub created_at: DateTime<Utc>,
}

impl From<MessageView> for Message {
    fn from(m: MessageView) -> Self {
        Self {
            id: m.id.uuid(),
            conversation_id: m.conversation_id.uuid(),
            direction: m.direction.as_str().into(),
            source: m.source.as_str().into(),
            body: m.body,
            media: m
                .media
                .into_iter()
                .map(|x| MediaItem {
                    url: x.url,
                    content_type: x.content_type,
                })
                .collect(),
            status: m.status.as_str().into(),
            error_code: m.error_code,
            error_message: m.error_message,
            provider_sid: m.provider_sid,
            segments: m.segments,
            created_at: m.created_at,
        }
    }
}

/// A reply to send.
#[derive(Debug, Object)]
pub struct NewMessage {
    /// 1 to 1600 characters.
    pub body: String,
}

/// The message was queued for sending.
#[derive(ApiResponse)]
pub enum Queued {
    /// Queued: the new message (status `queued`), or for a repeated `Idempotency-Key` the
    /// message it made, as it stands; follow its status by polling the messages.
    #[oai(status = 202)]
    Accepted(Json<Message>),
}

/// The request's `Idempotency-Key`, checked ([`messaging::check_idempotency_key`]). A header
/// value that is not visible ASCII reaches the handler as no key at all: refused too, not
/// taken for none (each retry would send again).
fn checked_key(parsed: Option<String>, req: &Request) -> Result<Option<String>, ApiError> {
    const HEADER: &str = "Idempotency-Key";
    match parsed {
        Some(key) => {
            messaging::check_idempotency_key(HEADER, &key)?;
            Ok(Some(key))
        }
        None if req.headers().contains_key(HEADER) => {
            Err(messaging::bad_idempotency_key(HEADER).into())
        }
        None => Ok(None),
    }
}

/// The REST API.
pub struct Api;

#[OpenApi]
impl Api {
    /// The tenant's conversations, most recent first.
    #[oai(path = "/conversations", method = "get")]
    async fn list_conversations(
        &self,
        ApiKey(ctx): ApiKey,
        Data(app): Data<&Arc<App>>,
        /// At most this many (1 to 200, default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<u64>>,
    ) -> Result<Json<Vec<Conversation>>, ApiError> {
        let rows = conversations::list(app, &ctx, limit.0.unwrap_or(50)).await?;
        Ok(Json(rows.into_iter().map(Conversation::from).collect()))
    }

    /// The messages of one conversation, oldest first (the latest 500).
    #[oai(path = "/conversations/:id/messages", method = "get")]
    async fn list_messages(
        &self,
        ApiKey(ctx): ApiKey,
        Data(app): Data<&Arc<App>>,
        id: Path<Uuid>,
    ) -> Result<Json<Vec<Message>>, ApiError> {
        let (_, messages) = conversations::thread(app, &ctx, ConversationId(id.0)).await?;
        Ok(Json(messages.into_iter().map(Message::from).collect()))
    }

    /// Sends a reply by hand (source `manual`). The bot pauses for this conversation until
    /// it is resumed. Repeating a request with the same `Idempotency-Key` returns the same
    /// message without sending again (and changes nothing else).
    #[oai(path = "/conversations/:id/messages", method = "post")]
    async fn send_message(
        &self,
        req: &Request,
        ApiKey(ctx): ApiKey,
        Data(app): Data<&Arc<App>>,
        id: Path<Uuid>,
        /// 1 to 255 visible ASCII characters, e.g. a UUID.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<NewMessage>,
    ) -> Result<Queued, ApiError> {
        let key = checked_key(idempotency_key.0, req)?;
        let view = messaging::send_manual(app, &ctx, ConversationId(id.0), &body.body, key).await?;
        Ok(Queued::Accepted(Json(Message::from(view))))
    }

    /// Sends an outbound message that did not reach the customer (`failed`, `undelivered` or
    /// `suppressed`) again, as a new message with the same text and source; the original
    /// keeps its status and error code. Once per message: repeating the call returns the
    /// message the first one made. 409 for any other status, or while the contact is opted
    /// out (STOP).
    #[oai(
        path = "/conversations/:id/messages/:message_id/retry",
        method = "post"
    )]
    async fn send_again(
        &self,
        ApiKey(ctx): ApiKey,
        Data(app): Data<&Arc<App>>,
        id: Path<Uuid>,
        message_id: Path<Uuid>,
    ) -> Result<Queued, ApiError> {
        let view =
            messaging::send_again(app, &ctx, ConversationId(id.0), MessageId(message_id.0)).await?;
        Ok(Queued::Accepted(Json(Message::from(view))))
    }
}

/// The OpenAPI service, with `server_url` as its server (`{APP_URL}/api/v1`).
pub fn service(server_url: &str) -> OpenApiService<Api, ()> {
    OpenApiService::new(Api, "Switchboard API", env!("CARGO_PKG_VERSION"))
        .description("Tenant-scoped REST API of Switchboard. Authenticate with `Authorization: Bearer <API key>`.")
        .server(server_url)
}
