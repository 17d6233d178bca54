//! `invites`: an emailed invitation to join a tenant with a role. The link carries a random
//! token; only its SHA-256 is stored.

use sea_orm::entity::prelude::*;
use switchboard_domain::accounts::Role;
use switchboard_domain::{InviteId, TenantId, UserId};

use crate::TenantOwned;

/// One invitation.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invites")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: InviteId,
    pub tenant_id: TenantId,
    /// Lower-cased: only the account with this email can accept.
    pub email: String,
    pub role: Role,
    /// Lower-case hex SHA-256 of the link's token.
    pub token_hash: String,
    pub invited_by: Option<UserId>,
    pub expires_at: DateTimeUtc,
    pub accepted_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

impl TenantOwned for Entity {
    fn tenant_column() -> Column {
        Column::TenantId
    }
    fn id_column() -> Column {
        Column::Id
    }
}
