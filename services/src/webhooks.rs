//! Twilio's webhooks, from form parameters to stored rows: parse at the edge, find the tenant
//! from the number, verify the signature with that tenant's (or the platform's) auth token,
//! and only then write.

use chrono::Utc;
use secrecy::ExposeSecret;
use switchboard_domain::compliance::{self, Keyword, KeywordKind};
use switchboard_domain::message::{Media, MessageStatus};
use switchboard_domain::phone::{Channel, E164, parse_address};
use switchboard_domain::signature::twilio;
use switchboard_domain::{MessageId, segments};
use switchboard_entity::ingest::{NewInbound, Written};
use switchboard_entity::lookup;

use crate::messaging::{self, StatusUpdate};
use crate::tenancy::{self, NumberRoute};
use crate::{App, ServiceError, TenantCtx};

/// Why a webhook was refused. Every variant is decided before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// 400: a required parameter is absent.
    #[error("{0}: missing")]
    Missing(&'static str),
    /// 400: a parameter is malformed.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// 404: the `To` number (or the message of a correctly signed status callback) is not
    /// ours.
    #[error("unknown number or message")]
    Unknown,
    /// 403: missing, forged or stale `X-Twilio-Signature`.
    #[error("invalid signature")]
    Forbidden,
    /// 500: storing failed; nothing was stored. Twilio retries a failed webhook according to
    /// the number's webhook connection overrides (by default once, on a connection failure):
    /// see the README.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// Form parameters as received (repeated keys kept, order kept).
pub type Params = [(String, String)];

fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn required<'a>(params: &'a Params, name: &'static str) -> Result<&'a str, WebhookError> {
    param(params, name)
        .filter(|v| !v.is_empty())
        .ok_or(WebhookError::Missing(name))
}

/// Twilio SIDs: two letters and 32 hex digits (`SM…`, `MM…`).
fn check_sid(field: &'static str, value: &str, prefixes: &[&str]) -> Result<(), WebhookError> {
    let ok = value.len() == 34
        && prefixes.iter().any(|p| value.starts_with(p))
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(WebhookError::Invalid {
            field,
            reason: format!(
                "expected {} followed by 32 hex digits",
                prefixes.join(" or ")
            ),
        })
    }
}

/// An SMS address (E.164). Twilio also posts WhatsApp texts (`whatsapp:+1…`) to this webhook;
/// they are refused until conversations know their channel, so no WhatsApp text is ever
/// answered by SMS.
fn address(params: &Params, field: &'static str) -> Result<E164, WebhookError> {
    let raw = required(params, field)?;
    match parse_address(raw) {
        Ok((Channel::Sms, number)) => Ok(number),
        Ok((_, _)) => Err(WebhookError::Invalid {
            field,
            reason: "only SMS is supported; WhatsApp messages are not yet".into(),
        }),
        Err(e) => Err(WebhookError::Invalid {
            field,
            reason: e.to_string(),
        }),
    }
}

/// An inbound text as Twilio's "a message comes in" webhook describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundSms {
    /// `MessageSid` (`SM…` for SMS, `MM…` for MMS).
    pub message_sid: String,
    pub from: E164,
    pub to: E164,
    /// `Body`, U+0000 kept as U+FFFD (see `body_text`).
    pub body: String,
    /// `MediaUrlN` / `MediaContentTypeN` for N in 0..`NumMedia`.
    pub media: Vec<Media>,
    /// Advanced Opt-Out's `OptOutType` (`STOP`, `START`, `HELP`): Twilio already replied.
    pub opt_out_type: Option<KeywordKind>,
}

/// A text's body as stored: as sent, except that U+0000, which a Postgres `text` cannot
/// hold, is kept as U+FFFD (the replacement character) on either database: the text is a
/// customer's, so it is stored rather than refused.
fn body_text(body: &str) -> String {
    if body.contains('\0') {
        body.replace('\0', "\u{FFFD}")
    } else {
        body.to_string()
    }
}

