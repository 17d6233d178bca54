//! Tenant scoping: the [`TenantOwned`] trait and the tenant-bound transaction [`TenantTx`].

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    DeleteMany, EntityTrait, QueryFilter, Select, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait, UpdateMany,
};
use switchboard_domain::TenantId;

/// An entity whose rows belong to one tenant (it has a `tenant_id` column).
pub trait TenantOwned: EntityTrait {
    /// The entity's `tenant_id` column.
    fn tenant_column() -> Self::Column;

    /// The entity's `id` column.
    fn id_column() -> Self::Column;

    /// `SELECT … WHERE tenant_id = $tenant`: the start of every tenant query.
    fn scoped(tenant: TenantId) -> Select<Self> {
        Self::find().filter(Self::tenant_column().eq(tenant))
    }

    /// `SELECT … WHERE tenant_id = $tenant AND id = $id`: one row of this tenant, or none.
    fn by_id(tenant: TenantId, id: impl Into<sea_orm::Value>) -> Select<Self> {
        Self::scoped(tenant).filter(Self::id_column().eq(id))
    }

    /// `UPDATE … WHERE tenant_id = $tenant`: add the row filter and the values.
    fn scoped_update(tenant: TenantId) -> UpdateMany<Self> {
        Self::update_many().filter(Self::tenant_column().eq(tenant))
    }

    /// `UPDATE … WHERE tenant_id = $tenant AND id = $id`: add conditions and values.
    fn by_id_update(tenant: TenantId, id: impl Into<sea_orm::Value>) -> UpdateMany<Self> {
        Self::scoped_update(tenant).filter(Self::id_column().eq(id))
    }

    /// `DELETE … WHERE tenant_id = $tenant AND id = $id`: add conditions if needed.
    fn delete_by_id_scoped(tenant: TenantId, id: impl Into<sea_orm::Value>) -> DeleteMany<Self> {
        Self::delete_many()
            .filter(Self::tenant_column().eq(tenant))
            .filter(Self::id_column().eq(id))
    }

    /// `UPDATE … SET <the columns set in am> WHERE tenant_id = $tenant AND id = $id`.
    fn update_by_id<A>(tenant: TenantId, id: impl Into<sea_orm::Value>, am: A) -> UpdateMany<Self>
    where
        A: sea_orm::ActiveModelTrait<Entity = Self>,
    {
        Self::scoped_update(tenant)
            .set(am)
            .filter(Self::id_column().eq(id))
    }
}

/// A database as the application uses it: a pool of read-only connections, and ONE write
/// connection that every write goes through (SQLite allows one writer at a time; queueing for
/// it in-process is fair and fast, where SQLite's own busy handler sleeps and retries).
#[derive(Clone, Debug)]
pub struct Db {
    /// Read-only connections (concurrent under WAL).
    pub read: DatabaseConnection,
    /// The single read-write connection.
    pub write: DatabaseConnection,
}

/// Postgres: binds the transaction to a tenant for row-level security. `set_config(…, true)`
/// is `SET LOCAL`: the setting ends with the transaction, so a pooled connection never carries
/// one tenant into the next transaction. The policies read it back as `app.tenant_id`.
pub const SET_TENANT: &str = "SELECT set_config('app.tenant_id', $1, true)";

/// Postgres role the application works as (`SET ROLE` on every pooled connection): not the
/// owner of any table, no `BYPASSRLS`, so row-level security applies to everything it does.
pub const APP_ROLE: &str = "switchboard_app";

/// Postgres role of the cross-tenant lookups in [`crate::lookup`] (`SET LOCAL ROLE` inside
/// their own read-only transaction): it may only `SELECT`, and only it sees every tenant's
/// rows.
pub const LOOKUP_ROLE: &str = "switchboard_lookup";

/// Binds `conn`'s current transaction to `tenant` on Postgres ([`SET_TENANT`]); nothing on
/// SQLite. For the few write transactions that are not a [`TenantTx`] because they create the
/// tenant, or add a user to one, together with rows outside it (users, agencies).
///
/// # Errors
/// Database errors.
pub async fn bind_tenant<C: ConnectionTrait>(conn: &C, tenant: TenantId) -> Result<(), DbErr> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            SET_TENANT,
            [tenant.uuid().to_string().into()],
        ))
        .await?;
    }
    Ok(())
}

/// [`SET_TENANT`] on a raw sqlx connection inside its transaction (the inbound writer binds
/// each webhook's tenant before writing its rows).
///
/// # Errors
/// Database errors.
pub async fn bind_tenant_pg(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
) -> Result<(), sqlx::Error> {
    sqlx::query(SET_TENANT)
        .bind(tenant.uuid().to_string())
        .execute(conn)
        .await
        .map(drop)
}

/// One database transaction bound to one tenant.
///
/// Everything a request, job or webhook does for a tenant runs in one of these; queries take
/// the tenant from [`TenantTx::tenant`]. Reads run on a read-only connection; writes on the
/// single write connection, and on SQLite start `IMMEDIATE` (take the write lock up front, so
/// a read never has to upgrade to a write and fail with `SQLITE_BUSY`). On Postgres the
/// transaction starts with [`SET_TENANT`], and row-level security limits every statement in
/// it to that tenant's rows, whatever the query's own filter says.
pub struct TenantTx {
    tenant: TenantId,
    txn: DatabaseTransaction,
}

impl TenantTx {
    /// Begins a unit of work that only reads, for `tenant`: on SQLite on a read-only
    /// connection. (On Postgres it is not declared `READ ONLY`: sea-orm sends that as a
    /// statement of its own, a round trip per transaction on the hottest paths.)
    ///
    /// # Errors
    /// The database's error when the transaction cannot start.
    pub async fn read(db: &Db, tenant: TenantId) -> Result<Self, DbErr> {
        Self::begin(&db.read, tenant, TransactionOptions::default()).await
    }

    /// Begins a read-write unit of work for `tenant`.
    ///
    /// # Errors
    /// The database's error when the transaction cannot start.
    pub async fn write(db: &Db, tenant: TenantId) -> Result<Self, DbErr> {
        let db = &db.write;
        let options = match db.get_database_backend() {
            DbBackend::Sqlite => TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            },
            _ => TransactionOptions::default(),
        };
        Self::begin(db, tenant, options).await
    }

    async fn begin(
        db: &DatabaseConnection,
        tenant: TenantId,
        options: TransactionOptions,
    ) -> Result<Self, DbErr> {
        let txn = db.begin_with_options(options).await?;
        bind_tenant(&txn, tenant).await?;
        Ok(Self { tenant, txn })
    }

    /// The tenant every query in this transaction is for.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The connection to run sea-orm queries on.
    pub fn conn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    /// Commits the unit of work.
    ///
    /// # Errors
    /// The database's error; nothing was written then.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.txn.commit().await
    }
}
