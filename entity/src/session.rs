//! `sessions`: server-side sign-in sessions, stored by the SHA-256 (hex) of their random id.

use sea_orm::entity::prelude::*;
use switchboard_domain::{TenantId, UserId};

/// One signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    /// Lower-case hex SHA-256 of the session id the cookie carries.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id_hash: String,
    pub user_id: UserId,
    /// The tenant the user is working in (chosen at sign-in or in the switcher).
    pub tenant_id: Option<TenantId>,
    pub created_at: DateTimeUtc,
    /// Refreshed as the user works; an idle session ends.
    pub last_seen_at: DateTimeUtc,
    /// The absolute end of the session, however active.
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
