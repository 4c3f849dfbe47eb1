//! Tether's storage layer: one narrow repository API over sqlx's `Any` driver, backed by bundled
//! SQLite (the default) or PostgreSQL. SQL is written once in the subset both dialects share
//! (`$N` parameters, `ON CONFLICT`, `RETURNING`); schema migrations are kept per dialect.
//!
//! Every resource write, its audit version record and its authorization tuples go through one
//! [`Tx`], so they commit or vanish together.

pub mod audit;
mod cache;
mod chain;
pub mod changes;
pub mod identity;
pub mod kms;
pub mod request_log;
pub mod resources;
pub mod runners;
pub mod secrets;
pub mod settings;
pub mod tuples;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, ConnectOptions, Executor};

pub use audit::VersionRecord;
pub use chain::{ChainBreak, GENESIS_HASH, hash_fields};
pub use identity::{ApiKeyRow, RefreshTokenRow};
pub use request_log::{RequestLogFilter, RequestLogRecord};
pub use resources::ResourceRow;
pub use tuples::TupleRow;

pub use cache::CacheLimits;

/// A write transaction. Dropping it without [`Tx::commit`] rolls it back. It dereferences to
/// the connection, so repository functions run their statements on `&mut **tx`; those that
/// change a cached row record it, and [`Tx::commit`] drops those rows from the cache.
pub struct Tx {
    inner: sqlx::Transaction<'static, Any>,
    touched: Vec<cache::Touch>,
    events: Vec<changes::Event>,
    cache: Arc<cache::HotCache>,
    backend: Backend,
    node: Arc<str>,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.inner
    }
}

impl Tx {
    /// Commits, then drops what the transaction changed from the cache (also when the commit
    /// fails: its outcome is then unknown). On PostgreSQL the changelog row for the other
    /// servers is the transaction's last statement.
    pub async fn commit(mut self) -> Result<()> {
        let node = Arc::clone(&self.node);
        changes::append(&mut self, &node).await?;
        let Tx {
            inner,
            touched,
            cache,
            ..
        } = self;
        let done = inner.commit().await;
        cache.invalidate(&touched);
        Ok(done?)
    }

    /// Rolls back explicitly (dropping does the same).
    pub async fn rollback(self) -> Result<()> {
        Ok(self.inner.rollback().await?)
    }

    pub(crate) fn touch(&mut self, t: cache::Touch) {
        self.touched.push(t);
    }

    /// Records what the other servers must apply once this transaction commits.
    pub fn record(&mut self, e: changes::Event) {
        self.events.push(e);
    }

    /// Which database this transaction runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// The `VALUES` list of a multi-row INSERT: `rows` groups of `cols` placeholders. SQLite gets
/// anonymous `?` placeholders: for numbered ones sqlx looks each parameter's name up by a
/// linear scan inside SQLite, which makes binding quadratic in the row count.
pub(crate) fn values_list(backend: Backend, rows: usize, cols: usize) -> String {
    let mut sql = String::new();
    for i in 0..rows {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for c in 1..=cols {
            if c > 1 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => sql.push_str(&format!("${}", i * cols + c)),
            }
        }
        sql.push(')');
    }
    sql
}

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Bundled SQLite, in WAL mode.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Errors of the storage layer. `Db` carries the driver error for the log; callers map it to an
/// opaque `internal` error for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness constraint refused the write.
    #[error("already exists")]
    AlreadyExists,
    /// The row changed (another writer committed) since it was read: read it again and retry.
    #[error("the row changed since it was read")]
    Stale,
    /// The database URL is not one Tether can use.
    #[error("unsupported database URL: {0}")]
    BadUrl(String),
    /// Stored data could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A driver error.
    #[error("database error: {0}")]
    Db(#[source] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            _ => StoreError::Db(e),
        }
    }
}

/// Result alias for the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store: a read pool and a write pool (one connection for SQLite, so writers queue in
/// process instead of failing with `SQLITE_BUSY`).
#[derive(Clone)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    cache: Arc<cache::HotCache>,
    /// The ids of the request log's interned strings.
    terms: Arc<request_log::Terms>,
    /// This process's name in the changelog (random per start).
    node: Arc<str>,
}

/// A random name for this process in the changelog.
fn node_id() -> Arc<str> {
    let mut bytes = [0u8; 8];
    // A failing RNG only makes the name less unique; the name is informational.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    hex::encode(bytes).into()
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Create the SQLite file if it does not exist (its directory must exist).
    pub create_sqlite: bool,
    /// Maximum pooled connections for reads.
    pub max_connections: u32,
    /// SQLite `synchronous` setting. With WAL, `NORMAL` (the default) loses no committed
    /// transaction when the process is killed; `FULL` also survives power loss at the cost of an
    /// fsync per commit.
    pub sqlite_synchronous: &'static str,
    /// Limits of the hot-row cache.
    pub cache: CacheLimits,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            create_sqlite: false,
            max_connections: 8,
            sqlite_synchronous: "NORMAL",
            cache: CacheLimits::default(),
        }
    }
}

