//! Switchboard's schema. One migration per file, each runs on SQLite and Postgres.
//!
//! [`run`] applies everything a database needs: our tables (sea-orm migrations, tracked in
//! `seaql_migrations`) and, on SQLite, the job queue's tables (apalis-sqlite's own migrations,
//! tracked in `_sqlx_migrations`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection};

mod m20261121_000001_init;

/// Our sea-orm migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261121_000001_init::Migration)]
    }
}

/// Applies all pending migrations: ours, then (on SQLite) apalis-sqlite's job tables.
///
/// apalis-sqlite's `setup()` is deliberately not used: it sets `PRAGMA synchronous = OFF`,
/// which trades durability for speed. We run only its migrations.
///
/// # Errors
/// The first migration that fails, with the database's message.
pub async fn run(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await?;
    if db.get_database_backend() == DatabaseBackend::Sqlite {
        apalis_sqlite::SqliteStorage::migrations()
            .run(db.get_sqlite_connection_pool())
            .await
            .map_err(|e| DbErr::Migration(format!("job queue tables: {e}")))?;
        // apalis-sqlite 1.0's ack (`… WHERE Jobs.id = j.task_id AND Jobs.lock_by = ?`) is
        // planned through this index on `lock_by`, which finished jobs keep: every ack then
        // scans every job the worker ever finished (measured: 42-68 ms per ack at 8,000
        // rows, 0.3-0.6 ms without the index). The id index serves the ack instead. Re-check
        // after upgrading apalis-sqlite.
        db.execute_unprepared("DROP INDEX IF EXISTS LIdx").await?;
    }
    Ok(())
}
