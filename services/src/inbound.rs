//! What happens after an inbound text is stored: the `HandleInbound` job decides the reply.
//!
//! Order of precedence, first match wins:
//! 1. a compliance keyword that took effect: STOP -> one opt-out confirmation, START -> an
//!    opt-in confirmation, HELP -> the help text; none of ours when Twilio's Advanced Opt-Out
//!    already answered (`OptOutType` present);
//! 2. the sender is opted out -> nothing (the text stays in the inbox);
//! 3. a person took over the conversation (bot paused) -> nothing;
//! 4. the number's bot: the built-in qualification script, its state kept on the conversation
//!    and the answers it collects written to the contact. A text is taken as the answer to
//!    the current question only when the bot's question was the last thing we sent; after a
//!    person's reply, a withdrawn or refused question, or a compliance reply, the bot asks
//!    again. A picture without words gets no bot reply. Once the script moves past its
//!    [`OwnerAlert`](switchboard_domain::script::OwnerAlert) step (the ZIP), the business
//!    owner's notification phone, if set, gets the lead alert ([`Alert`]).

use std::collections::BTreeMap;

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, Condition, QueryFilter, QueryOrder, QuerySelect};
use switchboard_domain::compliance::{self, KeywordKind};
use switchboard_domain::message::{Direction, MessageStatus, Source, is_media_only};
use switchboard_domain::script::{Script, ScriptState, Turn, UNKNOWN};
use switchboard_domain::{ContactId, ConversationId, MessageId};
use switchboard_entity::phone_number::BotKind;
use switchboard_entity::{TenantOwned, TenantTx, contact, conversation, message, phone_number};

use crate::group::Unit;
use crate::jobs::{Enqueue, JobQueue};
use crate::messaging::{self, Outboxed, dispatch, insert_outbound};
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
    /// The number was removed since the text arrived: nothing is sent from it.
    NumberReleased,
    /// The bot queued this many replies.
    Bot(usize),
}

/// Handles one stored inbound message (the `HandleInbound` job).
///
/// Texts of one conversation are handled in the order they arrived, so the bot never takes a
/// later answer for an earlier question: the job handles the conversation's oldest unhandled
/// text (its own, or one before it), then the next, until its own is done. Each step reads
/// the text and the conversation from one snapshot of the read pool, then claims the text
/// (`handled_at` set where unset) together with the bot's new state and its replies, in a
/// group-commit unit: one commit with the claims of the tenant's other texts that arrive
/// meanwhile. A step that loses the claim to another job re-reads; a second run of a job
/// finds nothing to do.
///
/// # Errors
/// Database errors (the job is re-run).
#[tracing::instrument(skip(app), fields(tenant_id = %ctx.tenant_id()))]
pub async fn handle(
    app: &App,
    ctx: &TenantCtx,
    message_id: MessageId,
) -> Result<Decision, ServiceError> {
    loop {
        match step(app, ctx, message_id).await? {
            Step::Handled { id, decision } if id == message_id => return Ok(decision),
            Step::Handled { .. } | Step::Lost => continue,
            Step::Nothing => return Ok(Decision::AlreadyHandled),
            Step::Before(conversation_id) => {
                // A re-run (e.g. the first run's worker died): the replies it committed may
                // never have been enqueued. Enqueue any still queued (deduplicated by key),
                // and the owner alert's, which may be in another conversation.
                messaging::redispatch_queued(app, ctx, conversation_id).await?;
                let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
                let alert = message::Entity::scoped(tx.tenant())
                    .filter(message::Column::IdempotencyKey.eq(alert_key(message_id)))
                    .one(tx.conn())
                    .await?;
                drop(tx);
                if let Some(alert) = alert.filter(|a| a.conversation_id != conversation_id) {
                    messaging::redispatch_queued(app, ctx, alert.conversation_id).await?;
                }
                return Ok(Decision::AlreadyHandled);
            }
        }
    }
}

