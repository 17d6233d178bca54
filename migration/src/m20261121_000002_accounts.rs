//! Accounts: users, their memberships in tenants (roles), and server-side sessions.
//!
//! Sessions are stored by the SHA-256 of their id, so the table alone does not let anyone use
//! a live session.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    PasswordHash,
    Name,
    EmailVerifiedAt,
    DisabledAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    Id,
    TenantId,
    UserId,
    Role,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    IdHash,
    UserId,
    TenantId,
    CreatedAt,
    LastSeenAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    NotifyPhone,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // The business's own phone, for notifications to the owner (E.164).
        m.alter_table(
            Table::alter()
                .table(Tenants::Table)
                .add_column(string_null(Tenants::NotifyPhone))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Users::Table)
                .col(pk_uuid(Users::Id))
                .col(string(Users::Email))
                .col(string_null(Users::PasswordHash))
                .col(string_null(Users::Name))
                .col(timestamp_with_time_zone_null(Users::EmailVerifiedAt))
                .col(timestamp_with_time_zone_null(Users::DisabledAt))
                .col(timestamp_with_time_zone(Users::CreatedAt))
                .to_owned(),
        )
        .await?;
        // Emails are stored lower-cased; one account per address.
        m.create_index(
            Index::create()
                .name("ux_users_email")
                .table(Users::Table)
                .col(Users::Email)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Memberships::Table)
                .col(pk_uuid(Memberships::Id))
                .col(uuid(Memberships::TenantId))
                .col(uuid(Memberships::UserId))
                .col(string(Memberships::Role))
                .col(timestamp_with_time_zone(Memberships::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(Memberships::Table)
                        .from_col(Memberships::TenantId)
                        .to_tbl(Tenants::Table)
                        .to_col(Tenants::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(Memberships::Table)
                        .from_col(Memberships::UserId)
                        .to_tbl(Users::Table)
                        .to_col(Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_memberships_tenant_user")
                .table(Memberships::Table)
                .col(Memberships::TenantId)
                .col(Memberships::UserId)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_memberships_user")
                .table(Memberships::Table)
                .col(Memberships::UserId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Sessions::Table)
                .col(string(Sessions::IdHash).primary_key())
                .col(uuid(Sessions::UserId))
                .col(uuid_null(Sessions::TenantId))
                .col(timestamp_with_time_zone(Sessions::CreatedAt))
                .col(timestamp_with_time_zone(Sessions::LastSeenAt))
                .col(timestamp_with_time_zone(Sessions::ExpiresAt))
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(Sessions::Table)
                        .from_col(Sessions::UserId)
                        .to_tbl(Users::Table)
                        .to_col(Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_sessions_user")
                .table(Sessions::Table)
                .col(Sessions::UserId)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Sessions::Table.into_iden(),
            Memberships::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