/// Parses the inbound webhook's form. Does not check the signature.
///
/// # Errors
/// [`WebhookError::Missing`] / [`WebhookError::Invalid`] naming the parameter.
pub fn parse_inbound(params: &Params) -> Result<InboundSms, WebhookError> {
    let to = address(params, "To")?;
    let from = address(params, "From")?;
    let message_sid = required(params, "MessageSid")?;
    check_sid("MessageSid", message_sid, &["SM", "MM"])?;
    let num_media: usize = match param(params, "NumMedia") {
        None | Some("") => 0,
        Some(n) => n
            .parse()
            .ok()
            .filter(|n| *n <= 10)
            .ok_or(WebhookError::Invalid {
                field: "NumMedia",
                reason: "expected a number from 0 to 10".into(),
            })?,
    };
    let mut media = Vec::with_capacity(num_media);
    for i in 0..num_media {
        let url = param(params, &format!("MediaUrl{i}")).ok_or(WebhookError::Invalid {
            field: "NumMedia",
            reason: format!("says {num_media} but MediaUrl{i} is missing"),
        })?;
        let content_type =
            param(params, &format!("MediaContentType{i}")).unwrap_or("application/octet-stream");
        media.push(Media {
            url: url.to_string(),
            content_type: content_type.to_string(),
        });
    }
    let opt_out_type = match param(params, "OptOutType") {
        None | Some("") => None,
        Some(v) => Some(
            compliance::from_twilio_opt_out_type(v).ok_or(WebhookError::Invalid {
                field: "OptOutType",
                reason: "expected STOP, START or HELP".into(),
            })?,
        ),
    };
    Ok(InboundSms {
        message_sid: message_sid.to_string(),
        from,
        to,
        body: body_text(param(params, "Body").unwrap_or("")),
        media,
        opt_out_type,
    })
}

/// Checks `X-Twilio-Signature` for a request to `path_and_query` on our public URL.
fn verify(
    app: &App,
    token: Option<&secrecy::SecretString>,
    path_and_query: &str,
    params: &Params,
    signature: Option<&str>,
) -> Result<(), WebhookError> {
    let (Some(token), Some(signature)) = (token, signature) else {
        return Err(WebhookError::Forbidden);
    };
    let url = app.settings.public_url(path_and_query);
    if twilio::verify(token.expose_secret(), &url, params, signature) {
        Ok(())
    } else {
        Err(WebhookError::Forbidden)
    }
}

/// The keyword an inbound text carries: Twilio's `OptOutType` when present (Twilio replied),
/// otherwise our own detection. Returns the keyword and whether Twilio already replied.
fn keyword_of(body: &str, opt_out_type: Option<KeywordKind>) -> (Option<Keyword>, bool) {
    match opt_out_type {
        Some(kind) => {
            let word = compliance::detect(body)
                .filter(|k| k.kind == kind)
                .map(|k| k.word)
                .unwrap_or(match kind {
                    KeywordKind::OptOut => "STOP",
                    KeywordKind::OptIn => "START",
                    KeywordKind::Help => "HELP",
                });
            (Some(Keyword { kind, word }), true)
        }
        None => (compliance::detect(body), false),
    }
}

fn new_inbound(route: &NumberRoute, sms: InboundSms) -> NewInbound {
    let count = segments::count(&sms.body);
    let (keyword, provider_replied) = keyword_of(&sms.body, sms.opt_out_type);
    NewInbound {
        tenant_id: route.owner.tenant_id,
        phone_number_id: route.owner.phone_number_id,
        from: sms.from.as_str().to_string(),
        provider_sid: sms.message_sid,
        media: (!sms.media.is_empty())
            .then(|| serde_json::to_value(&sms.media).expect("media serializes")),
        body: sms.body,
        segments: count.segments as i32,
        encoding: count.encoding.as_str(),
        received_at: Utc::now(),
        keyword,
        provider_replied,
        request_id: crate::correlation::current(),
    }
}

