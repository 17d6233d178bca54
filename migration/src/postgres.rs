//! Postgres only: the roles, grants and row-level security that make the database itself keep
//! tenants apart (defense in depth behind the scoped queries).
//!
//! - The tables belong to the `DATABASE_URL` user, which runs the migrations. The application
//!   works as [`APP_ROLE`] (`SET ROLE` on each pooled connection): not an owner, no
//!   `BYPASSRLS`, and only `SELECT`/`INSERT`/`UPDATE`/`DELETE` on our tables.
//! - Every table in [`TENANT_TABLES`] has row-level security enabled and FORCEd (so even the
//!   owner obeys it) with one policy for [`APP_ROLE`]: a row is visible and writable only when
//!   its tenant column equals the transaction's `app.tenant_id` ([`SET_TENANT`]). With no
//!   tenant set, every such table reads as empty, `INSERT` fails and `UPDATE`/`DELETE` touch
//!   nothing.
//! - [`LOOKUP_ROLE`] may `SELECT` every row of the tables in [`LOOKUP_TABLES`] and nothing
//!   else: only `entity::lookup` takes it, inside its own read-only transaction (which number
//!   or API key belongs to which tenant).
//!
//! [`SET_TENANT`]: switchboard_entity::tenancy::SET_TENANT

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseConnection};
pub use switchboard_entity::tenancy::{APP_ROLE, LOOKUP_ROLE};

/// Tables whose every row belongs to one tenant, with the column that names it.
pub const TENANT_TABLES: &[(&str, &str)] = &[
    ("tenants", "id"),
    ("phone_numbers", "tenant_id"),
    ("api_keys", "tenant_id"),
    ("contacts", "tenant_id"),
    ("conversations", "tenant_id"),
    ("messages", "tenant_id"),
    ("memberships", "tenant_id"),
    ("invites", "tenant_id"),
];

/// The tables `entity::lookup` reads across tenants, the only ones [`LOOKUP_ROLE`] may read:
/// numbers, tenants, API keys, memberships and invites (who owns what), and messages (by
/// MessageSid, and the maintenance sweep). Contacts, conversations, users, sessions and the
/// rest stay out of its reach.
pub const LOOKUP_TABLES: &[&str] = &[
    "tenants",
    "phone_numbers",
    "api_keys",
    "memberships",
    "invites",
    "messages",
];

/// Tables with a `tenant_id` column that are not tenant data: `sessions` belongs to a user
/// (its `tenant_id` is the workspace the user switched to, checked on every request).
pub const NOT_TENANT_DATA: &[&str] = &["sessions"];

/// The transaction's tenant, or NULL (matching nothing) when none is set: `current_setting`
/// with `missing_ok` gives NULL before any `SET LOCAL` and `''` after one ended.
pub const CURRENT_TENANT: &str = "NULLIF(current_setting('app.tenant_id', true), '')::uuid";

/// Times [`secure`] is tried when another database of the same server creates the roles at
/// the same moment (roles are shared by the server's databases).
const ATTEMPTS: usize = 5;

/// Creates the roles if missing, grants, and enables row-level security with its policies on
/// every table of [`TENANT_TABLES`]. Idempotent: what exists is left as is.
///
/// # Errors
/// The database's error; [`DbErr::Migration`] when a table has a `tenant_id` column and is
/// neither in [`TENANT_TABLES`] nor in [`NOT_TENANT_DATA`] (a new table must choose).
pub async fn secure(db: &DatabaseConnection) -> Result<(), DbErr> {
    let mut attempt = 1;
    loop {
        match secure_once(db).await {
            Err(e) if attempt < ATTEMPTS && concurrent(&e) => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50 * attempt as u64)).await;
            }
            other => return other,
        }
    }
}

/// Errors of two sessions changing the same role at once.
fn concurrent(e: &DbErr) -> bool {
    let text = e.to_string();
    text.contains("concurrently")
        || text.contains("already exists")
        || text.contains("duplicate key")
}

async fn secure_once(db: &DatabaseConnection) -> Result<(), DbErr> {
    check_tenant_columns(db).await?;
    for role in [APP_ROLE, LOOKUP_ROLE] {
        db.execute_unprepared(&format!(
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
                 CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS; \
               END IF; \
               IF NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN \
                 EXECUTE format('GRANT {role} TO %I', current_user); \
               END IF; \
             END $$"
        ))
        .await?;
    }
    db.execute_unprepared(&format!(
        "GRANT USAGE ON SCHEMA public TO {APP_ROLE}, {LOOKUP_ROLE}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}; \
         REVOKE INSERT, UPDATE, DELETE ON seaql_migrations FROM {APP_ROLE}; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}; \
         REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {LOOKUP_ROLE}; \
         GRANT SELECT ON {} TO {LOOKUP_ROLE};",
        LOOKUP_TABLES.join(", ")
    ))
    .await?;
    for (table, column) in TENANT_TABLES {
        db.execute_unprepared(&format!(
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = 'public.{table}'::regclass \
                              AND relrowsecurity AND relforcerowsecurity) THEN \
                 ALTER TABLE {table} ENABLE ROW LEVEL SECURITY; \
                 ALTER TABLE {table} FORCE ROW LEVEL SECURITY; \
               END IF; \
               IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'public' \
                              AND tablename = '{table}' AND policyname = 'tenant_isolation') THEN \
                 CREATE POLICY tenant_isolation ON {table} FOR ALL TO {APP_ROLE} \
                   USING ({column} = {CURRENT_TENANT}) WITH CHECK ({column} = {CURRENT_TENANT}); \
               END IF; \
             END $$"
        ))
        .await?;
        let lookup_policy = if LOOKUP_TABLES.contains(table) {
            format!(
                "IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'public' \
                   AND tablename = '{table}' AND policyname = 'tenant_lookup') THEN \
                   CREATE POLICY tenant_lookup ON {table} FOR SELECT TO {LOOKUP_ROLE} USING (true); \
                 END IF;"
            )
        } else {
            format!("DROP POLICY IF EXISTS tenant_lookup ON {table};")
        };
        db.execute_unprepared(&format!("DO $$ BEGIN {lookup_policy} END $$"))
            .await?;
    }
    Ok(())
}

async fn check_tenant_columns(db: &DatabaseConnection) -> Result<(), DbErr> {
    let rows = db
        .query_all_raw(sea_orm_migration::sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT table_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND column_name = 'tenant_id' ORDER BY 1",
        ))
        .await?;
    for row in rows {
        let table: String = row.try_get("", "table_name")?;
        let listed = TENANT_TABLES.iter().any(|(t, _)| *t == table)
            || NOT_TENANT_DATA.contains(&table.as_str());
        if !listed {
            return Err(DbErr::Migration(format!(
                "table {table} has a tenant_id column but no row-level security: list it in \
                 migration::postgres::TENANT_TABLES (or NOT_TENANT_DATA, saying why)"
            )));
        }
    }
    Ok(())
}
