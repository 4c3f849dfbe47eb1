//! Write transactions run on a dedicated thread with its own single-threaded runtime.
//!
//! A write holds the database's one writer connection (SQLite) or a row lock (a chain head) for
//! several statements, and each statement is an await. On the shared runtime, every one of those
//! wake-ups queued behind whatever else was runnable, so under load a transaction held the
//! writer for the queueing delay of ten wake-ups and throughput collapsed. Here the only tasks
//! are writes, so a transaction resumes as soon as its statement is done. The request task
//! waits for the result; if the client goes away the write still finishes (or rolls back) as a
//! whole.

use std::future::Future;

use crate::error::{AppError, AppResult};

/// Handle to the writer thread. Dropping it stops the thread (pending writes are dropped,
/// which rolls their transactions back).
pub struct Writer {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Writer {
    /// Starts the thread.
    pub fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tether-writer".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }

    /// Starts a background task on the writer thread.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        drop(self.handle.spawn(task));
    }

    /// Runs a write on the writer thread and waits for its result.
    pub async fn run<T, F>(&self, write: F) -> AppResult<T>
    where
        T: Send + 'static,
        F: Future<Output = AppResult<T>> + Send + 'static,
    {
        // The write's log lines keep the request's id.
        let joined = match crate::error::REQUEST_ID.try_with(Clone::clone) {
            Ok(id) => {
                self.handle
                    .spawn(crate::error::REQUEST_ID.scope(id, write))
                    .await
            }
            Err(_) => self.handle.spawn(write).await,
        };
        match joined {
            Ok(result) => result,
            Err(e) => Err(AppError::internal(format!("write task ended: {e}"))),
        }
    }
}