/// `POST /webhooks/twilio/sms`: verify, then store through the group-commit writer.
///
/// # Errors
/// See [`WebhookError`]; nothing is written unless `Ok`.
#[tracing::instrument(skip_all, fields(message_sid))]
pub async fn receive_sms(
    app: &App,
    path_and_query: &str,
    params: &Params,
    signature: Option<&str>,
) -> Result<Written, WebhookError> {
    let to = address(params, "To")?;
    let check = |route: &NumberRoute| {
        verify(
            app,
            route.signing_token.as_ref(),
            path_and_query,
            params,
            signature,
        )
    };
    // The route may come from the cache, up to ROUTE_TTL_SECS old: another process may have
    // saved a new auth token, or removed the number (perhaps another tenant on the same
    // Twilio account took it). Where the cached route fails, it is read again, once.
    let reread = async || {
        app.routes.forget(to.as_str());
        let fresh = tenancy::route(app, &to)
            .await?
            .ok_or(WebhookError::Unknown)?;
        check(&fresh)?;
        Ok::<_, WebhookError>(fresh)
    };
    let route = tenancy::route(app, &to)
        .await?
        .ok_or(WebhookError::Unknown)?;
    let route = match check(&route) {
        Ok(()) => route,
        Err(WebhookError::Forbidden) if signature.is_some() => reread().await?,
        Err(e) => return Err(e),
    };
    let sms = parse_inbound(params)?;
    tracing::Span::current().record("message_sid", sms.message_sid.as_str());
    match app.ingest.submit(new_inbound(&route, sms)).await? {
        // The number was removed since the route was read: a text to a number nobody holds
        // now is a 404.
        Written::Released => {
            let fresh = reread().await?;
            let sms = parse_inbound(params)?;
            match app.ingest.submit(new_inbound(&fresh, sms)).await? {
                Written::Released => Err(WebhookError::Unknown),
                written => Ok(written),
            }
        }
        written => Ok(written),
    }
}

/// The simulator's "send" button: the same pipeline as [`receive_sms`] without a signature,
/// for numbers that send through the simulator only.
///
/// # Errors
/// [`WebhookError::Unknown`] for a number that is not a simulator number; invalid input.
pub async fn simulate_sms(
    app: &App,
    to: &str,
    from: &str,
    body: &str,
) -> Result<(TenantCtx, Written), WebhookError> {
    let to = E164::parse(to).map_err(|e| WebhookError::Invalid {
        field: "to",
        reason: e.to_string(),
    })?;
    let from = E164::parse(from).map_err(|e| WebhookError::Invalid {
        field: "from",
        reason: e.to_string(),
    })?;
    let body = messaging::check_body(body).map_err(|e| match e {
        ServiceError::Invalid { reason, .. } => WebhookError::Invalid {
            field: "body",
            reason,
        },
        other => WebhookError::Service(other),
    })?;
    let route = simulator_route(app, &to).await?;
    let number = to.clone();
    let sms = InboundSms {
        message_sid: switchboard_providers::simulator::new_sid(),
        from,
        to,
        body,
        media: Vec::new(),
        opt_out_type: None,
    };
    let ctx = TenantCtx::new(route.owner.tenant_id);
    match app.ingest.submit(new_inbound(&route, sms)).await? {
        Written::Released => {
            app.routes.forget(number.as_str());
            Err(WebhookError::Unknown)
        }
        written => Ok((ctx, written)),
    }
}

/// The route of a simulator number: one of the demo workspace's numbers that sends through
/// the simulator (see [`tenancy::simulator_numbers`]); anything else is unknown.
async fn simulator_route(app: &App, number: &E164) -> Result<NumberRoute, WebhookError> {
    let demo = tenancy::demo_tenant(app)
        .await?
        .ok_or(WebhookError::Unknown)?;
    match tenancy::route(app, number).await? {
        Some(route)
            if route.provider.name() == "simulator"
                && route.owner.tenant_id == demo.tenant_id() =>
        {
            Ok(route)
        }
        _ => Err(WebhookError::Unknown),
    }
}

/// The tenant behind a simulator number (the simulator page reads its handset view).
///
/// # Errors
/// [`WebhookError::Unknown`] for a number that is not a simulator number.
pub async fn simulator_tenant(app: &App, number: &str) -> Result<TenantCtx, WebhookError> {
    let number = E164::parse(number).map_err(|e| WebhookError::Invalid {
        field: "number",
        reason: e.to_string(),
    })?;
    Ok(TenantCtx::new(
        simulator_route(app, &number).await?.owner.tenant_id,
    ))
}

