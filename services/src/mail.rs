//! Mail to people (invites, email verification, password reset): through Resend when
//! `RESEND_API_KEY` is set, otherwise into the simulator mailbox (`/simulator/mail`).

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, EntityTrait, QueryOrder, QuerySelect};
use switchboard_domain::MailId;
use switchboard_entity::mailbox;

use crate::{App, ServiceError};

/// Mails the simulator mailbox shows (the newest).
pub const MAILBOX_ROWS: u64 = 100;

/// One plain-text mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

/// True when mail goes to the simulator mailbox (no mail provider configured).
pub fn simulated(app: &App) -> bool {
    app.providers.mail.is_none()
}

/// Sends `mail`.
///
/// # Errors
/// [`ServiceError::Mail`] when the provider refuses or cannot be reached (the caller tells
/// the user to try again); database errors for the mailbox.
pub async fn send(app: &App, mail: Mail) -> Result<(), ServiceError> {
    match &app.providers.mail {
        Some(resend) => {
            let id = resend
                .send(&app.settings.mail_from, &mail.to, &mail.subject, &mail.text)
                .await
                .map_err(|e| ServiceError::Mail(e.to_string()))?;
            tracing::info!(resend_id = %id, subject = %mail.subject, "mail sent");
        }
        None => {
            mailbox::ActiveModel {
                id: Set(MailId::new()),
                to_email: Set(mail.to),
                subject: Set(mail.subject),
                body_text: Set(mail.text),
                created_at: Set(Utc::now()),
            }
            .insert(&app.db.write)
            .await?;
        }
    }
    Ok(())
}

/// The simulator mailbox, newest first.
///
/// # Errors
/// Database errors.
pub async fn mailbox(app: &App) -> Result<Vec<mailbox::Model>, ServiceError> {
    Ok(mailbox::Entity::find()
        .order_by_desc(mailbox::Column::CreatedAt)
        .limit(MAILBOX_ROWS)
        .all(&app.db.read)
        .await?)
}
