//! `agencies` and `agency_admins`: a login that runs many tenants (its sub-accounts). Not
//! tenant-owned: an agency is above its tenants (`tenants.agency_id`).

use sea_orm::entity::prelude::*;
use switchboard_domain::AgencyId;

/// An agency.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agencies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: AgencyId,
    pub name: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// `agency_admins`: a user who administers every tenant of one agency.
pub mod admin {
    use sea_orm::entity::prelude::*;
    use switchboard_domain::{AgencyId, UserId};

    /// One agency admin.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "agency_admins")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub agency_id: AgencyId,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: UserId,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
