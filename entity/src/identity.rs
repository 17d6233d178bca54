//! `user_identities`: OIDC sign-ins. A provider's `(iss, sub)` pair names one user; the email
//! it reports never does on its own.

use sea_orm::entity::prelude::*;
use switchboard_domain::UserId;

/// One provider identity of a user.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_identities")]
pub struct Model {
    /// The provider's issuer URL (`iss`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub issuer: String,
    /// The provider's subject identifier (`sub`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: String,
    pub user_id: UserId,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
