//! The outbox's idempotency index covers only rows that have a key.
//!
//! `ux_messages_idempotency` (tenant, idempotency key) keeps one outbound row per key however
//! often a reply is decided. Inbound texts (every webhook) and rows sent without a key have
//! none, yet each got an entry under a NULL key: one more B-tree insert per text, in the
//! inbound writer's transaction, for an entry nothing ever looks up. As a partial unique
//! index (`WHERE idempotency_key IS NOT NULL`, on SQLite and Postgres alike) it holds keyed
//! rows only, and the outbox names that predicate in its `ON CONFLICT` target.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Messages {
    Table,
    TenantId,
    IdempotencyKey,
}

const INDEX: &str = "ux_messages_idempotency";

fn drop_index() -> IndexDropStatement {
    Index::drop().name(INDEX).table(Messages::Table).to_owned()
}

/// The index over every row (`partial = false`, the first migration's) or over keyed rows.
fn create_index(partial: bool) -> IndexCreateStatement {
    let mut index = Index::create()
        .name(INDEX)
        .table(Messages::Table)
        .col(Messages::TenantId)
        .col(Messages::IdempotencyKey)
        .unique()
        .to_owned();
    if partial {
        index.and_where(Expr::col(Messages::IdempotencyKey).is_not_null());
    }
    index
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(drop_index()).await?;
        m.create_index(create_index(true)).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(drop_index()).await?;
        m.create_index(create_index(false)).await
    }
}
