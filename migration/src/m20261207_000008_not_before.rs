//! A reply held back by the provider's rate limit records when it may be tried again
//! (`messages.not_before`).
//!
//! Twilio answers a create call over the account's limits with HTTP 429 (error 20429) and a
//! `Retry-After`. The reply goes back to the outbox and its own retry job is scheduled for
//! then, but other jobs reach the row too: the re-run of the job of the reply before it, a
//! second job of the same message. Without the time on the row they sent it at once, into
//! another 429. The send path reads this column (see `messaging::Outgoing::due`).
//!
//! Nullable: rows never rate-limited have none. No index: it is read through the reply's own
//! row, never searched.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    NotBefore,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Messages::Table)
                .add_column(timestamp_with_time_zone_null(Messages::NotBefore))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Messages::Table)
                .drop_column(Messages::NotBefore)
                .to_owned(),
        )
        .await
    }
}
