//! Mailed one-time links for an account: email verification (valid 48 hours) and password
//! reset (valid 1 hour). Tokens are random (128 bits) and stored by their SHA-256; a link
//! works once. A reset ends every session of the user and every other reset link.

use chrono::{Duration, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use switchboard_domain::UserId;
use switchboard_domain::accounts::{Email, Password};
use switchboard_entity::{email_token, identity, user};

use crate::accounts::{hash_password, hash_token, new_token};
use crate::mail::{self, Mail};
use crate::{App, ServiceError};

/// How long a verification link works, in seconds (48 h).
pub const VERIFY_SECS: i64 = 48 * 3600;
/// How long a password-reset link works, in seconds (1 h).
pub const RESET_SECS: i64 = 3600;

/// What a mailed link is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// `/verify-email/{token}`: confirms the address.
    Verify,
    /// `/password/reset/{token}`: sets a new password.
    Reset,
}

impl Link {
    fn purpose(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
        }
    }

    /// How long a link of this kind works, in seconds.
    fn lifetime_secs(self) -> i64 {
        match self {
            Self::Verify => VERIFY_SECS,
            Self::Reset => RESET_SECS,
        }
    }
}

async fn issue(app: &App, user_id: UserId, kind: Link) -> Result<String, ServiceError> {
    let (token, hash) = new_token();
    let now = Utc::now();
    email_token::ActiveModel {
        token_hash: Set(hash),
        user_id: Set(user_id),
        purpose: Set(kind.purpose().to_string()),
        expires_at: Set(now + Duration::seconds(kind.lifetime_secs())),
        used_at: Set(None),
        created_at: Set(now),
    }
    .insert(&app.db.write)
    .await?;
    Ok(token)
}

/// Mails `user_id` a link that verifies their address.
///
/// # Errors
/// Database errors; [`ServiceError::Mail`].
pub async fn send_verification(app: &App, user_id: UserId) -> Result<(), ServiceError> {
    let Some(u) = user::Entity::find_by_id(user_id).one(&app.db.read).await? else {
        return Err(ServiceError::NotFound);
    };
    let token = issue(app, user_id, Link::Verify).await?;
    let link = app.settings.public_url(&format!("/verify-email/{token}"));
    mail::send(
        app,
        Mail {
            to: u.email,
            subject: "Confirm your email for Switchboard".into(),
            text: format!(
                "Confirm this address for your Switchboard account:\n\n{link}\n\nThe link works once, for 48 hours. If you did not sign up, ignore this mail."
            ),
        },
    )
    .await
}

/// Takes a mailed token of this kind if it is live, marking it used. The user it belongs to.
async fn take<C: sea_orm::ConnectionTrait>(
    db: &C,
    token: &str,
    kind: Link,
) -> Result<Option<UserId>, ServiceError> {
    let now = Utc::now();
    let hash = hash_token(token);
    let taken = email_token::Entity::update_many()
        .filter(email_token::Column::TokenHash.eq(hash.clone()))
        .filter(email_token::Column::Purpose.eq(kind.purpose()))
        .filter(email_token::Column::UsedAt.is_null())
        .filter(email_token::Column::ExpiresAt.gt(now))
        .col_expr(email_token::Column::UsedAt, Some(now).into())
        .exec(db)
        .await?;
    if taken.rows_affected == 0 {
        return Ok(None);
    }
    Ok(email_token::Entity::find_by_id(hash)
        .one(db)
        .await?
        .map(|t| t.user_id))
}

/// Marks the address of the link's user verified.
///
/// # Errors
/// [`ServiceError::NotFound`] for an unknown, used or expired link.
pub async fn verify_email(app: &App, token: &str) -> Result<(), ServiceError> {
    let txn = app.db.write.begin().await?;
    let user_id = take(&txn, token, Link::Verify)
        .await?
        .ok_or(ServiceError::NotFound)?;
    mark_verified(&txn, user_id).await?;
    txn.commit().await?;
    Ok(())
}

/// Records `user_id`'s address as verified now, unless it already was.
pub(crate) async fn mark_verified<C: sea_orm::ConnectionTrait>(
    db: &C,
    user_id: UserId,
) -> Result<(), ServiceError> {
    user::Entity::update_many()
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::EmailVerifiedAt.is_null())
        .col_expr(user::Column::EmailVerifiedAt, Some(Utc::now()).into())
        .exec(db)
        .await?;
    Ok(())
}

