//! A removed number is released, not deleted (`phone_numbers.released_at`).
//!
//! Deleting the row cascaded through `conversations.phone_number_id` and
//! `messages.conversation_id` (both `ON DELETE CASCADE`): removing a number in settings erased
//! every conversation held on it and its whole message history. A released number keeps its
//! row, so its conversations stay readable; webhooks to it find no owner (404), and nothing is
//! sent from it.
//!
//! `ux_phone_numbers_e164` becomes partial (`WHERE released_at IS NULL`, on SQLite and
//! Postgres alike): a number belongs to at most one tenant at a time, and a released one may
//! be added again, by its old tenant (which takes its row back) or by another.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PhoneNumbers {
    Table,
    E164,
    ReleasedAt,
}

const INDEX: &str = "ux_phone_numbers_e164";

fn drop_index() -> IndexDropStatement {
    Index::drop()
        .name(INDEX)
        .table(PhoneNumbers::Table)
        .to_owned()
}

/// The index over every row (`live_only = false`, the first migration's) or over numbers in
/// use.
fn create_index(live_only: bool) -> IndexCreateStatement {
    let mut index = Index::create()
        .name(INDEX)
        .table(PhoneNumbers::Table)
        .col(PhoneNumbers::E164)
        .unique()
        .to_owned();
    if live_only {
        index.and_where(Expr::col(PhoneNumbers::ReleasedAt).is_null());
    }
    index
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(PhoneNumbers::Table)
                .add_column(timestamp_with_time_zone_null(PhoneNumbers::ReleasedAt))
                .to_owned(),
        )
        .await?;
        m.drop_index(drop_index()).await?;
        m.create_index(create_index(true)).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Released rows would collide under the full index: their history goes with them,
        // as it did before this migration.
        m.get_connection()
            .execute_unprepared("DELETE FROM phone_numbers WHERE released_at IS NOT NULL")
            .await?;
        m.drop_index(drop_index()).await?;
        m.create_index(create_index(false)).await?;
        m.alter_table(
            Table::alter()
                .table(PhoneNumbers::Table)
                .drop_column(PhoneNumbers::ReleasedAt)
                .to_owned(),
        )
        .await
    }
}
