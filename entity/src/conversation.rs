//! `conversations`: the thread between one contact and one of the tenant's numbers.

use sea_orm::entity::prelude::*;
use switchboard_domain::{ContactId, ConversationId, PhoneNumberId, TenantId};

use crate::TenantOwned;

/// A thread. Unique per (tenant, contact, number).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "conversations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: ConversationId,
    pub tenant_id: TenantId,
    pub contact_id: ContactId,
    pub phone_number_id: PhoneNumberId,
    /// `open` or `closed`.
    pub status: String,
    /// True after a person replied by hand: the bot stays quiet until "Resume bot".
    pub bot_paused: bool,
    /// The built-in bot's script state (JSON of `domain::script::ScriptState`).
    pub bot_state: Option<Json>,
    /// Inbound messages since someone last opened the thread.
    pub unread_count: i32,
    pub last_message_at: DateTimeUtc,
    /// The last message's first characters, for the inbox list.
    pub last_message_preview: String,
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
