//! Inviting members by email. An invite names the address and the role; its link carries a
//! random 128-bit token (only the SHA-256 is stored), works for 7 days and once, and only for
//! the account with that address — so a forwarded link is no use to anyone else.

use chrono::{DateTime, Duration, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use switchboard_domain::accounts::{Email, Role};
use switchboard_domain::{InviteId, TenantId, UserId};
use switchboard_entity::{TenantOwned, TenantTx, invite, lookup, membership, tenant};

use crate::accounts::{add_member, hash_token, new_token, set_session_tenant};
use crate::mail::{self, Mail};
use crate::{App, ServiceError, TenantCtx};

/// How long an invite link works, in seconds (7 days).
pub const INVITE_SECS: i64 = 7 * 24 * 3600;

/// A pending invite, as `/settings` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteView {
    pub id: InviteId,
    pub email: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

/// Invites `email` to `ctx`'s tenant as `role`, on behalf of `inviter` (role `actor`), and
/// mails the link.
///
/// # Errors
/// [`ServiceError::Forbidden`] when `actor` may not (agents; owner invites need an owner);
/// [`ServiceError::Invalid`] naming `email`; [`ServiceError::Conflict`] when that person is a
/// member already; [`ServiceError::Mail`].
pub async fn invite(
    app: &App,
    ctx: &TenantCtx,
    actor: Role,
    inviter: UserId,
    email: &str,
    role: Role,
) -> Result<(), ServiceError> {
    if !actor.manages() || (role == Role::Owner && actor != Role::Owner) {
        return Err(ServiceError::Forbidden(
            "only owners invite owners; agents do not invite".into(),
        ));
    }
    let email = Email::parse(email).map_err(|e| ServiceError::invalid("email", e.to_string()))?;
    let members = crate::accounts::members(app, ctx).await?;
    if members.iter().any(|m| m.email == email.as_str()) {
        return Err(ServiceError::Conflict(format!(
            "{} is already a member",
            email.as_str()
        )));
    }
    let (token, hash) = new_token();
    let now = Utc::now();
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let business = tenant::Entity::find_by_id(ctx.tenant_id())
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?
        .name;
    invite::ActiveModel {
        id: Set(InviteId::new()),
        tenant_id: Set(tx.tenant()),
        email: Set(email.as_str().to_string()),
        role: Set(role),
        token_hash: Set(hash),
        invited_by: Set(Some(inviter)),
        expires_at: Set(now + Duration::seconds(INVITE_SECS)),
        accepted_at: Set(None),
        created_at: Set(now),
    }
    .insert(tx.conn())
    .await?;
    tx.commit().await?;
    let link = app.settings.public_url(&format!("/invite/{token}"));
    mail::send(
        app,
        Mail {
            to: email.as_str().to_string(),
            subject: format!("You are invited to {business} on Switchboard"),
            text: format!(
                "You are invited to join {business} on Switchboard as {role}.\n\nAccept here (sign in or create an account with this address):\n\n{link}\n\nThe link works for 7 days.",
                role = role.as_str(),
            ),
        },
    )
    .await
}

/// The tenant's invites not yet accepted, newest first (expired ones included, marked by
/// their time).
///
/// # Errors
/// Database errors.
pub async fn pending(app: &App, ctx: &TenantCtx) -> Result<Vec<InviteView>, ServiceError> {
    let tx = TenantTx::read(&app.db, ctx.tenant_id()).await?;
    Ok(invite::Entity::scoped(tx.tenant())
        .filter(invite::Column::AcceptedAt.is_null())
        .order_by_desc(invite::Column::CreatedAt)
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|i| InviteView {
            id: i.id,
            email: i.email,
            role: i.role,
            expires_at: i.expires_at,
        })
        .collect())
}

/// Withdraws a pending invite (its link stops working).
///
/// # Errors
/// [`ServiceError::NotFound`] when it is not this tenant's pending invite.
pub async fn revoke(app: &App, ctx: &TenantCtx, id: InviteId) -> Result<(), ServiceError> {
    let tx = TenantTx::write(&app.db, ctx.tenant_id()).await?;
    let gone = invite::Entity::delete_by_id_scoped(tx.tenant(), id)
        .filter(invite::Column::AcceptedAt.is_null())
        .exec(tx.conn())
        .await?;
    if gone.rows_affected == 0 {
        return Err(ServiceError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// What an invite link shows before it is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    pub id: InviteId,
    pub tenant_id: TenantId,
    pub business: String,
    /// The only address that can accept.
    pub email: String,
    pub role: Role,
}

/// The live invite behind a link (not accepted, not expired). Looked up by the token's hash
/// across tenants: the token is the proof.
///
/// # Errors
/// [`ServiceError::NotFound`] for an unknown, used, withdrawn or expired link.
pub async fn offer(app: &App, token: &str) -> Result<Offer, ServiceError> {
    let i = lookup::invite_by_token_hash(&app.db.read, &hash_token(token))
        .await?
        .filter(|i| i.accepted_at.is_none() && i.expires_at > Utc::now())
        .ok_or(ServiceError::NotFound)?;
    let tx = TenantTx::read(&app.db, i.tenant_id).await?;
    let business = tenant::Entity::find_by_id(i.tenant_id)
        .one(tx.conn())
        .await?
        .ok_or(ServiceError::NotFound)?
        .name;
    Ok(Offer {
        id: i.id,
        tenant_id: i.tenant_id,
        business,
        email: i.email,
        role: i.role,
    })
}

/// Accepts the invite behind `token` for the signed-in user (whose address must be the
/// invited one) and switches their session to the tenant.
///
/// # Errors
/// [`ServiceError::NotFound`] for a dead link; [`ServiceError::Forbidden`] when the user's
/// email is not the invited address.
pub async fn accept(
    app: &App,
    token: &str,
    session_id: &str,
    user_id: UserId,
    user_email: &str,
) -> Result<TenantId, ServiceError> {
    let offer = offer(app, token).await?;
    if offer.email != user_email {
        return Err(ServiceError::Forbidden(format!(
            "This invite is for {}; sign in with that address to accept it.",
            offer.email
        )));
    }
    let tx = TenantTx::write(&app.db, offer.tenant_id).await?;
    let taken = invite::Entity::by_id_update(tx.tenant(), offer.id)
        .filter(invite::Column::AcceptedAt.is_null())
        .col_expr(invite::Column::AcceptedAt, Some(Utc::now()).into())
        .exec(tx.conn())
        .await?;
    if taken.rows_affected == 0 {
        return Err(ServiceError::NotFound);
    }
    let already = membership::Entity::scoped(tx.tenant())
        .filter(membership::Column::UserId.eq(user_id))
        .one(tx.conn())
        .await?
        .is_some();
    if !already {
        add_member(tx.conn(), tx.tenant(), user_id, offer.role).await?;
    }
    tx.commit().await?;
    set_session_tenant(app, session_id, user_id, offer.tenant_id).await?;
    Ok(offer.tenant_id)
}
