//! The SQLite VFS of the two write connections: a commit's WAL frames reach the kernel in a
//! few large writes instead of two per frame, and a commit syncs them only when it must.
//!
//! SQLite appends each frame of a commit with two writes, its 24-byte header and then its
//! page. A batch of webhooks dirties ~3.4 pages per webhook (bench `--only-ingest`, the WAL
//! decoded: the MessageSid index, the thread index, the conversation row and the inbox
//! index each take a page), so the writer made ~7 write system calls per webhook, and each
//! pays the kernel's per-call cost (the inode lock, the page-cache lookup of a partial page,
//! the timestamp update). Those calls were ~9% of the whole process's CPU time, on the
//! writer's thread, the one that cannot be spread over cores. The same bytes in large writes
//! cost ~6x less per frame on this VM (4,120-byte frames: 2.2 µs as two writes, 0.37 µs
//! within one 412 KB write).
//!
//! [`VFS_NAME`] is the platform's default VFS (`unix`) except for WAL files: their contiguous
//! writes collect in memory and go to the file, in writes of up to 64 KiB,
//! - at `xSync`. With `synchronous = FULL` (which [`open`] sets and checks) SQLite calls it
//!   after writing a commit's frames and before it publishes them in the WAL index, so no
//!   connection can see a frame that is not in the file yet;
//! - before a read, truncate, size query, file control or non-contiguous write of the file,
//!   so the file always reads as SQLite wrote it;
//! - once [`MAX_BUFFER_BYTES`] have collected.
//!
//! Both connections run with cache spilling off, so every WAL write but the header's is a
//! commit's and ends in that commit's `xSync`, under the write lock: nothing collected
//! outlives a rollback (see `NO_CACHE_SPILL`).
//!
//! What the `xSync` that ends a commit does besides writing depends on the VFS the
//! connection opened (see [`CommitSync`]):
//! - [`VFS_NAME`] (the inbound writer's connection): it does not sync. The writer's syncer
//!   thread `fdatasync`s the WAL before any webhook of the commit is answered (see
//!   [`crate::ingest`]).
//! - [`SELECTIVE_VFS_NAME`] (the write pool's one connection): it syncs, as `FULL` does,
//!   unless the connection's commit hook said this commit may skip ([`skip_commit_sync`]; the
//!   hooks of `jobs::Wakers::install` decide: apalis' own bookkeeping, or a transaction its
//!   writer let go unsynced).
//!
//! Any other `xSync` syncs for real: the one after SQLite rewrites the WAL header when the
//! WAL restarts (the new salts must be on disk before new frames, or a power loss could
//! replay frames of the previous generation), and the one before a checkpoint.

use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::ffi;

/// The VFS whose commits never sync (the inbound writer's), registered under this name (not
/// as the default).
pub const VFS_NAME: &CStr = c"switchboard-walbuf";

/// The VFS whose commits sync unless told not to (the write pool's), registered under this
/// name (not as the default).
pub const SELECTIVE_VFS_NAME: &CStr = c"switchboard-walbuf-selective";

/// What the `xSync` that ends a commit does once the commit's frames are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitSync {
    /// Nothing more: the caller syncs the WAL itself before the commit has any effect
    /// outside the database ([`VFS_NAME`]).
    Deferred,
    /// `fsync`s the WAL, as `synchronous = FULL` does, unless [`skip_commit_sync`] was called
    /// on this thread for this commit ([`SELECTIVE_VFS_NAME`]).
    Selective,
}