/// The refusal of a status callback for a message we do not know, or whose signature is not
/// the message's account's: 404 when it is signed with the token of its `AccountSid` (the
/// platform's, or one a tenant stored for that account), else 403. Either way the answer
/// depends on the caller's own signature, not on whether the MessageSid is someone's.
///
/// # Errors
/// Database errors.
async fn unknown_message(
    app: &App,
    path_and_query: &str,
    params: &Params,
    signature: Option<&str>,
) -> Result<WebhookError, ServiceError> {
    let Some(account) = param(params, "AccountSid").filter(|a| !a.is_empty()) else {
        return Ok(WebhookError::Forbidden);
    };
    let mut tokens: Vec<secrecy::SecretString> = Vec::new();
    if let Some(p) = app
        .settings
        .twilio
        .as_ref()
        .filter(|p| p.account_sid == account)
    {
        tokens.push(p.auth_token.clone());
    }
    // A token that no longer opens (a replaced key) verifies nothing.
    let stored = lookup::twilio_account_tokens(&app.db.read, account).await?;
    tokens.extend(stored.iter().filter_map(|s| app.sealer.open(s).ok()));
    let signed = tokens
        .iter()
        .any(|t| verify(app, Some(t), path_and_query, params, signature).is_ok());
    Ok(if signed {
        WebhookError::Unknown
    } else {
        WebhookError::Forbidden
    })
}

/// `POST /webhooks/twilio/status`: a message status callback.
///
/// The message is found by `MessageSid`, or by our id in the callback URL (`m`) when the
/// callback arrives before we stored the SID. Returns whether the status moved forward.
///
/// # Errors
/// See [`WebhookError`]; nothing is written unless `Ok`.
#[tracing::instrument(skip_all, fields(message_sid))]
pub async fn receive_status(
    app: &App,
    path_and_query: &str,
    params: &Params,
    signature: Option<&str>,
    our_id: Option<MessageId>,
) -> Result<bool, WebhookError> {
    let sid = required(params, "MessageSid")?;
    check_sid("MessageSid", sid, &["SM", "MM"])?;
    tracing::Span::current().record("message_sid", sid);
    let status_text = param(params, "MessageStatus")
        .or_else(|| param(params, "SmsStatus"))
        .filter(|s| !s.is_empty())
        .ok_or(WebhookError::Missing("MessageStatus"))?;
    let status = MessageStatus::from_twilio(status_text).ok_or(WebhookError::Invalid {
        field: "MessageStatus",
        reason: format!("unknown status {status_text:?}"),
    })?;
    let error_code = match param(params, "ErrorCode") {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i32>().map_err(|_| WebhookError::Invalid {
            field: "ErrorCode",
            reason: "expected a number".into(),
        })?),
    };
    let found = match lookup::message_by_provider_sid(&app.db.read, sid)
        .await
        .map_err(ServiceError::from)?
    {
        Some(found) => Some(found),
        None => match our_id {
            Some(id) => lookup::message_tenant(&app.db.read, id)
                .await
                .map_err(ServiceError::from)?
                .map(|t| (t, id)),
            None => None,
        },
    };
    let Some((tenant_id, message_id)) = found else {
        return Err(unknown_message(app, path_and_query, params, signature).await?);
    };
    // Signed by the account that sent the message, which may not be the tenant's account
    // now: a text sent through the platform's account before the tenant connected its own
    // reports its status signed with the platform's token. The callback's `AccountSid` says
    // which; a token is only ever one we hold for this tenant. (A text sent through an
    // account the tenant has since replaced cannot be verified: its token is gone.)
    let own = lookup::tenant_twilio_account(&app.db.read, tenant_id)
        .await
        .map_err(ServiceError::from)?;
    let platform = app.settings.twilio.as_ref();
    let account = param(params, "AccountSid");
    let token = match (own, platform) {
        (Some((own_sid, _)), Some(p))
            if account == Some(p.account_sid.as_str()) && account != Some(own_sid.as_str()) =>
        {
            Some(p.auth_token.clone())
        }
        (Some((_, sealed)), _) => Some(app.sealer.open(&sealed).map_err(ServiceError::from)?),
        (None, p) => p.map(|t| t.auth_token.clone()),
    };
    if verify(app, token.as_ref(), path_and_query, params, signature).is_err() {
        // Answered as for a message we don't know: a caller signing with a token of its
        // own (another tenant's account) learns nothing from 403 against 404 either.
        return Err(unknown_message(app, path_and_query, params, signature).await?);
    }
    let ctx = TenantCtx::new(tenant_id);
    let update = StatusUpdate {
        sid: sid.to_string(),
        status,
        error_code: error_code.filter(|c| *c != 0),
    };
    match messaging::apply_status(app, &ctx, message_id, update).await {
        Ok(moved) => Ok(moved),
        Err(ServiceError::NotFound) => Err(WebhookError::Unknown),
        Err(e) => Err(e.into()),
    }
}
