//! `api_keys`: hashed bearer keys for the REST API, one tenant each.

use sea_orm::entity::prelude::*;
use switchboard_domain::{ApiKeyId, TenantId};

use crate::TenantOwned;

/// An API key. The secret is shown once at creation; only its SHA-256 is stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: String,
    /// The first characters of the key, to recognise it in lists (`sb_live_ab12…`).
    pub prefix: String,
    /// Lower-case hex SHA-256 of the whole key.
    pub key_hash: String,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
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
