//! Agencies (a login that runs many businesses) and sign-in identities from OIDC providers.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Agencies {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AgencyAdmins {
    Table,
    AgencyId,
    UserId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UserIdentities {
    Table,
    Issuer,
    Subject,
    UserId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tenants {
    Table,
    AgencyId,
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
                .table(Agencies::Table)
                .col(pk_uuid(Agencies::Id))
                .col(string(Agencies::Name))
                .col(timestamp_with_time_zone(Agencies::CreatedAt))
                .to_owned(),
        )
        .await?;
        // A tenant run by an agency (a sub-account); NULL for an independent business.
        m.alter_table(
            Table::alter()
                .table(Tenants::Table)
                .add_column(uuid_null(Tenants::AgencyId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_tenants_agency")
                .table(Tenants::Table)
                .col(Tenants::AgencyId)
                .to_owned(),
        )
        .await?;
        // Agency admins act as admins in every tenant of their agency.
        m.create_table(
            Table::create()
                .table(AgencyAdmins::Table)
                .col(uuid(AgencyAdmins::AgencyId))
                .col(uuid(AgencyAdmins::UserId))
                .col(timestamp_with_time_zone(AgencyAdmins::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(AgencyAdmins::AgencyId)
                        .col(AgencyAdmins::UserId),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(AgencyAdmins::Table)
                        .from_col(AgencyAdmins::AgencyId)
                        .to_tbl(Agencies::Table)
                        .to_col(Agencies::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(AgencyAdmins::Table)
                        .from_col(AgencyAdmins::UserId)
                        .to_tbl(Users::Table)
                        .to_col(Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_agency_admins_user")
                .table(AgencyAdmins::Table)
                .col(AgencyAdmins::UserId)
                .to_owned(),
        )
        .await?;
        // An OIDC sign-in: the provider's (iss, sub) pair names one user.
        m.create_table(
            Table::create()
                .table(UserIdentities::Table)
                .col(string(UserIdentities::Issuer))
                .col(string(UserIdentities::Subject))
                .col(uuid(UserIdentities::UserId))
                .col(timestamp_with_time_zone(UserIdentities::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(UserIdentities::Issuer)
                        .col(UserIdentities::Subject),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(UserIdentities::Table)
                        .from_col(UserIdentities::UserId)
                        .to_tbl(Users::Table)
                        .to_col(Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            UserIdentities::Table.into_iden(),
            AgencyAdmins::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        m.drop_index(
            Index::drop()
                .name("ix_tenants_agency")
                .table(Tenants::Table)
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Tenants::Table)
                .drop_column(Tenants::AgencyId)
                .to_owned(),
        )
        .await?;
        m.drop_table(Table::drop().table(Agencies::Table).to_owned())
            .await?;
        Ok(())
    }
}
