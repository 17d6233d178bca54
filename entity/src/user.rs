//! `users`: people who sign in. Not tenant-owned: a user belongs to tenants through
//! [`crate::membership`].

use sea_orm::entity::prelude::*;
use switchboard_domain::UserId;

/// A person with a sign-in.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: UserId,
    /// Lower-cased, unique.
    pub email: String,
    /// Argon2id PHC string; `None` for accounts that only sign in through OIDC.
    pub password_hash: Option<String>,
    pub name: Option<String>,
    pub email_verified_at: Option<DateTimeUtc>,
    /// When set, the user cannot sign in and every session of theirs is refused.
    pub disabled_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
