//! Each reply names the inbound text it answers (`messages.in_reply_to`).
//!
//! A compliance reply may go to an opted-out contact only when it answers a text received at
//! or after the opt-out: the confirmation of that STOP itself, or a HELP sent since. Its own
//! creation time cannot tell: a START's confirmation decided after a later STOP was written
//! after the opt-out, yet answers a text from before it and must not go out. The send path
//! reads the answered text's time through this column (see `messaging::Outgoing`).
//!
//! Nullable: inbound texts, manual sends and rows from before this migration have none. No
//! index: it is read through the reply's own row, never searched.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    InReplyTo,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Messages::Table)
                .add_column(uuid_null(Messages::InReplyTo))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Messages::Table)
                .drop_column(Messages::InReplyTo)
                .to_owned(),
        )
        .await
    }
}