impl Store {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://...`) and runs migrations.
    /// Any other scheme is refused: Tether never silently falls back to a fresh database.
    pub async fn open(url: &str, opts: &StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let store = if let Some(path) = sqlite_path(url) {
            Self::open_sqlite(path, opts).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::open_postgres(url, opts).await?
        } else {
            return Err(StoreError::BadUrl(redact_url(url)));
        };
        store.migrate().await?;
        store.convert_legacy_requests().await?;
        Ok(store)
    }

    async fn open_sqlite(path: &str, opts: &StoreOptions) -> Result<Store> {
        let file = Path::new(path);
        let parent_ok = file
            .parent()
            .is_none_or(|p| p.as_os_str().is_empty() || p.is_dir());
        if !parent_ok {
            return Err(StoreError::BadUrl(format!(
                "directory of {path} does not exist"
            )));
        }
        if !opts.create_sqlite && !file.exists() {
            return Err(StoreError::BadUrl(format!("{path} does not exist")));
        }
        let mode = if opts.create_sqlite { "rwc" } else { "rw" };
        let url = format!("sqlite://{path}?mode={mode}");
        let sync = opts.sqlite_synchronous;
        let connect = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let write = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(move |c, _| Box::pin(sqlite_pragmas(c, sync)))
            .connect_with(connect.clone())
            .await?;
        // WAL is persistent in the file; set it once through the writer.
        sqlx::query("PRAGMA journal_mode = WAL")
            .fetch_all(&write)
            .await?;
        let read = AnyPoolOptions::new()
            .max_connections(opts.max_connections)
            .after_connect(move |c, _| Box::pin(sqlite_pragmas(c, sync)))
            .connect_with(connect)
            .await?;
        Ok(Store {
            read,
            write,
            backend: Backend::Sqlite,
            cache: Arc::new(cache::HotCache::new(opts.cache)),
            terms: Arc::default(),
            node: node_id(),
        })
    }

    async fn open_postgres(url: &str, opts: &StoreOptions) -> Result<Store> {
        let connect = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections.max(4))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(connect)
            .await?;
        Ok(Store {
            read: pool.clone(),
            write: pool,
            backend: Backend::Postgres,
            cache: Arc::new(cache::HotCache::new(opts.cache)),
            terms: Arc::default(),
            node: node_id(),
        })
    }

    async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(&self.write)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.write)
                    .await?
            }
        }
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Begins a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            inner: self.write.begin().await?,
            touched: Vec::new(),
            events: Vec::new(),
            cache: Arc::clone(&self.cache),
            backend: self.backend,
            node: Arc::clone(&self.node),
        })
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.read).await?;
        Ok(())
    }

    /// Closes the pools.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Per-connection SQLite settings.
async fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    sync: &'static str,
) -> Result<(), sqlx::Error> {
    conn.execute("PRAGMA foreign_keys = ON").await?;
    conn.execute("PRAGMA busy_timeout = 10000").await?;
    let stmt = if sync == "NORMAL" {
        "PRAGMA synchronous = NORMAL"
    } else {
        "PRAGMA synchronous = FULL"
    };
    conn.execute(stmt).await?;
    // Checkpoint the WAL into the database every 256 pages (1 MiB) instead of SQLite's 1,000.
    // The request log appends about 1 KiB of pages per request, so at 20,000 requests/s the
    // default checkpointed 4 MiB with two fsyncs twice a second. On a small VM those bursts of
    // I/O stalled the CPUs and tripled the p99 of unrelated requests; smaller, more frequent
    // checkpoints write the same pages in steps that do not (scripts/bench.sh, figures in the
    // README). Only the writing connection checkpoints; readers ignore the setting.
    conn.execute("PRAGMA wal_autocheckpoint = 256").await?;
    Ok(())
}

/// Extracts the file path from a `sqlite:` URL.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Hides a password in a URL before it is shown in an error.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!(
            "{}://***{}",
            url.get(..s).unwrap_or(""),
            url.get(at..).unwrap_or("")
        ),
        _ => url.chars().take(64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls() {
        assert_eq!(sqlite_path("sqlite:///tmp/a.db"), Some("/tmp/a.db"));
        assert_eq!(sqlite_path("sqlite://a.db?mode=rw"), Some("a.db"));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x"), None);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("mysql://u:pw@host/db"), "mysql://***@host/db");
        assert!(!redact_url("mysql://u:secret@h/d").contains("secret"));
    }
}