/// Mails a password-reset link to `email` if an enabled account has it. Answers the same
/// either way, so the form does not tell who has an account: a mail provider that refuses
/// the mail is logged (error), not reported, since only an existing account gets that far.
///
/// # Errors
/// Database errors.
pub async fn request_reset(app: &App, email: &str) -> Result<(), ServiceError> {
    let Ok(email) = Email::parse(email) else {
        return Ok(());
    };
    let Some(u) = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(&app.db.read)
        .await?
        .filter(|u| u.disabled_at.is_none())
    else {
        return Ok(());
    };
    let token = issue(app, u.id, Link::Reset).await?;
    let link = app.settings.public_url(&format!("/password/reset/{token}"));
    let sent = mail::send(
        app,
        Mail {
            to: u.email,
            subject: "Reset your Switchboard password".into(),
            text: format!(
                "Someone asked to reset the password of your Switchboard account. To choose a new one, open:\n\n{link}\n\nThe link works once, for 1 hour. If it was not you, ignore this mail: your password stays as it is."
            ),
        },
    )
    .await;
    match sent {
        Err(ServiceError::Mail(e)) => {
            tracing::error!(error = %e, "password reset mail not sent");
            Ok(())
        }
        other => other,
    }
}

/// True when `token` is a live link of this kind (its page is worth showing; nothing is
/// taken).
///
/// # Errors
/// Database errors.
pub async fn link_live(app: &App, token: &str, kind: Link) -> Result<bool, ServiceError> {
    Ok(email_token::Entity::find_by_id(hash_token(token))
        .one(&app.db.read)
        .await?
        .is_some_and(|t| {
            t.purpose == kind.purpose() && t.used_at.is_none() && t.expires_at > Utc::now()
        }))
}

/// Sets a new password through a reset link; every session of the user ends, every other
/// reset link of the user dies, and the address counts as verified (the link reached it).
///
/// When the address was not verified before, the sign-in provider identities linked to the
/// account are removed too: they were made from an address the provider had not verified
/// (`email_verified` false), so whoever signed in through them may not own the mailbox that
/// the reset has just proven.
///
/// # Errors
/// [`ServiceError::NotFound`] for an unknown, used or expired link (checked before the
/// password is hashed, so a made-up link costs no hashing).
pub async fn reset_password(
    app: &App,
    token: &str,
    password: &Password,
) -> Result<UserId, ServiceError> {
    if !link_live(app, token, Link::Reset).await? {
        return Err(ServiceError::NotFound);
    }
    let hash = hash_password(password).await?;
    let txn = app.db.write.begin().await?;
    let user_id = take(&txn, token, Link::Reset)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let u = user::Entity::find_by_id(user_id)
        .one(&txn)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let now = Utc::now();
    email_token::Entity::update_many()
        .filter(email_token::Column::UserId.eq(user_id))
        .filter(email_token::Column::Purpose.eq(Link::Reset.purpose()))
        .filter(email_token::Column::UsedAt.is_null())
        .col_expr(email_token::Column::UsedAt, Some(now).into())
        .exec(&txn)
        .await?;
    if u.email_verified_at.is_none() {
        identity::Entity::delete_many()
            .filter(identity::Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
    }
    let verified = u.email_verified_at.unwrap_or(now);
    let mut am: user::ActiveModel = u.into();
    am.password_hash = Set(Some(hash));
    am.email_verified_at = Set(Some(verified));
    am.update(&txn).await?;
    txn.commit().await?;
    crate::sessions::delete_user(app, user_id).await?;
    Ok(user_id)
}

/// Days a mailed link's row is kept after it expired (for a support question about it);
/// then [`purge_expired`] deletes it.
pub const KEEP_EXPIRED_LINK_DAYS: i64 = 7;

/// Deletes mailed links expired more than [`KEEP_EXPIRED_LINK_DAYS`] ago (anyone may ask for
/// a reset link, so their rows would otherwise only grow). Returns how many were deleted.
///
/// # Errors
/// Database errors.
pub(crate) async fn purge_expired(app: &App) -> Result<u64, ServiceError> {
    let before = Utc::now() - Duration::days(KEEP_EXPIRED_LINK_DAYS);
    Ok(email_token::Entity::delete_many()
        .filter(email_token::Column::ExpiresAt.lt(before))
        .exec(&app.db.write)
        .await?
        .rows_affected)
}
