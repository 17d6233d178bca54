//! Mailed one-time links for an account: email verification (valid 48 hours) and password
//! reset (valid 1 hour). Tokens are random (128 bits) and stored by their SHA-256; a link
//! works once. A reset ends every session of the user.

use chrono::{Duration, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use switchboard_domain::UserId;
use switchboard_domain::accounts::{Email, Password};
use switchboard_entity::{email_token, user};

use crate::accounts::{hash_password, hash_token, new_token};
use crate::mail::{self, Mail};
use crate::{App, ServiceError};

/// How long a verification link works, in seconds (48 h).
pub const VERIFY_SECS: i64 = 48 * 3600;
/// How long a password-reset link works, in seconds (1 h).
pub const RESET_SECS: i64 = 3600;

const VERIFY: &str = "verify";
const RESET: &str = "reset";

async fn issue(
    app: &App,
    user_id: UserId,
    purpose: &str,
    secs: i64,
) -> Result<String, ServiceError> {
    let (token, hash) = new_token();
    let now = Utc::now();
    email_token::ActiveModel {
        token_hash: Set(hash),
        user_id: Set(user_id),
        purpose: Set(purpose.to_string()),
        expires_at: Set(now + Duration::seconds(secs)),
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
    let token = issue(app, user_id, VERIFY, VERIFY_SECS).await?;
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

/// Takes a mailed token of `purpose` if it is live, marking it used. The user it belongs to.
async fn take<C: sea_orm::ConnectionTrait>(
    db: &C,
    token: &str,
    purpose: &str,
) -> Result<Option<UserId>, ServiceError> {
    let now = Utc::now();
    let hash = hash_token(token);
    let taken = email_token::Entity::update_many()
        .filter(email_token::Column::TokenHash.eq(hash.clone()))
        .filter(email_token::Column::Purpose.eq(purpose))
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
    let user_id = take(&txn, token, VERIFY)
        .await?
        .ok_or(ServiceError::NotFound)?;
    user::Entity::update_many()
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::EmailVerifiedAt.is_null())
        .col_expr(user::Column::EmailVerifiedAt, Some(Utc::now()).into())
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// Mails a password-reset link to `email` if an enabled account has it. Answers the same
/// either way, so the form does not tell who has an account.
///
/// # Errors
/// Database errors; [`ServiceError::Mail`].
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
    let token = issue(app, u.id, RESET, RESET_SECS).await?;
    let link = app.settings.public_url(&format!("/password/reset/{token}"));
    mail::send(
        app,
        Mail {
            to: u.email,
            subject: "Reset your Switchboard password".into(),
            text: format!(
                "Someone asked to reset the password of your Switchboard account. To choose a new one, open:\n\n{link}\n\nThe link works once, for 1 hour. If it was not you, ignore this mail: your password stays as it is."
            ),
        },
    )
    .await
}

/// True when a reset link is live (the form is worth showing).
///
/// # Errors
/// Database errors.
pub async fn reset_link_live(app: &App, token: &str) -> Result<bool, ServiceError> {
    Ok(email_token::Entity::find_by_id(hash_token(token))
        .one(&app.db.read)
        .await?
        .is_some_and(|t| t.purpose == RESET && t.used_at.is_none() && t.expires_at > Utc::now()))
}

/// Sets a new password through a reset link; every session of the user ends, and the address
/// counts as verified (the link reached it).
///
/// # Errors
/// [`ServiceError::NotFound`] for an unknown, used or expired link.
pub async fn reset_password(
    app: &App,
    token: &str,
    password: &Password,
) -> Result<UserId, ServiceError> {
    let hash = hash_password(password).await?;
    let txn = app.db.write.begin().await?;
    let user_id = take(&txn, token, RESET)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let u = user::Entity::find_by_id(user_id)
        .one(&txn)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let verified = u.email_verified_at.unwrap_or_else(Utc::now);
    let mut am: user::ActiveModel = u.into();
    am.password_hash = Set(Some(hash));
    am.email_verified_at = Set(Some(verified));
    am.update(&txn).await?;
    txn.commit().await?;
    crate::sessions::delete_user(app, user_id).await?;
    Ok(user_id)
}
