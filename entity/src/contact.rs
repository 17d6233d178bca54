//! `contacts`: a tenant's customers, one per E.164 phone.

use sea_orm::entity::prelude::*;
use switchboard_domain::{ContactId, TenantId};

use crate::TenantOwned;

/// A customer of one tenant.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contacts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ContactId,
    pub tenant_id: TenantId,
    /// E.164.
    pub phone: String,
    pub name: Option<String>,
    /// `new`, `qualified` (the bot's script finished), or [`OWNER`].
    pub status: String,
    /// Fields a bot collected, as a JSON object of strings (`{"zip":"78701",…}`).
    pub fields: Option<Json>,
    /// When the contact opted out (STOP, Twilio Advanced Opt-Out, or Twilio error 21610);
    /// `None` while subscribed. Sends to an opted-out contact are suppressed.
    pub opted_out_at: Option<DateTimeUtc>,
    /// The keyword (or `twilio:21610`) that opted them out.
    pub opt_out_keyword: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
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

/// The [`Model::status`] of the business owner's own phone (the tenant's notification phone,
/// which gets the bot's lead alerts): not a lead, so not counted as one.
pub const OWNER: &str = "owner";

/// The name of a contact made for the owner's lead alerts (the owner's phone was no contact).
pub const OWNER_NAME: &str = "Owner (lead alerts)";
