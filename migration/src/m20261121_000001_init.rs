//! The first schema: tenants, their numbers and API keys, contacts, conversations, messages.
//!
//! Every tenant-owned table has `tenant_id` (first column of its indexes, so tenant-scoped
//! queries are index range scans). Ids are UUIDv7 chosen by the application.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
    Name,
    TimeZone,
    TwilioAccountSid,
    TwilioAuthTokenSealed,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PhoneNumbers {
    Table,
    Id,
    TenantId,
    E164,
    Label,
    Bot,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    TenantId,
    Name,
    Prefix,
    KeyHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Contacts {
    Table,
    Id,
    TenantId,
    Phone,
    Name,
    Status,
    Fields,
    OptedOutAt,
    OptOutKeyword,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    TenantId,
    ContactId,
    PhoneNumberId,
    Status,
    BotPaused,
    BotState,
    UnreadCount,
    LastMessageAt,
    LastMessagePreview,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Messages {
    Table,
    Id,
    TenantId,
    ConversationId,
    ContactId,
    Direction,
    Source,
    Body,
    Media,
    ProviderSid,
    Status,
    ErrorCode,
    ErrorMessage,
    IdempotencyKey,
    Segments,
    Encoding,
    Attempts,
    HandledAt,
    Compliance,
    ProviderReplied,
    CreatedAt,
    UpdatedAt,
    SentAt,
}

fn tenant_fk<T: IntoIden + 'static>(table: T) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from_tbl(table)
        .from_col(Alias::new("tenant_id"))
        .to_tbl(Tenants::Table)
        .to_col(Tenants::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Tenants::Table)
                .col(pk_uuid(Tenants::Id))
                .col(string(Tenants::Name))
                .col(string(Tenants::TimeZone))
                .col(string_null(Tenants::TwilioAccountSid))
                .col(text_null(Tenants::TwilioAuthTokenSealed))
                .col(timestamp_with_time_zone(Tenants::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(PhoneNumbers::Table)
                .col(pk_uuid(PhoneNumbers::Id))
                .col(uuid(PhoneNumbers::TenantId))
                .col(string(PhoneNumbers::E164))
                .col(string_null(PhoneNumbers::Label))
                .col(string(PhoneNumbers::Bot))
                .col(timestamp_with_time_zone(PhoneNumbers::CreatedAt))
                .foreign_key(&mut tenant_fk(PhoneNumbers::Table))
                .to_owned(),
        )
        .await?;
        // A number belongs to exactly one tenant: webhooks find the tenant by the `To` number.
        m.create_index(
            Index::create()
                .name("ux_phone_numbers_e164")
                .table(PhoneNumbers::Table)
                .col(PhoneNumbers::E164)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_phone_numbers_tenant")
                .table(PhoneNumbers::Table)
                .col(PhoneNumbers::TenantId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .col(pk_uuid(ApiKeys::Id))
                .col(uuid(ApiKeys::TenantId))
                .col(string(ApiKeys::Name))
                .col(string(ApiKeys::Prefix))
                .col(string(ApiKeys::KeyHash))
                .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                .foreign_key(&mut tenant_fk(ApiKeys::Table))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_api_keys_hash")
                .table(ApiKeys::Table)
                .col(ApiKeys::KeyHash)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_api_keys_tenant")
                .table(ApiKeys::Table)
                .col(ApiKeys::TenantId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Contacts::Table)
                .col(pk_uuid(Contacts::Id))
                .col(uuid(Contacts::TenantId))
                .col(string(Contacts::Phone))
                .col(string_null(Contacts::Name))
                .col(string(Contacts::Status))
                .col(json_null(Contacts::Fields))
                .col(timestamp_with_time_zone_null(Contacts::OptedOutAt))
                .col(string_null(Contacts::OptOutKeyword))
                .col(timestamp_with_time_zone(Contacts::CreatedAt))
                .col(timestamp_with_time_zone(Contacts::UpdatedAt))
                .foreign_key(&mut tenant_fk(Contacts::Table))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_contacts_tenant_phone")
                .table(Contacts::Table)
                .col(Contacts::TenantId)
                .col(Contacts::Phone)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Conversations::Table)
                .col(pk_uuid(Conversations::Id))
                .col(uuid(Conversations::TenantId))
                .col(uuid(Conversations::ContactId))
                .col(uuid(Conversations::PhoneNumberId))
                .col(string(Conversations::Status))
                .col(boolean(Conversations::BotPaused))
                .col(json_null(Conversations::BotState))
                .col(integer(Conversations::UnreadCount))
                .col(timestamp_with_time_zone(Conversations::LastMessageAt))
                .col(string(Conversations::LastMessagePreview))
                .col(timestamp_with_time_zone(Conversations::CreatedAt))
                .col(timestamp_with_time_zone(Conversations::UpdatedAt))
                .foreign_key(&mut tenant_fk(Conversations::Table))
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(Conversations::Table)
                        .from_col(Conversations::ContactId)
                        .to_tbl(Contacts::Table)
                        .to_col(Contacts::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(Conversations::Table)
                        .from_col(Conversations::PhoneNumberId)
                        .to_tbl(PhoneNumbers::Table)
                        .to_col(PhoneNumbers::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_conversations_thread")
                .table(Conversations::Table)
                .col(Conversations::TenantId)
                .col(Conversations::ContactId)
                .col(Conversations::PhoneNumberId)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_conversations_recent")
                .table(Conversations::Table)
                .col(Conversations::TenantId)
                .col(Conversations::LastMessageAt)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Messages::Table)
                .col(pk_uuid(Messages::Id))
                .col(uuid(Messages::TenantId))
                .col(uuid(Messages::ConversationId))
                .col(uuid(Messages::ContactId))
                .col(string(Messages::Direction))
                .col(string(Messages::Source))
                .col(text(Messages::Body))
                .col(json_null(Messages::Media))
                .col(string_null(Messages::ProviderSid))
                .col(string(Messages::Status))
                .col(integer_null(Messages::ErrorCode))
                .col(string_null(Messages::ErrorMessage))
                .col(string_null(Messages::IdempotencyKey))
                .col(integer(Messages::Segments))
                .col(string(Messages::Encoding))
                .col(integer(Messages::Attempts))
                .col(timestamp_with_time_zone_null(Messages::HandledAt))
                .col(string_null(Messages::Compliance))
                .col(boolean(Messages::ProviderReplied))
                .col(timestamp_with_time_zone(Messages::CreatedAt))
                .col(timestamp_with_time_zone(Messages::UpdatedAt))
                .col(timestamp_with_time_zone_null(Messages::SentAt))
                .foreign_key(&mut tenant_fk(Messages::Table))
                .foreign_key(
                    ForeignKey::create()
                        .from_tbl(Messages::Table)
                        .from_col(Messages::ConversationId)
                        .to_tbl(Conversations::Table)
                        .to_col(Conversations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        // Twilio retries a webhook with the same MessageSid: the unique index makes it a no-op.
        // NULLs (outbound rows not yet sent) do not collide.
        m.create_index(
            Index::create()
                .name("ux_messages_provider_sid")
                .table(Messages::Table)
                .col(Messages::ProviderSid)
                .unique()
                .to_owned(),
        )
        .await?;
        // Outbox idempotency: one row per (tenant, key) however often a reply is decided.
        m.create_index(
            Index::create()
                .name("ux_messages_idempotency")
                .table(Messages::Table)
                .col(Messages::TenantId)
                .col(Messages::IdempotencyKey)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_messages_thread")
                .table(Messages::Table)
                .col(Messages::TenantId)
                .col(Messages::ConversationId)
                .col(Messages::Id)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Messages::Table.into_iden(),
            Conversations::Table.into_iden(),
            Contacts::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            PhoneNumbers::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