enum Step {
    /// The message (or the one it waited for) was handled now.
    Handled { id: MessageId, decision: Decision },
    /// Another job claimed the head first.
    Lost,
    /// The message is gone or not inbound.
    Nothing,
    /// The inbound message was handled before (its conversation).
    Before(ConversationId),
}

/// Handles the oldest unhandled text of `message_id`'s conversation, if `message_id` is
/// still unhandled.
async fn step(app: &App, ctx: &TenantCtx, message_id: MessageId) -> Result<Step, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    let Some(own) = message::Entity::by_id(tx.tenant(), message_id)
        .one(tx.conn())
        .await?
    else {
        return Ok(Step::Nothing);
    };
    if own.direction != Direction::Inbound {
        return Ok(Step::Nothing);
    }
    if own.handled_at.is_some() {
        return Ok(Step::Before(own.conversation_id));
    }
    let msg = message::Entity::scoped(tx.tenant())
        .filter(message::Column::ConversationId.eq(own.conversation_id))
        .filter(message::Column::Direction.eq(Direction::Inbound))
        .filter(message::Column::HandledAt.is_null())
        .filter(message::Column::Id.lte(own.id))
        .order_by_asc(message::Column::Id)
        .one(tx.conn())
        .await?
        .unwrap_or(own);
    let conversation = conversation::Entity::by_id(tx.tenant(), msg.conversation_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    let contact = contact::Entity::by_id(tx.tenant(), msg.contact_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;

    // Decide.
    let mut replies: Vec<(Source, String)> = Vec::new();
    let mut turn = None;
    let mut alert = None;
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
            _ if number.released_at.is_some() => Decision::NumberReleased,
            BotKind::None => Decision::NoBot,
            BotKind::Qualify => {
                let tenant = tenancy::tenant_of(tx.conn(), ctx).await?;
                let script = Script::qualification(&tenant.name);
                let t = match script_state(&conversation) {
                    None => Some(script.start()),
                    // A picture without words answers no question; a person sees it in the inbox.
                    Some(_) if is_media_only(&msg.body, msg.media.is_some()) => None,
                    Some(state) if last_word_was_the_bots(&tx, &conversation, msg.id).await? => {
                        Some(script.advance(&state, &msg.body))
                    }
                    Some(state) => Some(script.ask_again(&state)),
                };
                if let (Some(t), Some(owner)) = (&t, tenant.notify_phone)
                    && t.alert_owner
                {
                    let link = app.settings.public_url(&format!(
                        "/conversations?b={}&c={}",
                        ctx.tenant_id(),
                        conversation.id
                    ));
                    alert = script
                        .render_owner_alert(&t.state.answers, &contact.phone, &link)
                        .map(|text| Alert { owner, text });
                }
                let n = t.as_ref().map_or(0, |t| t.replies.len());
                replies.extend(
                    t.iter()
                        .flat_map(|t| &t.replies)
                        .map(|r| (Source::Bot, r.clone())),
                );
                turn = t;
                Decision::Bot(n)
            }
        }
    };
    drop(tx);
    // None to a number we answer (see there); outside the snapshot, as the number lookup may
    // take a read connection of its own.
    if let Some(a) = &alert
        && tenancy::answers_texts(app, &a.owner).await?
    {
        alert = None;
    }

    let conversation_id = conversation.id;
    let claim = Claim {
        jobs: app.jobs.clone(),
        request_id: crate::correlation::current(),
        message_id: msg.id,
        conversation,
        contact,
        turn,
        replies,
        alert,
        decision,
    };
    match app.handles.run(ctx.tenant_id(), claim).await? {
        Claimed::Lost => Ok(Step::Lost),
        Claimed::Done {
            decision,
            rows,
            later,
            alert,
        } => {
            dispatch(app, ctx, conversation_id, &rows, later).await;
            if let Some(a) = alert {
                dispatch(app, ctx, a.thread, &[a.row], Vec::new()).await;
                if let Some(withdrawn) = a.paused {
                    messaging::announce_paused(app, ctx, a.thread, &withdrawn);
                }
            }
            Ok(Step::Handled {
                id: msg.id,
                decision,
            })
        }
    }
}

