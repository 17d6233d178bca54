//! Group commit for the short write transactions of one tenant.
//!
//! A send job writes twice per text (claim the attempt, record the MessageSid), each a
//! transaction of one or two statements. On Postgres the transaction itself costs more round
//! trips than its statements (`BEGIN`, binding the tenant, `COMMIT`), and every round trip
//! costs both processes CPU. [`Groups`] runs the units of work of one tenant that arrive
//! while that tenant's transactions ([`SLOTS`] at most at once) are committing in ONE
//! transaction, one after another in arrival order: the first unit of a quiet tenant starts at
//! once, and under load the groups grow by themselves. Measured on 2 cores with Postgres +
//! Redis (docs/BENCHMARKS.md): sends/s +25% at 8 in flight; 32 in flight then reach
//! 1,860-2,200 sends/s, against 1,170 without groups.
//!
//! A unit's output reaches its caller only after the transaction committed. When the shared
//! transaction fails (a statement error aborts a Postgres transaction for everyone in it, and
//! a deadlock with another process aborts it too), it is rolled back and every unit runs
//! again alone, in a transaction of its own, so one unit's error is only its own; unless the
//! database could not take the work at all ([`ServiceError::is_database_unavailable`]): then
//! every unit fails at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use switchboard_domain::TenantId;
use switchboard_entity::{Db, TenantTx};
use tokio::sync::oneshot;

use crate::ServiceError;
use crate::jobs::Wakers;

/// Most units in one transaction; the rest wait for the next one.
pub const MAX_GROUP: usize = 64;

/// Transactions of one tenant's lane committing at once: while they run, what arrives waits
/// and goes into the next one together. (4 gave no more than 2.)
pub const SLOTS: usize = 2;

/// A unit of work: statements of one tenant that belong in one write transaction. Units of one
/// kind that meet run one after another in the same transaction. A unit may run twice (first
/// in a group that is then rolled back, then alone), so it must not act outside the
/// transaction; its caller acts on its output.
pub trait Unit: Sized + Send + Sync + 'static {
    /// What the caller gets once the transaction committed.
    type Output: Send + 'static;

    /// Whether the commit must be on disk before the caller gets the output (on SQLite; a
    /// Postgres commit always is). On SQLite a synced unit's group commits without syncing
    /// and then waits for the WAL's group syncer ([`crate::db::WalSyncer`]), so the one
    /// write connection is free while the disk works. `false` skips the sync altogether
    /// ([`crate::jobs::Wakers::commit_unsynced`]): only for units whose loss in a power
    /// failure is harmless because nothing leaves the database on them before a later
    /// synced commit.
    const SYNCED: bool = true;

    /// Runs the unit's statements in `tx`.
    fn run(&self, tx: &TenantTx)
    -> impl Future<Output = Result<Self::Output, ServiceError>> + Send;
}

/// A unit waiting in a lane for its transaction, and where its output goes.
type Waiting<U> = (
    U,
    oneshot::Sender<Result<<U as Unit>::Output, ServiceError>>,
);

/// One tenant's lane: the units waiting, and how many transactions are committing.
struct Lane<U: Unit> {
    waiting: Vec<Waiting<U>>,
    committing: usize,
}

/// The group-commit lanes of one kind of unit in a process, one lane per tenant with work in
/// flight. Cheap to clone.
pub struct Groups<U: Unit> {
    db: Db,
    /// The write connection's hooks (for units that commit unsynced).
    wakers: Wakers,
    lanes: Arc<Mutex<HashMap<TenantId, Lane<U>>>>,
}

impl<U: Unit> Clone for Groups<U> {
    fn clone(&self) -> Self {
        Self {
            db: self.db.clone(),
            wakers: self.wakers.clone(),
            lanes: self.lanes.clone(),
        }
    }
}

impl<U: Unit> Groups<U> {
    /// Lanes writing to `db`'s write connection, whose hooks `wakers` installed.
    pub fn new(db: Db, wakers: Wakers) -> Self {
        Self {
            db,
            wakers,
            lanes: Arc::default(),
        }
    }

