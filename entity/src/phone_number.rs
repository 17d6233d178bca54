//! `phone_numbers`: a tenant's numbers and which bot answers each.

use sea_orm::entity::prelude::*;
use switchboard_domain::{PhoneNumberId, TenantId};

use crate::TenantOwned;

/// Which bot answers texts to a number.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    EnumIter,
    DeriveActiveEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::None)")]
#[serde(rename_all = "lowercase")]
pub enum BotKind {
    /// The built-in qualification script (service, urgency, ZIP, best time, name).
    #[sea_orm(string_value = "qualify")]
    Qualify,
    /// No bot: texts only land in the inbox.
    #[sea_orm(string_value = "none")]
    None,
}

/// One of a tenant's numbers (E.164; at most one tenant uses a number at a time).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "phone_numbers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: PhoneNumberId,
    pub tenant_id: TenantId,
    /// E.164, e.g. `+15125550100`.
    pub e164: String,
    pub label: Option<String>,
    pub bot: BotKind,
    pub created_at: DateTimeUtc,
    /// When the tenant removed the number, `None` while in use. A released number routes no
    /// webhook and sends nothing; its row stays so that its conversations and their history
    /// do (they reference it), and its tenant takes it back if it adds the number again.
    pub released_at: Option<DateTimeUtc>,
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
