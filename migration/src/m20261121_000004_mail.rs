//! Member invites, one-time email tokens (verification, password reset), and the simulator's
//! mailbox (mail sent while no mail provider is configured).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Invites {
    Table,
    Id,
    TenantId,
    Email,
    Role,
    TokenHash,
    InvitedBy,
    ExpiresAt,
    AcceptedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum EmailTokens {
    Table,
    TokenHash,
    UserId,
    Purpose,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Mailbox {
    Table,
    Id,
    ToEmail,
    Subject,
    BodyText,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Invites::Table)
                .col(pk_uuid(Invites::Id))
                .col(uuid(Invites::TenantId))
                .col(string(Invites::Email))
                .col(string(Invites::Role))
                .col(string(Invites::TokenHash).unique_key())
                .col(uuid_null(Invites::InvitedBy))
                .col(timestamp_with_time_zone(Invites::ExpiresAt))
                .col(timestamp_with_time_zone_null(Invites::AcceptedAt))
                .col(timestamp_with_time_zone(Invites::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(Invites::Table)
                        .from_col(Invites::TenantId)
                        .to_tbl(Tenants::Table)
                        .to_col(Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_invites_tenant")
                .table(Invites::Table)
                .col(Invites::TenantId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(EmailTokens::Table)
                .col(string(EmailTokens::TokenHash).primary_key())
                .col(uuid(EmailTokens::UserId))
                .col(string(EmailTokens::Purpose))
                .col(timestamp_with_time_zone(EmailTokens::ExpiresAt))
                .col(timestamp_with_time_zone_null(EmailTokens::UsedAt))
                .col(timestamp_with_time_zone(EmailTokens::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(EmailTokens::Table)
                        .from_col(EmailTokens::UserId)
                        .to_tbl(Users::Table)
                        .to_col(Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Mailbox::Table)
                .col(pk_uuid(Mailbox::Id))
                .col(string(Mailbox::ToEmail))
                .col(string(Mailbox::Subject))
                .col(text(Mailbox::BodyText))
                .col(timestamp_with_time_zone(Mailbox::CreatedAt))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Mailbox::Table.into_iden(),
            EmailTokens::Table.into_iden(),
            Invites::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