thread_local! {
    /// Set by [`skip_commit_sync`] from a commit hook; taken by the next commit's `xSync` on
    /// the same thread.
    static SKIP_COMMIT_SYNC: Cell<bool> = const { Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// [`CommitSync::Selective`] commits on this thread: (synced, skipped).
    static THREAD_COMMITS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// [`CommitSync::Selective`] commits in this process that synced the WAL.
static COMMITS_SYNCED: AtomicU64 = AtomicU64::new(0);
/// [`CommitSync::Selective`] commits in this process that skipped their sync.
static COMMITS_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Commits through [`SELECTIVE_VFS_NAME`] connections in this process so far:
/// (synced the WAL, skipped the sync). Exported at `/metrics`.
pub fn commit_syncs() -> (u64, u64) {
    (
        COMMITS_SYNCED.load(Ordering::Relaxed),
        COMMITS_SKIPPED.load(Ordering::Relaxed),
    )
}

/// As [`commit_syncs`], for the commits made on the calling thread only.
#[cfg(test)]
fn commit_syncs_on_this_thread() -> (u64, u64) {
    THREAD_COMMITS.with(Cell::get)
}

/// Counts one [`CommitSync::Selective`] commit.
fn count_commit(skipped: bool) {
    let total = if skipped {
        &COMMITS_SKIPPED
    } else {
        &COMMITS_SYNCED
    };
    total.fetch_add(1, Ordering::Relaxed);
    #[cfg(test)]
    THREAD_COMMITS.with(|c| {
        let (synced, skips) = c.get();
        c.set(if skipped {
            (synced, skips + 1)
        } else {
            (synced + 1, skips)
        });
    });
}

/// Tells the commit about to end on this thread, on a [`SELECTIVE_VFS_NAME`] connection,
/// whether it may skip its `fsync` (`true`) or must sync (`false`). Call it from the
/// connection's commit hook, which SQLite runs on the committing thread right before it
/// writes the commit's frames: every commit hook sets it anew, so a value never outlives
/// the commit it was meant for. Skipping is for commits whose loss in a power failure is
/// harmless (the next synced commit, or the next checkpoint, makes them durable with it: a
/// WAL is synced as a whole).
pub fn skip_commit_sync(skip: bool) {
    SKIP_COMMIT_SYNC.with(|s| s.set(skip));
}

/// Most bytes a WAL file collects before they are written regardless (8 MiB; a batch of
/// [`crate::ingest::MAX_BATCH`] webhooks writes ~3.5 MiB).
pub const MAX_BUFFER_BYTES: usize = 8 << 20;

/// Opens `path` through the VFS, in WAL mode with `synchronous = FULL` (so each commit ends
/// with the `xSync` that writes its frames out); the caller adds its other settings.
///
/// # Errors
/// Registering the VFS, opening the file, or a pragma that did not take (the journal mode is
/// not WAL, or `synchronous` is not FULL: the frames of a commit could then be published
/// before they are written).
pub fn open(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    open_with(path, VFS_NAME)
}

/// [`open`] through `vfs`, one of [`VFS_NAME`] and [`SELECTIVE_VFS_NAME`].
///
/// # Errors
/// As [`open`].
fn open_with(path: &Path, vfs: &CStr) -> rusqlite::Result<rusqlite::Connection> {
    register()?;
    let conn =
        rusqlite::Connection::open_with_flags_and_vfs(path, rusqlite::OpenFlags::default(), vfs)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(&format!("PRAGMA synchronous = FULL; {NO_CACHE_SPILL}"))?;
    let settings = conn.query_row(SETTINGS_QUERY, [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    match settings_problem(settings) {
        None => Ok(conn),
        Some(problem) => Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_MISUSE),
            Some(format!("{}: {problem}", vfs.to_string_lossy())),
        )),
    }
}

/// Turns off cache spilling, which a connection through our VFSes must not do. With it, a
/// transaction larger than the page cache writes pages to the WAL before its commit, with
/// no `xSync` after them, and a rollback only forgets them in the WAL index: bytes still
/// collected here would go out at the connection's next read of the WAL, after it let go of
/// the write lock, over frames another connection committed since (the database then reads
/// as "file is not a database"). Without spilling, the only WAL writes are a commit's, which
/// end in its `xSync` under the lock; the page cache grows past `cache_size` for as long as
/// such a transaction lasts.
pub(crate) const NO_CACHE_SPILL: &str = "PRAGMA cache_spill = OFF";

/// Reads what [`settings_problem`] checks: `(journal_mode, synchronous, cache_spill)`.
pub(crate) const SETTINGS_QUERY: &str = "SELECT journal_mode, synchronous, cache_spill \
     FROM pragma_journal_mode, pragma_synchronous, pragma_cache_spill";

/// What is wrong with a connection through our VFSes whose [`SETTINGS_QUERY`] read
/// `(journal_mode, synchronous, cache_spill)`, if anything: it needs WAL (else the VFS
/// buffers nothing), `synchronous = FULL` (else a commit's frames could be published before
/// the `xSync` that writes them out) and no cache spilling ([`NO_CACHE_SPILL`]).
pub(crate) fn settings_problem(
    (mode, synchronous, cache_spill): (String, i64, i64),
) -> Option<String> {
    (!mode.eq_ignore_ascii_case("wal") || synchronous != 2 || cache_spill != 0).then(|| {
        format!(
            "needs journal_mode WAL, synchronous FULL (2) and cache_spill off (0), got \
             {mode}, {synchronous} and {cache_spill}"
        )
    })
}

/// The app data of each of our VFSes: the default VFS and what a commit's `xSync` does.
#[derive(Clone, Copy)]
struct VfsData {
    unix: *mut ffi::sqlite3_vfs,
    commit_sync: CommitSync,
}

/// Registers both VFSes once per process ([`VFS_NAME`] and [`SELECTIVE_VFS_NAME`]); later
/// calls return the first result.
///
/// # Errors
/// SQLite's, when it cannot initialize or register them.
pub fn register() -> rusqlite::Result<()> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    let rc = *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` initializes SQLite and returns the default VFS, which
        // lives for the whole process; the copies and their app data are leaked, so they do
        // too, as SQLite requires of a registered VFS.
        unsafe {
            let unix = ffi::sqlite3_vfs_find(std::ptr::null());
            if unix.is_null() {
                return ffi::SQLITE_ERROR;
            }
            for (name, commit_sync) in [
                (VFS_NAME, CommitSync::Deferred),
                (SELECTIVE_VFS_NAME, CommitSync::Selective),
            ] {
                // The other methods (delete, access, full path, randomness, time, dlopen)
                // are the default VFS's own: they do not use the VFS pointer they are given.
                let mut vfs = *unix;
                vfs.pNext = std::ptr::null_mut();
                vfs.zName = name.as_ptr();
                vfs.szOsFile = INNER_OFFSET as c_int + (*unix).szOsFile;
                vfs.pAppData = Box::into_raw(Box::new(VfsData { unix, commit_sync })).cast();
                vfs.xOpen = Some(open_file);
                let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
            }
            ffi::SQLITE_OK
        }
    });
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// A WAL file as SQLite sees it: our methods, our buffer, then the default VFS's own file
/// object at [`INNER_OFFSET`] (the rest of the `szOsFile` bytes SQLite allocated).
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    pending: *mut Pending,
    commit_sync: CommitSync,
}

/// Most bytes handed to the default VFS in one write (64 KiB): the `unix` VFS takes at most
/// 128 KiB - 1 per call (it masks a write's size to 17 bits).
const MAX_WRITE_BYTES: usize = 64 << 10;

/// Where the default VFS's file object starts in a [`WalFile`] (pointer-aligned).
const INNER_OFFSET: usize = std::mem::size_of::<WalFile>();

/// Writes not yet handed to the file.
#[derive(Default)]
struct Pending {
    /// Contiguous bytes starting at `offset`.
    bytes: Vec<u8>,
    offset: i64,
    /// Written since the last `xSync` (flushed or not): that sync ends a commit.
    wrote: bool,
    /// The WAL header (offset 0) was rewritten since the last `xSync`: that sync is real.
    header: bool,
}

/// The default VFS's file object inside `file`.
///
/// # Safety
/// `file` is a [`WalFile`] opened by [`open_file`].
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: SQLite allocated `szOsFile` bytes for `file`, INNER_OFFSET + the inner size.
    unsafe { file.cast::<u8>().add(INNER_OFFSET).cast() }
}

/// The default VFS's methods for `file`'s inner file object.
///
/// # Safety
/// As [`inner`].
unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: the inner file was opened successfully (else `file` has no methods and SQLite
    // calls none), so its methods are the default VFS's static table.
    unsafe { &*(*inner(file)).pMethods }
}

/// # Safety
/// As [`inner`]; SQLite uses a file from one thread at a time.
unsafe fn pending<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Pending {
    // SAFETY: set by `open_file` and freed only by `wal_close`.
    unsafe { &mut *(*file.cast::<WalFile>()).pending }
}

/// Hands the collected bytes to the file.
///
/// # Safety
/// As [`inner`].
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as the caller's.
    unsafe {
        let pending = pending(file);
        if pending.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let inner = inner(file);
        let write = methods(file).xWrite.expect("xWrite");
        let mut rc = ffi::SQLITE_OK;
        let mut offset = pending.offset;
        for chunk in pending.bytes.chunks(MAX_WRITE_BYTES) {
            rc = write(inner, chunk.as_ptr().cast(), chunk.len() as c_int, offset);
            if rc != ffi::SQLITE_OK {
                break;
            }
            offset += chunk.len() as i64;
        }
        pending.bytes.clear();
        rc
    }
}

/// Runs `then` once the collected bytes are in the file; returns the write's error instead
/// if they could not be written.
///
/// # Safety
/// As [`inner`].
unsafe fn after_flush(file: *mut ffi::sqlite3_file, then: impl FnOnce() -> c_int) -> c_int {
    // SAFETY: as the caller's.
    match unsafe { flush(file) } {
        ffi::SQLITE_OK => then(),
        rc => rc,
    }
}

unsafe extern "C" fn open_file(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: `vfs` is ours, whose app data is a VfsData; `file` has our `szOsFile` bytes,
    // enough for the default VFS's file object at its start or at INNER_OFFSET.
    unsafe {
        let VfsData { unix, commit_sync } = *(*vfs).pAppData.cast::<VfsData>();
        let open = (*unix).xOpen.expect("xOpen");
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return open(unix, name, file, flags, out_flags);
        }
        let rc = open(unix, name, inner(file), flags, out_flags);
        if rc != ffi::SQLITE_OK || (*inner(file)).pMethods.is_null() {
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            pending: Box::into_raw(Box::default()),
            commit_sync,
        });
        ffi::SQLITE_OK
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(wal_sector_size),
    xDeviceCharacteristics: Some(wal_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

// SAFETY (every method below): SQLite calls them only on a file `open_file` opened as a
// WalFile, from one thread at a time, and never after `wal_close`.

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let flushed = flush(file);
        let closed = methods(file).xClose.expect("xClose")(inner(file));
        drop(Box::from_raw((*file.cast::<WalFile>()).pending));
        (*file).pMethods = std::ptr::null();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn wal_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        after_flush(file, || {
            methods(file).xRead.expect("xRead")(inner(file), buf, amount, offset)
        })
    }
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    unsafe {
        let after_pending = {
            let pending = pending(file);
            pending.offset + pending.bytes.len() as i64
        };
        // Not where the collected bytes end: they go out first, so writes keep their order.
        // (Each use of `pending` is its own borrow; `flush` takes one too.)
        if offset != after_pending {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let pending = pending(file);
        if pending.bytes.is_empty() {
            pending.offset = offset;
        }
        pending.wrote = true;
        pending.header |= offset == 0;
        let len = usize::try_from(amount).unwrap_or(0);
        pending
            .bytes
            .extend_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len));
        if pending.bytes.len() >= MAX_BUFFER_BYTES {
            return flush(file);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn wal_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    unsafe {
        after_flush(file, || {
            methods(file).xTruncate.expect("xTruncate")(inner(file), size)
        })
    }
}

unsafe extern "C" fn wal_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe {
        // What this sync is, decided before the write-out: a write that fails must not leave
        // the marks (or the commit's skip) to a later sync, such as a checkpoint's, which
        // would then pass for a commit's and skip.
        let pending = pending(file);
        let ends_commit = pending.wrote && !pending.header;
        pending.wrote = false;
        pending.header = false;
        // Taken whatever the mode, so a value set for a commit never reaches another.
        let skip = ends_commit && SKIP_COMMIT_SYNC.with(|s| s.replace(false));
        after_flush(file, || {
            if ends_commit {
                match (*file.cast::<WalFile>()).commit_sync {
                    // The syncer thread syncs the commit before any of its webhooks is answered.
                    CommitSync::Deferred => return ffi::SQLITE_OK,
                    CommitSync::Selective => {
                        count_commit(skip);
                        if skip {
                            return ffi::SQLITE_OK;
                        }
                    }
                }
            }
            methods(file).xSync.expect("xSync")(inner(file), flags)
        })
    }
}

unsafe extern "C" fn wal_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    unsafe {
        after_flush(file, || {
            methods(file).xFileSize.expect("xFileSize")(inner(file), size)
        })
    }
}

unsafe extern "C" fn wal_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe { methods(file).xLock.expect("xLock")(inner(file), level) }
}

unsafe extern "C" fn wal_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe { methods(file).xUnlock.expect("xUnlock")(inner(file), level) }
}

unsafe extern "C" fn wal_check_reserved_lock(
    file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    unsafe {
        methods(file)
            .xCheckReservedLock
            .expect("xCheckReservedLock")(inner(file), out)
    }
}

unsafe extern "C" fn wal_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    unsafe {
        after_flush(file, || {
            methods(file).xFileControl.expect("xFileControl")(inner(file), op, arg)
        })
    }
}

unsafe extern "C" fn wal_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe { methods(file).xSectorSize.expect("xSectorSize")(inner(file)) }
}

unsafe extern "C" fn wal_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        methods(file)
            .xDeviceCharacteristics
            .expect("xDeviceCharacteristics")(inner(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits through the VFS while a plain connection reads and checkpoints (restarting
    /// the WAL, so its header is rewritten): every commit is visible to the reader as soon
    /// as it returns, and the file is whole afterwards.
    #[test]
    fn commits_are_readable_at_once_across_wal_restarts_and_the_file_stays_whole() {
        let path = std::env::temp_dir().join(format!("walbuf-{}.db", uuid::Uuid::new_v4()));
        let mut writer = open(&path).expect("open through the VFS");
        writer
            .execute_batch(
                "PRAGMA wal_autocheckpoint = 0; \
                 CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL); \
                 CREATE INDEX t_body ON t (body);",
            )
            .expect("schema");
        let reader = rusqlite::Connection::open(&path).expect("plain connection");
        let mut expected = 0i64;
        for round in 0..60i64 {
            let tx = writer.transaction().expect("begin");
            for i in 0..20i64 {
                // Random-ish bodies spread over many index pages: many frames per commit.
                let body: Vec<u8> = (0..600)
                    .map(|j| ((round * 31 + i * 7 + j) % 251) as u8)
                    .collect();
                tx.execute("INSERT INTO t (body) VALUES (?1)", [body])
                    .expect("insert");
            }
            tx.commit().expect("commit");
            expected += 20;
            let seen: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("read");
            assert_eq!(
                seen, expected,
                "round {round}: a commit not readable at once"
            );
            if round % 10 == 9 {
                let (busy, _, _): (i64, i64, i64) = reader
                    .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .expect("checkpoint");
                assert_eq!(busy, 0, "restart not blocked");
            }
        }
        // One transaction larger than the writer's page cache: with spilling off (see
        // `NO_CACHE_SPILL`) its pages stay in memory and go out at the commit, all at once.
        writer
            .execute_batch("PRAGMA cache_size = 10")
            .expect("small cache");
        let tx = writer.transaction().expect("begin");
        for pass in 0..3u8 {
            tx.execute(
                "UPDATE t SET body = zeroblob(600 + ?1 * 7 + id % 13)",
                [pass],
            )
            .expect("update every row");
        }
        tx.commit().expect("commit the large transaction");
        let longest: i64 = reader
            .query_row("SELECT max(length(body)) FROM t", [], |r| r.get(0))
            .expect("read");
        assert_eq!(
            longest,
            600 + 2 * 7 + 12,
            "the last pass is what the reader sees"
        );
        drop(writer);
        let check: String = reader
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity check");
        assert_eq!(check, "ok");
        drop(reader);
        let again = rusqlite::Connection::open(&path).expect("reopen");
        let count: i64 = again
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, expected);
        drop(again);
        let _ = std::fs::remove_file(&path);
    }

    /// A transaction larger than the page cache that rolls back leaves no WAL writes behind.
    /// With cache spilling, SQLite writes such a transaction's pages to the WAL before its
    /// commit and, on rollback, only forgets them: bytes still collected here would go out at
    /// the connection's next read, after it let go of the write lock, over the frames another
    /// connection committed since. [`open`] turns spilling off.
    #[test]
    fn a_rolled_back_transaction_larger_than_the_cache_leaves_no_wal_writes_behind() {
        let path = std::env::temp_dir().join(format!("walrb-{}.db", uuid::Uuid::new_v4()));
        let a = open(&path).expect("open through the VFS");
        a.execute_batch(
            "PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = 10; \
             CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .expect("schema");
        // Nothing in the WAL: the rollback reads the pages it reloads from the database file,
        // so no read of the WAL writes out the collected bytes while it still holds the lock.
        a.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        let b = open(&path).expect("a second connection through the VFS");
        let insert = |conn: &rusqlite::Connection, seed: u8, rows: u32| {
            // The table only grows at its end: pages spilled to the WAL are not read back
            // within the transaction.
            for i in 0..rows {
                let mut body = vec![seed; 600];
                body[1..5].copy_from_slice(&i.to_be_bytes());
                conn.execute("INSERT INTO t (body) VALUES (?1)", [body])
                    .expect("insert");
            }
        };
        a.execute_batch("BEGIN").expect("begin");
        insert(&a, 1, 300);
        a.execute_batch("ROLLBACK").expect("roll back");
        b.execute_batch("BEGIN").expect("begin");
        // More frames than the rolled-back transaction wrote: they cover its offsets.
        insert(&b, 2, 1500);
        b.execute_batch("COMMIT").expect("commit");
        let seen: i64 = a
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("read after the other's commit");
        assert_eq!(seen, 1500);
        drop((a, b));
        let plain = rusqlite::Connection::open(&path).expect("plain connection");
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity check");
        assert_eq!(check, "ok");
        let firsts: i64 = plain
            .query_row(
                "SELECT count(*) FROM t WHERE substr(body, 1, 1) = x'02'",
                [],
                |r| r.get(0),
            )
            .expect("count the committed rows");
        assert!(firsts > 0);
        drop(plain);
        let _ = std::fs::remove_file(&path);
    }

    /// Our connections open with the settings the VFS needs, and any other is refused.
    #[test]
    fn only_wal_with_full_sync_and_no_spilling_is_accepted() {
        let path = std::env::temp_dir().join(format!("walset-{}.db", uuid::Uuid::new_v4()));
        let conn = open(&path).expect("open through the VFS");
        let read = conn
            .query_row(SETTINGS_QUERY, [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .expect("settings");
        assert_eq!(settings_problem(read), None);
        for wrong in [("delete", 2, 0), ("wal", 1, 0), ("wal", 2, 1)] {
            let (mode, synchronous, spill) = wrong;
            assert!(
                settings_problem((mode.into(), synchronous, spill)).is_some(),
                "{wrong:?} accepted"
            );
        }
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }

    /// A selective connection syncs each commit unless its commit hook said to skip, and a
    /// skip is for the one commit it was said for.
    #[test]
    fn a_selective_commit_syncs_unless_its_commit_hook_says_skip() {
        let path = std::env::temp_dir().join(format!("walsel-{}.db", uuid::Uuid::new_v4()));
        let conn = open_with(&path, SELECTIVE_VFS_NAME).expect("open through the VFS");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .expect("schema");
        let skip_next = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hook = skip_next.clone();
        conn.commit_hook(Some(move || {
            skip_commit_sync(hook.swap(false, Ordering::Relaxed));
            false
        }))
        .expect("hook");
        let commit = |skip: bool| {
            skip_next.store(skip, Ordering::Relaxed);
            let before = commit_syncs_on_this_thread();
            conn.execute("INSERT INTO t (v) VALUES ('x')", [])
                .expect("insert");
            let (synced, skipped) = commit_syncs_on_this_thread();
            (synced - before.0, skipped - before.1)
        };
        assert_eq!(commit(false), (1, 0), "a plain commit syncs");
        assert_eq!(commit(true), (0, 1), "the hook's skip is honoured");
        assert_eq!(
            commit(false),
            (1, 0),
            "and is not carried to the next commit"
        );
        // A skip set outside a commit hook (stale) is overwritten by the next commit's hook.
        skip_commit_sync(true);
        assert_eq!(commit(false), (1, 0), "a stale skip never reaches a commit");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 4);
        drop(conn);
        let _ = std::fs::remove_file(&path);
    }
}
