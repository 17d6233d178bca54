//! `tenants`: one row per business. Not tenant-scoped itself: read by id only.

use sea_orm::entity::prelude::*;
use switchboard_domain::{AgencyId, TenantId};

/// A business using Switchboard.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TenantId,
    /// The business name customers see in compliance replies ("Demo Plumbing").
    pub name: String,
    /// IANA time zone, e.g. `America/Chicago` (business and quiet hours are local).
    pub time_zone: String,
    /// The tenant's own Twilio account (`AC…`), when it brought one.
    pub twilio_account_sid: Option<String>,
    /// That account's auth token, sealed with AES-256-GCM under a key derived from
    /// `SECRET_KEY` (base64 of nonce || ciphertext).
    pub twilio_auth_token_sealed: Option<String>,
    pub created_at: DateTimeUtc,
    /// The business's own phone for owner notifications, E.164.
    pub notify_phone: Option<String>,
    /// The agency running this business (a sub-account), if any.
    pub agency_id: Option<AgencyId>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
