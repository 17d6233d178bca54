//! `mailbox`: mail "sent" while no mail provider is configured, shown at `/simulator/mail`.

use sea_orm::entity::prelude::*;
use switchboard_domain::MailId;

/// One simulated mail.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mailbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: MailId,
    pub to_email: String,
    pub subject: String,
    pub body_text: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