/// The write half of a step, a [`group`](crate::group) unit: claims the text (`handled_at`
/// set where unset), stores the bot's new state, writes the replies (each with an idempotency
/// key derived from the text) and stages the first one's send. The texts of one tenant that
/// a burst brings are claimed in shared transactions, one commit for many.
pub(crate) struct Claim {
    jobs: JobQueue,
    /// The correlation id of the job that decided (the unit may run in another task).
    request_id: Option<String>,
    message_id: MessageId,
    conversation: conversation::Model,
    contact: contact::Model,
    turn: Option<Turn>,
    replies: Vec<(Source, String)>,
    alert: Option<Alert>,
    decision: Decision,
}

/// A lead alert for the business owner (seed 001: "a summary SMS + lead link"): an outbound
/// message of source `alert` from the lead's number to the tenant's notification phone, in
/// the owner's conversation with that number (made for it, with the bot paused, so an
/// answer from the owner is never taken for a lead's). It goes through the outbox like any
/// reply, under the key `alert:{text id}`: sent once, re-checked for an opt-out at send time,
/// retried and shown like any other.
struct Alert {
    /// The owner's phone, E.164 (`tenants.notify_phone`).
    owner: String,
    /// [`Script::render_owner_alert`]'s text.
    text: String,
}

/// What a [`Claim`] did.
pub(crate) enum Claimed {
    /// Another job claimed the text first: nothing written.
    Lost,
    /// Claimed; `rows` and `later` are for [`dispatch`] after the commit, and so is the
    /// owner alert written in another conversation (its send job is in `later`).
    Done {
        decision: Decision,
        rows: Vec<Outboxed>,
        later: Vec<Enqueue>,
        alert: Option<AlertElsewhere>,
    },
}

/// An owner alert written in the owner's own conversation, not the lead's.
pub(crate) struct AlertElsewhere {
    thread: ConversationId,
    row: Outboxed,
    /// `Some(the bot replies withdrawn)` when the alert paused the bot there (the owner had
    /// been trying the bot from that phone).
    paused: Option<Vec<MessageId>>,
}

impl Unit for Claim {
    type Output = Claimed;

    /// Not synced by itself: what it writes (the text handled, the bot's state, the replies
    /// and their send jobs) stays inside the database until a send job claims a reply, and
    /// that claim is synced before the provider is called, which makes this commit durable
    /// with it. A power failure before then loses the commit and the job's own bookkeeping,
    /// so the job runs again and decides the same replies.
    const SYNCED: bool = false;

    async fn run(&self, tx: &TenantTx) -> Result<Claimed, ServiceError> {
        let claimed = message::Entity::by_id_update(tx.tenant(), self.message_id)
            .filter(message::Column::HandledAt.is_null())
            .col_expr(message::Column::HandledAt, Some(Utc::now()).into())
            .exec(tx.conn())
            .await?
            .rows_affected;
        if claimed == 0 {
            return Ok(Claimed::Lost);
        }
        let mut replies = self.replies.as_slice();
        let mut alert = self.alert.as_ref();
        let mut decision = self.decision.clone();
        if let Some(turn) = &self.turn
            && !save_bot_state(
                tx,
                &self.conversation,
                &self.contact,
                &turn.state,
                turn.captured.clone(),
            )
            .await?
        {
            // A person took over between our read and this write: the bot stays quiet.
            replies = &[];
            alert = None;
            decision = Decision::BotPaused;
        }
        let mut rows: Vec<Outboxed> = Vec::with_capacity(replies.len() + 1);
        let mut elsewhere = None;
        if let Some(a) = alert {
            let thread = owner_thread(tx, &a.owner, &self.conversation).await?;
            let key = alert_key(self.message_id);
            let row = insert_outbound(tx, &thread, &a.text, Source::Alert, Some(key), None).await?;
            // An owner trying the bot from their own phone gets the alert in that thread,
            // before the bot's next question (whose answer is then still taken as one).
            if thread.id == self.conversation.id {
                rows.push(row);
            } else {
                // Alerts and a running bot don't mix: the owner's answer to an alert would be
                // taken for theirs to the bot. The bot pauses there, as for a takeover.
                let paused = if thread.bot_paused {
                    None
                } else {
                    Some(messaging::set_paused_in(tx, thread.id, true).await?)
                };
                elsewhere = Some(AlertElsewhere {
                    thread: thread.id,
                    row,
                    paused,
                });
            }
        }
        for (n, (source, text)) in replies.iter().enumerate() {
            let key = format!("reply:{}:{n}", self.message_id);
            let id = Some(self.message_id);
            rows.push(insert_outbound(tx, &self.conversation, text, *source, Some(key), id).await?);
        }
        let request_id = self.request_id.clone();
        let mut later = messaging::stage_send(&self.jobs, tx, &rows, request_id.clone()).await?;
        if let Some(a) = &elsewhere {
            later.extend(messaging::stage_send(&self.jobs, tx, &[a.row], request_id).await?);
        }
        Ok(Claimed::Done {
            decision,
            rows,
            later,
            alert: elsewhere,
        })
    }
}

