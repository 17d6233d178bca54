//! Sign-in through an OpenID Connect provider: the provider is discovered on first use, and a
//! verified identity is matched to a user by `(iss, sub)` only. An email the provider reports
//! never signs anyone in by itself: when a local account already has that (verified) address,
//! the identity is linked only after that account signs in with its password.

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use switchboard_config::OidcSettings;
use switchboard_domain::UserId;
use switchboard_domain::accounts::Email;
use switchboard_entity::{identity, user};
use switchboard_providers::oidc::{Identity, OidcError, OidcProvider};
use tokio::sync::OnceCell;

use crate::accounts::unique_or;
use crate::{App, ServiceError};

/// Where the provider sends the browser back (register `{APP_URL}` + this with it).
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";

/// The configured provider, discovered on first use (a provider that is down at start-up
/// does not stop Switchboard; sign-in through it fails with a clear page until it is back).
pub struct Oidc {
    settings: OidcSettings,
    redirect_url: String,
    provider: OnceCell<OidcProvider>,
}

impl Oidc {
    pub(crate) fn new(settings: OidcSettings, redirect_url: String) -> Self {
        Self {
            settings,
            redirect_url,
            provider: OnceCell::new(),
        }
    }

    /// The discovered provider.
    ///
    /// # Errors
    /// [`OidcError::Discovery`] while the provider cannot be reached (retried on next use).
    pub async fn provider(&self) -> Result<&OidcProvider, OidcError> {
        self.provider
            .get_or_try_init(|| {
                OidcProvider::discover(
                    &self.settings.issuer_url,
                    &self.settings.client_id,
                    &self.settings.client_secret,
                    &self.redirect_url,
                )
            })
            .await
    }
}

/// What a verified identity leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sign this user in (a known identity, or a new account made for it now).
    SignIn(UserId),
    /// A local account has this verified email: it must sign in with its password first,
    /// then the identity is linked ([`link`]).
    LinkFirst { email: String },
    /// Not signed in; the sentence says why.
    Refused(String),
}

/// Matches a verified identity to a user, creating the account for a new person.
///
/// # Errors
/// Database errors.
pub async fn resolve(app: &App, id: &Identity) -> Result<Outcome, ServiceError> {
    let known = identity::Entity::find_by_id((id.issuer.clone(), id.subject.clone()))
        .one(&app.db.read)
        .await?;
    if let Some(known) = known {
        let disabled = user::Entity::find_by_id(known.user_id)
            .one(&app.db.read)
            .await?
            .is_none_or(|u| u.disabled_at.is_some());
        return Ok(if disabled {
            Outcome::Refused("This account is disabled.".into())
        } else {
            Outcome::SignIn(known.user_id)
        });
    }
    let Some(email) = id.email.as_deref().and_then(|e| Email::parse(e).ok()) else {
        return Ok(Outcome::Refused(
            "Your sign-in provider did not share a usable email address.".into(),
        ));
    };
    let txn = app.db.write.begin().await?;
    let existing = user::Entity::find()
        .filter(user::Column::Email.eq(email.as_str()))
        .one(&txn)
        .await?;
    if existing.is_some() {
        return Ok(if id.email_verified {
            Outcome::LinkFirst {
                email: email.as_str().to_string(),
            }
        } else {
            Outcome::Refused(
                "An account with this email exists, and your provider has not verified the \
                 address. Sign in with your password."
                    .into(),
            )
        });
    }
    let user_id = UserId::new();
    let now = Utc::now();
    user::ActiveModel {
        id: Set(user_id),
        email: Set(email.as_str().to_string()),
        password_hash: Set(None),
        name: Set(None),
        email_verified_at: Set(id.email_verified.then_some(now)),
        disabled_at: Set(None),
        created_at: Set(now),
    }
    .insert(&txn)
    .await
    .map_err(|e| {
        unique_or(e, || {
            ServiceError::Conflict("an account with this email was made a moment ago".into())
        })
    })?;
    insert_identity(&txn, user_id, id).await?;
    txn.commit().await?;
    Ok(Outcome::SignIn(user_id))
}

async fn insert_identity<C: sea_orm::ConnectionTrait>(
    db: &C,
    user_id: UserId,
    id: &Identity,
) -> Result<(), ServiceError> {
    identity::ActiveModel {
        issuer: Set(id.issuer.clone()),
        subject: Set(id.subject.clone()),
        user_id: Set(user_id),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await
    .map_err(|e| {
        unique_or(e, || {
            ServiceError::Conflict("this sign-in is already linked to an account".into())
        })
    })?;
    Ok(())
}

/// Links `(issuer, subject)` to `user_id` after that user signed in with a password, if the
/// user's email is `email` (the verified address the provider reported).
///
/// # Errors
/// Database errors.
pub async fn link(
    app: &App,
    user_id: UserId,
    issuer: &str,
    subject: &str,
    email: &str,
) -> Result<bool, ServiceError> {
    let Some(u) = user::Entity::find_by_id(user_id).one(&app.db.read).await? else {
        return Ok(false);
    };
    if u.email != email {
        return Ok(false);
    }
    let id = Identity {
        issuer: issuer.to_string(),
        subject: subject.to_string(),
        email: Some(email.to_string()),
        email_verified: true,
    };
    let taken = identity::Entity::find_by_id((id.issuer.clone(), id.subject.clone()))
        .one(&app.db.read)
        .await?
        .is_some();
    if taken {
        return Ok(false);
    }
    // The provider verified this address (only a verified one is offered for linking), and
    // the password sign-in proved the account: the address counts as verified from now on,
    // so a later password reset keeps this identity.
    let txn = app.db.write.begin().await?;
    insert_identity(&txn, user_id, &id).await?;
    crate::recovery::mark_verified(&txn, user_id).await?;
    txn.commit().await?;
    Ok(true)
}