    /// Runs `unit` for `tenant` in a write transaction, shared with the units of that tenant
    /// that arrive meanwhile; returns its output once committed.
    ///
    /// # Errors
    /// The unit's own error when it ran alone, or the database's when its transaction failed.
    pub async fn run(&self, tenant: TenantId, unit: U) -> Result<U::Output, ServiceError> {
        let (done, output) = oneshot::channel();
        let start = {
            let mut lanes = self.lanes.lock().expect("group lanes");
            let lane = lanes.entry(tenant).or_insert_with(|| Lane {
                waiting: Vec::new(),
                committing: 0,
            });
            lane.waiting.push((unit, done));
            let start = lane.committing < SLOTS;
            if start {
                lane.committing += 1;
            }
            start
        };
        if start {
            tokio::spawn(self.clone().committer(tenant));
        }
        output.await.unwrap_or(Err(ServiceError::Queue(
            "the group commit lane stopped".into(),
        )))
    }

    /// Commits what waits in `tenant`'s lane, one group after another, until nothing waits.
    async fn committer(self, tenant: TenantId) {
        let mut slot = Slot {
            groups: &self,
            tenant,
            held: true,
        };
        loop {
            let group: Vec<Waiting<U>> = {
                let mut lanes = self.lanes.lock().expect("group lanes");
                match lanes.get_mut(&tenant) {
                    Some(lane) if !lane.waiting.is_empty() => {
                        let n = lane.waiting.len().min(MAX_GROUP);
                        lane.waiting.drain(..n).collect()
                    }
                    // Given back in the critical section that found the lane empty: an
                    // arrival after it sees the slot free and starts a committer.
                    _ => {
                        slot.held = false;
                        release(&mut lanes, tenant);
                        return;
                    }
                }
            };
            self.commit(tenant, group).await;
        }
    }

    /// Runs `group` in one transaction, or, when that fails, each unit alone (unless the
    /// database is unavailable: then all fail).
    async fn commit(&self, tenant: TenantId, group: Vec<Waiting<U>>) {
        let (units, done): (Vec<U>, Vec<_>) = group.into_iter().unzip();
        match self.transaction(tenant, &units).await {
            Ok(outputs) => {
                // Committed: a failed sync fails every caller, and nothing runs again.
                let synced = self.durable().await;
                for (done, output) in done.into_iter().zip(outputs) {
                    let answer = match &synced {
                        Ok(()) => Ok(output),
                        Err(reason) => Err(ServiceError::WalSync(reason.clone())),
                    };
                    // The caller may have gone (a cancelled job); what committed stays.
                    let _ = done.send(answer);
                }
            }
            Err(e) if units.len() == 1 => {
                let _ = done.into_iter().next().expect("one").send(Err(e));
            }
            // Not one unit's fault, and each alone would wait out the same timeout.
            Err(e) if e.is_database_unavailable() => {
                tracing::warn!(error = %e, units = units.len(), "shared transaction failed; the database is unavailable");
                for done in done {
                    let _ = done.send(Err(ServiceError::Unavailable(e.to_string())));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, units = units.len(), "shared transaction failed; each unit runs alone");
                for (unit, done) in units.iter().zip(done) {
                    let alone = match self.transaction(tenant, std::slice::from_ref(unit)).await {
                        Ok(mut output) => self
                            .durable()
                            .await
                            .map(|()| output.pop().expect("one output per unit"))
                            .map_err(ServiceError::WalSync),
                        Err(e) => Err(e),
                    };
                    let _ = done.send(alone);
                }
            }
        }
    }

    /// `units` in one write transaction of `tenant`. On SQLite the commit never syncs while
    /// it holds the one write connection: a synced unit's caller then waits in [`Self::durable`].
    async fn transaction(
        &self,
        tenant: TenantId,
        units: &[U],
    ) -> Result<Vec<U::Output>, ServiceError> {
        let tx = TenantTx::write(&self.db, tenant).await?;
        let mut outputs = Vec::with_capacity(units.len());
        for unit in units {
            outputs.push(unit.run(&tx).await?);
        }
        if !U::SYNCED || self.wakers.wal().is_some() {
            self.wakers.commit_unsynced();
        }
        tx.commit().await?;
        Ok(outputs)
    }

    /// After a commit: once it is on disk, for a synced unit on SQLite (the WAL's group
    /// syncer); at once otherwise. The error is why the commit is not known to be on disk.
    async fn durable(&self) -> Result<(), String> {
        match self.wakers.wal() {
            Some(wal) if U::SYNCED => wal.sync().await,
            _ => Ok(()),
        }
    }
}