/// The conversation of `owner` (an E.164 phone) with the number of `lead`: found, or made
/// with the bot paused (and the contact with it, named [`contact::OWNER_NAME`]); its contact
/// gets the status [`contact::OWNER`] either way. The lead's own conversation when the owner
/// is the one texting.
///
/// # Errors
/// Database errors.
async fn owner_thread(
    tx: &TenantTx,
    owner: &str,
    lead: &conversation::Model,
) -> Result<conversation::Model, ServiceError> {
    use sea_orm::EntityTrait;
    use sea_orm::sea_query::OnConflict;
    let now = Utc::now();
    contact::Entity::insert(contact::ActiveModel {
        id: Set(ContactId::new()),
        tenant_id: Set(tx.tenant()),
        phone: Set(owner.to_owned()),
        name: Set(Some(contact::OWNER_NAME.to_owned())),
        status: Set(contact::OWNER.to_owned()),
        fields: Set(None),
        opted_out_at: Set(None),
        opt_out_keyword: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        // A contact already (the owner tried the bot): now known as the owner.
        OnConflict::columns([contact::Column::TenantId, contact::Column::Phone])
            .update_columns([contact::Column::Status, contact::Column::UpdatedAt])
            .action_and_where(contact::Column::Status.ne(contact::OWNER))
            .to_owned(),
    )
    .exec_without_returning(tx.conn())
    .await?;
    let contact = contact::Entity::scoped(tx.tenant())
        .filter(contact::Column::Phone.eq(owner))
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?;
    conversation::Entity::insert(conversation::ActiveModel {
        id: Set(ConversationId::new()),
        tenant_id: Set(tx.tenant()),
        contact_id: Set(contact.id),
        phone_number_id: Set(lead.phone_number_id),
        status: Set("open".to_owned()),
        bot_paused: Set(true),
        bot_state: Set(None),
        unread_count: Set(0),
        last_message_at: Set(now),
        last_message_preview: Set(String::new()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            conversation::Column::TenantId,
            conversation::Column::ContactId,
            conversation::Column::PhoneNumberId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(tx.conn())
    .await?;
    conversation::Entity::scoped(tx.tenant())
        .filter(conversation::Column::ContactId.eq(contact.id))
        .filter(conversation::Column::PhoneNumberId.eq(lead.phone_number_id))
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)
}

/// The idempotency key of the owner alert about inbound text `id`.
fn alert_key(id: MessageId) -> String {
    format!("alert:{id}")
}

/// The conversation's progress through the bot's script, if the bot has started it.
fn script_state(conversation: &conversation::Model) -> Option<ScriptState> {
    let state = conversation.bot_state.clone()?;
    serde_json::from_value(state).ok()
}

/// Whether the last message we sent in the conversation is the bot's and was not withdrawn or
/// refused (`suppressed`, `failed`, `undelivered`), with no STOP/START/HELP from the customer
/// after it and before the text `before` (one that Twilio's Advanced Opt-Out answered leaves
/// no reply of ours): only then can that text be the answer to the bot's current question.
/// The bot's replies to an earlier text count even when written after this text arrived (a
/// customer who answers before the question is sent). After a person's reply, a keyword, or
/// a question that never reached the customer, [`Script::ask_again`] asks it again instead.
async fn last_word_was_the_bots(
    tx: &TenantTx,
    conversation: &conversation::Model,
    before: MessageId,
) -> Result<bool, ServiceError> {
    let last = message::Entity::scoped(tx.tenant())
        .filter(message::Column::ConversationId.eq(conversation.id))
        .filter(
            Condition::any()
                .add(message::Column::Direction.eq(Direction::Outbound))
                .add(
                    Condition::all()
                        .add(message::Column::Compliance.is_not_null())
                        .add(message::Column::Id.lt(before)),
                ),
        )
        .order_by_desc(message::Column::Id)
        .one(tx.conn())
        .await?;
    Ok(last.is_some_and(|m| {
        m.direction == Direction::Outbound
            && m.source == Source::Bot
            && !matches!(
                m.status,
                MessageStatus::Suppressed | MessageStatus::Failed | MessageStatus::Undelivered
            )
    }))
}

/// Stores the script state on the conversation, unless the bot was paused meanwhile (then
/// returns false and writes nothing), and a captured answer on the contact (`name` also fills
/// the contact's name; finishing marks the contact `qualified`, unless it is the
/// [`contact::OWNER`]). The contact's fields are read again, locked (Postgres), in this
/// transaction: an answer saved meanwhile by the contact's conversation with another of the
/// tenant's numbers is kept.
async fn save_bot_state(
    tx: &TenantTx,
    conversation: &conversation::Model,
    contact: &contact::Model,
    state: &ScriptState,
    captured: Option<(String, String)>,
) -> Result<bool, ServiceError> {
    let now = Utc::now();
    let stored = conversation::Entity::by_id_update(tx.tenant(), conversation.id)
        .filter(conversation::Column::BotPaused.eq(false))
        .col_expr(
            conversation::Column::BotState,
            Some(serde_json::to_value(state).expect("script state serializes")).into(),
        )
        .col_expr(conversation::Column::UpdatedAt, now.into())
        .exec(tx.conn())
        .await?
        .rows_affected
        == 1;
    if !stored {
        return Ok(false);
    }
    let was_finished = script_state(conversation).is_some_and(|s| s.finished);
    let finished_now = state.finished && !was_finished;
    if captured.is_none() && !finished_now {
        return Ok(true);
    }
    let mut am = contact::ActiveModel {
        ..Default::default()
    };
    if let Some((field, value)) = captured {
        let fresh = contact::Entity::by_id(tx.tenant(), contact.id)
            .lock_exclusive()
            .one(tx.conn())
            .await?
            .ok_or(ServiceError::NotFound)?;
        let mut fields: BTreeMap<String, String> = fresh
            .fields
            .and_then(|f| serde_json::from_value(f).ok())
            .unwrap_or_default();
        if field == "name" && value != UNKNOWN {
            am.name = Set(Some(value.clone()));
        }
        fields.insert(field, value);
        am.fields = Set(Some(
            serde_json::to_value(&fields).expect("fields serialize"),
        ));
    }
    am.updated_at = Set(now);
    contact::Entity::update_by_id(tx.tenant(), contact.id, am)
        .exec(tx.conn())
        .await?;
    if finished_now {
        // The owner trying the bot stays the owner.
        contact::Entity::by_id_update(tx.tenant(), contact.id)
            .filter(contact::Column::Status.ne(contact::OWNER))
            .col_expr(contact::Column::Status, "qualified".into())
            .exec(tx.conn())
            .await?;
    }
    Ok(true)
}
