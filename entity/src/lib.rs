//! Switchboard's tables as sea-orm entities, and the only place that builds tenant queries.
//!
//! Rules this crate enforces for everything above it:
//! - A tenant-owned entity implements [`TenantOwned`]; queries start from
//!   [`TenantOwned::scoped`] (a `SELECT … WHERE tenant_id = ?`), never from `Entity::find()`.
//!   Another tenant's id simply finds nothing (a 404 upstream).
//! - Tenant work runs inside a [`TenantTx`]: one transaction bound to one tenant. On Postgres
//!   the tenant will also be set per transaction for row-level security; callers do not change.
//! - The few lookups that must cross tenants (a webhook's `To` number, an API key hash) are
//!   named functions in [`lookup`], each returning only what identifies the tenant.
//! - The inbound hot path writes through [`ingest`], which batches many webhooks into one
//!   transaction (group commit) through the inbound writer's own connection; every
//!   statement binds the tenant of its row.

pub mod agency;
pub mod api_key;
pub mod contact;
pub mod conversation;
pub mod email_token;
pub mod identity;
pub mod ingest;
pub mod invite;
pub mod lookup;
pub mod mailbox;
pub mod membership;
pub mod message;
pub mod phone_number;
pub mod session;
pub mod tenancy;
pub mod tenant;
pub mod user;

pub use sea_orm;
pub use tenancy::{Db, TenantOwned, TenantTx};