/// Gives back one committing slot of `tenant`'s lane, and closes the lane when that was the
/// last and nothing waits.
fn release<U: Unit>(lanes: &mut HashMap<TenantId, Lane<U>>, tenant: TenantId) {
    if let Some(lane) = lanes.get_mut(&tenant) {
        lane.committing -= 1;
        if lane.committing == 0 && lane.waiting.is_empty() {
            lanes.remove(&tenant);
        }
    }
}

/// A committer's slot, given back on a panic too (the units it held are dropped, and their
/// callers get an error), so the lane never counts a committer that is gone. When units
/// still wait, a new committer takes the slot over: with every slot's committer gone they
/// would otherwise wait until the tenant's next unit arrived.
struct Slot<'a, U: Unit> {
    groups: &'a Groups<U>,
    tenant: TenantId,
    held: bool,
}

impl<U: Unit> Drop for Slot<'_, U> {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(mut lanes) = self.groups.lanes.lock() else {
            return;
        };
        if lanes
            .get(&self.tenant)
            .is_some_and(|lane| !lane.waiting.is_empty())
        {
            drop(lanes);
            // Each panic took its group with it, so this cannot spin; when the runtime is
            // shutting down, the new task is dropped unrun, and so are the waiting units.
            tokio::spawn(self.groups.clone().committer(self.tenant));
        } else {
            release(&mut lanes, self.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

    use super::*;

    /// Inserts its number into `marks`, then fails when told to (after the insert, which the
    /// rollback must undo).
    struct Mark {
        n: i64,
        fail: bool,
    }

    impl Unit for Mark {
        type Output = i64;

        async fn run(&self, tx: &TenantTx) -> Result<i64, ServiceError> {
            let insert = Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "INSERT INTO marks (n) VALUES (?)",
                [self.n.into()],
            );
            tx.conn().execute_raw(insert).await?;
            if self.fail {
                return Err(ServiceError::invalid("n", "refused"));
            }
            Ok(self.n)
        }
    }

    /// A new SQLite file with an empty `marks` table: its path, the database, and the hooks
    /// of its write connection.
    async fn marks_db() -> (std::path::PathBuf, Db, crate::jobs::Wakers) {
        let path = std::env::temp_dir().join(format!("group-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let wakers = crate::jobs::Wakers::default();
        let db = crate::db::open_sqlite(&url, &wakers, &crate::db::StoreHealth::default())
            .await
            .expect("database");
        db.write
            .execute_unprepared("CREATE TABLE marks (n INTEGER NOT NULL)")
            .await
            .expect("table");
        (path, db, wakers)
    }

    #[tokio::test]
    async fn a_failing_unit_fails_alone_and_its_group_commits_once() {
        let (path, db, wakers) = marks_db().await;
        let groups = Groups::new(db.clone(), wakers);
        let tenant = TenantId::new();
        // 40 at once: the first starts a transaction, the rest wait and go in groups.
        let results = futures::future::join_all((0..40).map(|n| {
            let groups = groups.clone();
            async move {
                groups
                    .run(
                        tenant,
                        Mark {
                            n,
                            fail: n % 7 == 3,
                        },
                    )
                    .await
            }
        }))
        .await;
        for (n, result) in (0..40).zip(&results) {
            match result {
                Ok(got) => assert_eq!(*got, n),
                Err(ServiceError::Invalid { field: "n", .. }) => assert_eq!(n % 7, 3, "{n}"),
                Err(e) => panic!("unit {n}: {e}"),
            }
        }
        let rows = db
            .read
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT n FROM marks ORDER BY n",
            ))
            .await
            .expect("rows");
        let stored: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get_by_index(0).expect("n"))
            .collect();
        let expected: Vec<i64> = (0..40).filter(|n| n % 7 != 3).collect();
        assert_eq!(stored, expected, "every other unit's row exactly once");
        assert!(
            groups.lanes.lock().expect("lanes").is_empty(),
            "lane closed"
        );
        drop(groups);
        db.write.close_by_ref().await.ok();
        let _ = std::fs::remove_file(&path);
    }

    /// [`Mark`], or a panic, once `gate` has a permit for it.
    struct Gated {
        n: i64,
        panics: bool,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Unit for Gated {
        type Output = i64;

        async fn run(&self, tx: &TenantTx) -> Result<i64, ServiceError> {
            self.gate.acquire().await.expect("gate").forget();
            assert!(!self.panics, "unit {} panics", self.n);
            Mark {
                n: self.n,
                fail: false,
            }
            .run(tx)
            .await
        }
    }

    /// When every committer of a lane panics, the units still waiting in it are committed
    /// all the same, by a committer started in the place of a gone one.
    #[tokio::test]
    async fn units_waiting_behind_panicking_committers_still_commit() {
        use std::time::Duration;
        let (path, db, wakers) = marks_db().await;
        let groups = Groups::new(db.clone(), wakers);
        let tenant = TenantId::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let lane = |groups: &Groups<Gated>| {
            let lanes = groups.lanes.lock().expect("lanes");
            lanes
                .get(&tenant)
                .map_or((0, 0), |l| (l.committing, l.waiting.len()))
        };
        let until = |state: (usize, usize)| {
            let groups = groups.clone();
            async move {
                while lane(&groups) != state {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let start = |n: i64, panics: bool| {
            let (groups, gate) = (groups.clone(), gate.clone());
            tokio::spawn(async move { groups.run(tenant, Gated { n, panics, gate }).await })
        };
        // Every slot taken by a committer whose unit will panic, one more unit waiting.
        let mut panicking = Vec::new();
        for n in 0..SLOTS as i64 {
            panicking.push(start(n, true));
            until((n as usize + 1, 0)).await;
        }
        let waiting = start(100, false);
        until((SLOTS, 1)).await;
        gate.add_permits(SLOTS + 1);
        let committed = tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("the waiting unit is committed, not left waiting")
            .expect("task");
        assert_eq!(committed.expect("committed"), 100);
        for task in panicking {
            assert!(task.await.expect("task").is_err(), "a panicked unit fails");
        }
        db.write.close_by_ref().await.ok();
        let _ = std::fs::remove_file(&path);
    }

    /// [`Mark`] whose commit need not be synced.
    struct Unsynced(i64);

    impl Unit for Unsynced {
        type Output = i64;
        const SYNCED: bool = false;

        async fn run(&self, tx: &TenantTx) -> Result<i64, ServiceError> {
            Mark {
                n: self.0,
                fail: false,
            }
            .run(tx)
            .await
        }
    }

    /// A synced unit's group commits unsynced and then waits for a group sync of the WAL;
    /// an unsynced unit's commit skips its sync; the mark never outlives its transaction. The
    /// counters are the process's, so only growth is checked: a commit of another test can
    /// add to them, never take away.
    #[tokio::test]
    async fn a_synced_unit_syncs_after_its_commit_and_an_unsynced_one_skips() {
        let (path, db, wakers) = marks_db().await;
        let synced = Groups::new(db.clone(), wakers.clone());
        let unsynced = Groups::new(db.clone(), wakers.clone());
        let tenant = TenantId::new();
        let counts = crate::walbuf::commit_syncs;

        let (before, group_syncs) = (counts(), crate::db::group_syncs());
        synced
            .run(tenant, Mark { n: 1, fail: false })
            .await
            .expect("synced");
        assert!(counts().1 > before.1, "committed without syncing");
        assert!(crate::db::group_syncs() > group_syncs, "then synced");
        let before = counts();
        unsynced.run(tenant, Unsynced(2)).await.expect("unsynced");
        assert!(counts().1 > before.1, "an unsynced unit skips");
        // The mark of a transaction that rolled back does not reach the next one: a plain
        // transaction after it syncs at its commit.
        let txn = db.write.begin().await.expect("begin");
        txn.execute_unprepared("INSERT INTO marks (n) VALUES (99)")
            .await
            .expect("insert");
        wakers.commit_unsynced();
        txn.rollback().await.expect("rollback");
        let before = counts();
        let txn = db.write.begin().await.expect("begin");
        txn.execute_unprepared("INSERT INTO marks (n) VALUES (3)")
            .await
            .expect("insert");
        txn.commit().await.expect("commit");
        assert!(counts().0 > before.0, "the next plain commit syncs");

        let n: i64 = db
            .read
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT count(*) FROM marks",
            ))
            .await
            .expect("count")
            .expect("row")
            .try_get_by_index(0)
            .expect("n");
        assert_eq!(n, 3, "every unit's row committed");
        db.write.close_by_ref().await.ok();
        let _ = std::fs::remove_file(&path);
    }
}
