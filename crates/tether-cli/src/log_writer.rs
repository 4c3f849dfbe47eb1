//! A non-blocking writer for the server's JSON log: request tasks hand each formatted line to a
//! bounded queue, and one thread writes the lines to stderr through a buffer, flushing whenever
//! the queue runs dry (so a line reaches the file within microseconds when the server is idle).
//! Writing one unbuffered line per request from the request path halved the server's
//! throughput. When the queue is full the line is dropped and counted, never waited for; the
//! count is reported in the log once there is room again. (Diagnostic logs only: the audited
//! request log is a separate, lossless path.)

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

/// Lines that may wait for the writer thread.
const QUEUE_LINES: usize = 65_536;

enum Msg {
    Line(Vec<u8>),
    /// Write everything queued before this, then answer.
    Flush(SyncSender<()>),
}

/// The `MakeWriter` handed to the subscriber.
pub struct LogWriter {
    queue: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Writes out what is queued when dropped (keep it alive for the whole run).
pub struct LogGuard {
    queue: SyncSender<Msg>,
}

/// Starts the writer thread.
pub fn stderr_writer() -> std::io::Result<(LogWriter, LogGuard)> {
    let (queue, lines) = sync_channel(QUEUE_LINES);
    std::thread::Builder::new()
        .name("tether-log".into())
        .spawn(move || drain(&lines))?;
    let writer = LogWriter {
        queue: queue.clone(),
        dropped: Arc::new(AtomicU64::new(0)),
    };
    Ok((writer, LogGuard { queue }))
}

fn drain(queue: &Receiver<Msg>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let handle = |msg: Msg, out: &mut std::io::BufWriter<std::io::Stderr>| match msg {
        Msg::Line(line) => {
            let _ = out.write_all(&line);
        }
        Msg::Flush(ack) => {
            let _ = out.flush();
            let _ = ack.send(());
        }
    };
    while let Ok(msg) = queue.recv() {
        handle(msg, &mut out);
        while let Ok(more) = queue.try_recv() {
            handle(more, &mut out);
        }
        let _ = out.flush();
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let (ack, done) = sync_channel(1);
        if self.queue.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(std::time::Duration::from_secs(1));
        }
    }
}

/// One formatted event (the subscriber writes each event through its own handle).
pub struct Line<'a> {
    buf: Vec<u8>,
    writer: &'a LogWriter,
}

impl Write for Line<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.buf);
        if line.is_empty() {
            return;
        }
        match self.writer.queue.try_send(Msg::Line(line)) {
            Ok(()) => {
                let dropped = self.writer.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let note = format!(
                        "{{\"level\":\"WARN\",\"fields\":{{\"message\":\"log queue was full; dropped {dropped} lines\"}},\"target\":\"tether::log\"}}\n"
                    );
                    let _ = self.writer.queue.try_send(Msg::Line(note.into_bytes()));
                }
            }
            Err(TrySendError::Full(_)) => {
                self.writer.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(Msg::Line(line))) => {
                let _ = std::io::stderr().write_all(&line);
            }
            Err(TrySendError::Disconnected(Msg::Flush(_))) => {}
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            buf: Vec::with_capacity(512),
            writer: self,
        }
    }
}
