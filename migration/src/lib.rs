//! Switchboard's schema. One migration per file, each runs on SQLite and Postgres.
//!
//! On SQLite the migrations run on the write connection, which runs without cache spilling
//! (`services::walbuf`): a transaction's dirty pages stay in memory until its commit. A
//! migration that rewrites a large table must do it in chunks of its own transactions.
//!
//! [`run`] applies everything a database needs: our tables (sea-orm migrations, tracked in
//! `seaql_migrations`) and, on SQLite, the job queue's tables (apalis-sqlite's own migrations,
//! tracked in `_sqlx_migrations`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection};

mod m20261121_000001_init;
mod m20261121_000002_accounts;
mod m20261121_000003_agencies;
mod m20261121_000004_mail;
mod m20261206_000005_outbox_key_index;
mod m20261207_000006_in_reply_to;
mod m20261207_000007_released_numbers;
mod m20261207_000008_not_before;
pub mod postgres;

/// Our sea-orm migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_init::Migration),
            Box::new(m20261121_000002_accounts::Migration),
            Box::new(m20261121_000003_agencies::Migration),
            Box::new(m20261121_000004_mail::Migration),
            Box::new(m20261206_000005_outbox_key_index::Migration),
            Box::new(m20261207_000006_in_reply_to::Migration),
            Box::new(m20261207_000007_released_numbers::Migration),
            Box::new(m20261207_000008_not_before::Migration),
        ]
    }
}

/// Applies all pending migrations: ours, then on SQLite apalis-sqlite's job tables, on
/// Postgres the roles, grants and row-level security of [`postgres::secure`]. On Postgres
/// everything runs under an advisory lock, so processes starting together on one database
/// migrate one after the other.
///
/// apalis-sqlite's `setup()` is deliberately not used: it sets `PRAGMA synchronous = OFF`,
/// which trades durability for speed. We run only its migrations.
///
/// # Errors
/// The first migration that fails, with the database's message.
pub async fn run(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == DatabaseBackend::Postgres {
        // `db` is a pool of one connection: the lock and the work share a session.
        db.execute_unprepared("SELECT pg_advisory_lock(hashtext('switchboard.migrate'))")
            .await?;
        let result = async {
            Migrator::up(db, None).await?;
            postgres::secure(db).await
        }
        .await;
        db.execute_unprepared("SELECT pg_advisory_unlock(hashtext('switchboard.migrate'))")
            .await?;
        return result;
    }
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
        pin_job_queue_statistics(db).await?;
    }
    Ok(())
}

/// Planner statistics (`sqlite_stat1`) for the job queue's table, as "rows, then rows per
/// distinct prefix" of each index, describing a large queue: few distinct statuses, unique ids.
///
/// Without statistics SQLite plans apalis-sqlite's lock query (`… WHERE id IN (json_each(?))
/// AND (status = 'Queued' OR status = 'Pending' OR …)`) as a scan of every job with those
/// statuses (6 ms per lock with a 50,000-job backlog) instead of an id lookup; `ANALYZE` fixes
/// it only once the table is big, and rewrites stats from whatever the table holds. Pinned
/// figures give the same, checked plans from the first start: lock and ack by id, fetch
/// through the partial pending/failed indexes (no sort), purge through the done index.
/// Writing `sqlite_stat1` by hand is supported: <https://sqlite.org/fileformat2.html#stat1tab>.
const JOBS_STATS: &[(&str, &str)] = &[
    ("sqlite_autoindex_Jobs_1", "1000000 1"),
    ("idx_jobs_status_run_at", "1000000 200000 10"),
    ("idx_jobs_claimable", "1000000 200000 100000"),
    (
        "idx_jobs_job_type_status_run_at",
        "1000000 500000 200000 10",
    ),
    ("idx_jobs_idempotency_key", "1000000 500000 1"),
    ("idx_jobs_pending", "100000 50000 50000 10 1"),
    ("idx_jobs_failed", "1000 500 500 10 1"),
    ("idx_jobs_completed_done_at", "800000 300000 10 5"),
    ("idx_jobs_running", "1000 10"),
];

async fn pin_job_queue_statistics(db: &DatabaseConnection) -> Result<(), DbErr> {
    // ANALYZE of a tiny table creates sqlite_stat1 if it does not exist yet.
    db.execute_unprepared("ANALYZE seaql_migrations").await?;
    db.execute_unprepared("DELETE FROM sqlite_stat1 WHERE tbl = 'Jobs'")
        .await?;
    for (index, stat) in JOBS_STATS {
        db.execute_unprepared(&format!(
            "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('Jobs', '{index}', '{stat}')"
        ))
        .await?;
    }
    // Reload the statistics into this connection's planner.
    db.execute_unprepared("ANALYZE sqlite_schema").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_orm::Database;

    use super::*;

    /// Every migration goes down and up again on SQLite, the newest one with a released
    /// number in the table (its `down` must drop it before the full unique index returns).
    #[tokio::test]
    async fn every_migration_goes_down_and_up_again() {
        let db = Database::connect("sqlite::memory:").await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        db.execute_unprepared(
            "INSERT INTO tenants (id, name, time_zone, created_at) VALUES (x'01', 'T', 'UTC', '2026-12-07T00:00:00Z'); \
             INSERT INTO phone_numbers (id, tenant_id, e164, bot, created_at, released_at) VALUES \
             (x'02', x'01', '+14155550100', 'none', '2026-12-07T00:00:00Z', '2026-12-07T01:00:00Z'), \
             (x'03', x'01', '+14155550100', 'none', '2026-12-07T00:00:00Z', NULL)",
        )
        .await
        .unwrap();
        Migrator::down(&db, Some(1)).await.unwrap();
        Migrator::down(&db, None).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
    }
}
