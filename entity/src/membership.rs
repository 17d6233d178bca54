//! `memberships`: a user's role in one tenant.

use sea_orm::entity::prelude::*;
use switchboard_domain::accounts::Role;
use switchboard_domain::{MembershipId, TenantId, UserId};

use crate::TenantOwned;

/// One user in one tenant, unique per (tenant, user).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "memberships")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: MembershipId,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
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
