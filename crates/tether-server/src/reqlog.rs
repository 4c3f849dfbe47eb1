//! The request log: every API request appends one record. Requests never wait on the log's
//! storage: records go through a bounded queue to a batching writer, so a slow or full disk
//! cannot take the API down. A full queue drops the record, counts it in
//! `tether_request_log_dropped_total` and logs an alarm.

use std::io::Write;
use std::time::Duration;

use std::sync::{Arc, Mutex};
use tether_core::Clock;
use tether_store::{RequestLogRecord, Store};

use tokio::sync::{mpsc, oneshot};

use crate::config::RequestLogConfig;

/// The sending side of the queue.
#[derive(Clone)]
pub struct RequestLogSink {
    tx: mpsc::Sender<RequestLogRecord>,
    waiters: Waiters,
    depth: metrics::Gauge,
}

type Waiters = Arc<Mutex<Vec<oneshot::Sender<()>>>>;

impl RequestLogSink {
    /// Queues a record without waiting.
    pub fn record(&self, rec: RequestLogRecord) {
        match self.tx.try_send(rec) {
            Ok(()) => self.depth.increment(1.0),
            Err(_) => {
                metrics::counter!("tether_request_log_dropped_total").increment(1);
                tracing::error!("request log queue is full; a record was dropped");
            }
        }
    }

    /// Waits until every record queued so far is written (for tests and shutdown).
    pub async fn flush(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        let marker = RequestLogRecord {
            request_id: FLUSH_MARKER.into(),
            ..Default::default()
        };
        if let Ok(mut v) = self.waiters.lock() {
            v.push(done_tx);
        }
        if self.tx.send(marker).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), done_rx).await;
        }
    }
}

const FLUSH_MARKER: &str = "\u{0}flush";

/// The most records written in one transaction.
const BATCH_MAX: usize = 512;
/// How long the writer lets records gather after writing a batch.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// Starts the writer task and returns the sink.
pub fn start(store: Store, cfg: &RequestLogConfig) -> RequestLogSink {
    let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(16));
    let stream = open_stream(cfg.stream.as_deref());
    let waiters = Waiters::default();
    let depth = metrics::gauge!("tether_request_log_queue_depth");
    tokio::spawn(writer(
        store.clone(),
        rx,
        stream,
        waiters.clone(),
        depth.clone(),
    ));
    tokio::spawn(pruner(store, cfg.retention_days));
    RequestLogSink { tx, waiters, depth }
}

fn open_stream(target: Option<&str>) -> Option<Box<dyn Write + Send>> {
    match target {
        None => None,
        Some("stdout") => Some(Box::new(std::io::stdout())),
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Some(Box::new(f)),
            Err(e) => {
                tracing::error!(path, error = %e, "cannot open the request log stream");
                None
            }
        },
    }
}

async fn writer(
    store: Store,
    mut rx: mpsc::Receiver<RequestLogRecord>,
    mut stream: Option<Box<dyn Write + Send>>,
    waiters: Waiters,
    depth: metrics::Gauge,
) {
    let mut batch = Vec::with_capacity(BATCH_MAX);
    loop {
        let n = rx.recv_many(&mut batch, BATCH_MAX).await;
        if n == 0 {
            break;
        }
        depth.decrement(batch.len() as f64);
        let flush_requested = batch.iter().any(|r| r.request_id == FLUSH_MARKER);
        batch.retain(|r| r.request_id != FLUSH_MARKER);
        write_batch(&store, &mut batch, stream.as_mut()).await;
        batch.clear();
        if flush_requested && let Ok(mut pending) = waiters.lock() {
            for w in pending.drain(..) {
                let _ = w.send(());
            }
        }
        if !flush_requested && n < BATCH_MAX {
            // Let records gather: a request then never wakes this task, and a batch is one
            // transaction of many rows instead of many transactions of a few.
            tokio::time::sleep(BATCH_WINDOW).await;
        }
    }
}

async fn write_batch(
    store: &Store,
    batch: &mut [RequestLogRecord],
    stream: Option<&mut Box<dyn Write + Send>>,
) {
    if batch.is_empty() {
        return;
    }
    for attempt in 0..5u32 {
        match store.append_requests(batch).await {
            Ok(()) => break,
            Err(e) => {
                metrics::counter!("tether_request_log_write_errors_total").increment(1);
                tracing::error!(error = %e, attempt, "request log write failed");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    if let Some(out) = stream {
        for r in batch.iter() {
            if let Ok(line) = serde_json::to_string(r) {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }
}

async fn pruner(store: Store, retention_days: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(3_600));
    loop {
        tick.tick().await;
        let now = tether_core::SystemClock.now_millis();
        let cutoff = now - i64::from(retention_days) * 86_400_000;
        match store.prune_requests(cutoff).await {
            Ok(n) if n > 0 => tracing::info!(pruned = n, "request log retention applied"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "request log pruning failed"),
        }
    }
}
