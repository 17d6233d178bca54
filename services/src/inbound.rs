//! What happens after an inbound text is stored: the `HandleInbound` job decides the reply.
//!
//! Order of precedence, first match wins:
//! 1. a compliance keyword that took effect: STOP -> one opt-out confirmation, START -> an
//!    opt-in confirmation, HELP -> the help text; none of ours when Twilio's Advanced Opt-Out
//!    already answered (`OptOutType` present);
//! 2. the sender is opted out -> nothing (the text stays in the inbox);
//! 3. a person took over the conversation (bot paused) -> nothing;
//! 4. the number's bot: the built-in qualification script, its state kept on the conversation
//!    and the answers it collects written to the contact.

use std::collections::BTreeMap;

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use switchboard_domain::MessageId;
use switchboard_domain::compliance::{self, KeywordKind};
use switchboard_domain::message::{Direction, Source};
use switchboard_domain::script::{Script, ScriptState, UNKNOWN};
use switchboard_entity::phone_number::BotKind;
use switchboard_entity::{TenantOwned, TenantTx, contact, conversation, message, phone_number};

use crate::messaging::{Outboxed, dispatch, insert_outbound};
use crate::{App, ServiceError, TenantCtx, tenancy};

/// What the job decided, for logs and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Already handled by an earlier run of the job (or the message is gone).
    AlreadyHandled,
    /// A compliance confirmation or help text was queued.
    Compliance(KeywordKind),
    /// A keyword Twilio already answered: state recorded, no reply of ours.
    AnsweredByProvider(KeywordKind),
    /// The sender is opted out: stored, not answered.
    OptedOut,
    /// A person has taken over: the bot stays quiet.
    BotPaused,
    /// The number has no bot.
    NoBot,
    /// The bot queued this many replies.
    Bot(usize),
}

/// Handles one stored inbound message (the `HandleInbound` job). Safe to run twice: the
/// message's `handled_at` is set in the same transaction as the replies, and each reply has an
/// idempotency key derived from the inbound message.
///
/// # Errors
/// Database errors (the job retries).
#[tracing::instrument(skip(app), fields(tenant_id = %ctx.tenant_id()))]
pub async fn handle(
    app: &App,
    ctx: &TenantCtx,
    message_id: MessageId,
) -> Result<Decision, ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let Some(msg) = message::Entity::by_id(tx.tenant(), message_id)
        .one(tx.conn())
        .await?
    else {
        return Ok(Decision::AlreadyHandled);
    };
    if msg.handled_at.is_some() || msg.direction != Direction::Inbound {
        return Ok(Decision::AlreadyHandled);
    }
    let conversation = conversation::Entity::by_id(tx.tenant(), msg.conversation_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let contact = contact::Entity::by_id(tx.tenant(), msg.contact_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;

    let mut replies: Vec<(Source, String)> = Vec::new();
    let decision = if let Some(kind) = msg.compliance {
        if msg.provider_replied {
            Decision::AnsweredByProvider(kind)
        } else {
            let business = tenancy::tenant_name(tx.conn(), ctx).await?;
            let text = match kind {
                KeywordKind::OptOut => compliance::opt_out_confirmation(&business),
                KeywordKind::OptIn => compliance::opt_in_confirmation(&business),
                KeywordKind::Help => compliance::help_reply(&business),
            };
            replies.push((Source::Compliance, text));
            Decision::Compliance(kind)
        }
    } else if contact.opted_out_at.is_some() {
        Decision::OptedOut
    } else if conversation.bot_paused {
        Decision::BotPaused
    } else {
        let number = phone_number::Entity::by_id(tx.tenant(), conversation.phone_number_id)
            .one(tx.conn())
            .await?
            .ok_or(ServiceError::NotFound)?;
        match number.bot {
            BotKind::None => Decision::NoBot,
            BotKind::Qualify => {
                let business = tenancy::tenant_name(tx.conn(), ctx).await?;
                let turn = qualify_turn(&business, conversation.bot_state.as_ref(), &msg.body);
                let n = turn.replies.len();
                replies.extend(turn.replies.into_iter().map(|r| (Source::Bot, r)));
                save_bot_state(&tx, &conversation, &contact, &turn.state, turn.captured).await?;
                Decision::Bot(n)
            }
        }
    };

    let mut rows: Vec<Outboxed> = Vec::with_capacity(replies.len());
    for (n, (source, text)) in replies.iter().enumerate() {
        let key = format!("reply:{}:{n}", msg.id);
        rows.push(insert_outbound(&tx, &conversation, text, *source, Some(key)).await?);
    }
    let handled = message::ActiveModel {
        handled_at: Set(Some(Utc::now())),
        ..Default::default()
    };
    message::Entity::update_by_id(tx.tenant(), msg.id, handled)
        .exec(tx.conn())
        .await?;
    tx.commit().await?;
    dispatch(app, ctx, conversation.id, &rows).await?;
    Ok(decision)
}

/// Runs the built-in script on `body`: starts it on the first text of a conversation (greeting
/// and first question), otherwise takes `body` as the answer to the current question.
fn qualify_turn(
    business: &str,
    state: Option<&serde_json::Value>,
    body: &str,
) -> switchboard_domain::script::Turn {
    let script = Script::qualification(business);
    match state.and_then(|s| serde_json::from_value::<ScriptState>(s.clone()).ok()) {
        None => script.start(),
        Some(state) => script.advance(&state, body),
    }
}

/// Stores the script state on the conversation and a captured answer on the contact
/// (`name` also fills the contact's name; finishing marks the contact `qualified`).
async fn save_bot_state(
    tx: &TenantTx,
    conversation: &conversation::Model,
    contact: &contact::Model,
    state: &ScriptState,
    captured: Option<(String, String)>,
) -> Result<(), ServiceError> {
    let now = Utc::now();
    let c = conversation::ActiveModel {
        bot_state: Set(Some(
            serde_json::to_value(state).expect("script state serializes"),
        )),
        updated_at: Set(now),
        ..Default::default()
    };
    conversation::Entity::update_by_id(tx.tenant(), conversation.id, c)
        .exec(tx.conn())
        .await?;

    if captured.is_none() && !state.finished {
        return Ok(());
    }
    let mut fields: BTreeMap<String, String> = contact
        .fields
        .as_ref()
        .and_then(|f| serde_json::from_value(f.clone()).ok())
        .unwrap_or_default();
    let mut am = contact::ActiveModel {
        ..Default::default()
    };
    if let Some((field, value)) = captured {
        if field == "name" && value != UNKNOWN {
            am.name = Set(Some(value.clone()));
        }
        fields.insert(field, value);
    }
    am.fields = Set(Some(
        serde_json::to_value(&fields).expect("fields serialize"),
    ));
    if state.finished {
        am.status = Set("qualified".into());
    }
    am.updated_at = Set(now);
    contact::Entity::update_by_id(tx.tenant(), contact.id, am)
        .exec(tx.conn())
        .await?;
    Ok(())
}
