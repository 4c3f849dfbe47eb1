//! A non-blocking writer for the server's JSON log.
//!
//! Request tasks append each formatted line to a shared in-memory buffer; one thread writes
//! the buffer to stderr. The thread sleeps a short batching window after each write, so under
//! load a request never wakes it (waking a parked thread per line cost a futex call and a
//! context switch per request, about a tenth of the server's CPU); it parks only when the buffer
//! is empty, and the first line after that wakes it, so an idle server costs nothing and a line
//! reaches the file within the window. Writing one unbuffered line per request from the request
//! path halved the server's throughput. When the buffer is over its cap the line is dropped and
//! counted, never waited for; the count is reported in the log once there is room again.
//! (Diagnostic logs only: the audited request log is a separate, lossless path.)

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Bytes that may wait for the writer thread before lines are dropped.
const CAP_BYTES: usize = 8 << 20;
/// How long the thread lets lines gather after a write.
const BATCH_WINDOW: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The thread is parked (or about to park) and must be woken for new lines.
    parked: AtomicBool,
    stop: AtomicBool,
    /// Held while bytes taken from `pending` are written, so writes keep their order.
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes what is pending (and a note of dropped lines) and writes it out.
    /// Returns whether there was anything.
    fn write_pending(&self, out: &mut dyn Write, spare: &mut Vec<u8>) -> bool {
        let dropped = {
            let mut p = self.pending();
            if p.bytes.is_empty() && p.dropped == 0 {
                return false;
            }
            spare.clear();
            std::mem::swap(&mut p.bytes, spare);
            std::mem::take(&mut p.dropped)
        };
        let _ = out.write_all(spare);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "{{\"level\":\"WARN\",\"fields\":{{\"message\":\"log buffer was full; dropped {dropped} lines\"}},\"target\":\"tether::log\"}}"
            );
        }
        let _ = out.flush();
        // Keep the allocation for the next swap unless a burst made it huge.
        if spare.capacity() > 1 << 20 {
            *spare = Vec::new();
        }
        true
    }
}

/// The `MakeWriter` handed to the subscriber.
pub struct LogWriter {
    shared: Arc<Shared>,
    thread: Thread,
}

/// Writes out what is pending when dropped (keep it alive for the whole run).
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Thread,
}

/// Starts the writer thread on stderr.
pub fn stderr_writer() -> std::io::Result<(LogWriter, LogGuard)> {
    writer_to(Box::new(std::io::stderr()))
}

fn writer_to(out: Box<dyn Write + Send>) -> std::io::Result<(LogWriter, LogGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        parked: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        out: Mutex::new(out),
    });
    let for_thread = shared.clone();
    let handle = std::thread::Builder::new()
        .name("tether-log".into())
        .spawn(move || drain(&for_thread))?;
    let thread = handle.thread().clone();
    let writer = LogWriter {
        shared: shared.clone(),
        thread: thread.clone(),
    };
    Ok((writer, LogGuard { shared, thread }))
}

#[allow(
    clippy::disallowed_methods,
    reason = "a dedicated thread, not a runtime worker"
)]
fn drain(shared: &Shared) {
    let mut spare = Vec::with_capacity(64 * 1024);
    while !shared.stop.load(Ordering::Acquire) {
        let wrote = match shared.out.lock() {
            Ok(mut out) => shared.write_pending(&mut **out, &mut spare),
            Err(_) => return,
        };
        if wrote {
            std::thread::sleep(BATCH_WINDOW);
            continue;
        }
        // Empty: announce the park under the lock, so a line appended after this sees it.
        {
            let p = shared.pending();
            if !p.bytes.is_empty() || p.dropped > 0 {
                continue;
            }
            shared.parked.store(true, Ordering::Release);
        }
        std::thread::park();
    }
}

impl Drop for LogGuard {
    #[allow(clippy::disallowed_methods, reason = "runs once, at shutdown")]
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
        // The thread may be inside a write; wait for it, but never hang on a stuck stderr.
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if let Ok(mut out) = self.shared.out.try_lock() {
                let mut spare = Vec::new();
                self.shared.write_pending(&mut **out, &mut spare);
                return;
            }
            if Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// One event being written: holds the buffer's lock from its first byte to its end, so a line
/// is never interleaved with another.
pub struct Line<'a> {
    writer: &'a LogWriter,
    held: Option<MutexGuard<'a, Pending>>,
    dropping: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.dropping {
            return Ok(data.len());
        }
        let p = self
            .held
            .get_or_insert_with(|| self.writer.shared.pending());
        if p.bytes.len() + data.len() > CAP_BYTES {
            self.dropping = true;
            return Ok(data.len());
        }
        p.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        let Some(mut p) = self.held.take() else {
            return;
        };
        if self.dropping {
            p.dropped += 1;
        }
        drop(p);
        if self.writer.shared.parked.swap(false, Ordering::AcqRel) {
            self.writer.thread.unpark();
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            writer: self,
            held: None,
            dropping: false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "plain threads, no runtime")]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(sink: &Sink) -> String {
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_order_per_thread() {
        let sink = Sink::default();
        let (writer, guard) = writer_to(Box::new(sink.clone())).unwrap();
        let writer = Arc::new(writer);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let mut line = w.make_writer();
                        // Two writes per line: they must stay together.
                        write!(line, "t{t} ").unwrap();
                        writeln!(line, "{i}").unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        drop(guard);
        let out = text(&sink);
        let mut next = [0u32; 4];
        for line in out.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let t: usize = t[1..].parse().unwrap();
            assert_eq!(
                i.parse::<u32>().unwrap(),
                next[t],
                "line out of order: {line}"
            );
            next[t] += 1;
        }
        assert_eq!(next, [2_000; 4]);
    }

    #[test]
    fn an_idle_writer_is_woken_by_the_next_line() {
        let sink = Sink::default();
        let (writer, _guard) = writer_to(Box::new(sink.clone())).unwrap();
        for n in 0..3 {
            // Let the thread find the buffer empty and park.
            std::thread::sleep(Duration::from_millis(20));
            writeln!(writer.make_writer(), "line {n}").unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !text(&sink).contains(&format!("line {n}")) {
                assert!(Instant::now() < deadline, "line {n} was not written");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn over_the_cap_lines_are_dropped_and_counted() {
        // An output that blocks until released, so the buffer fills.
        let gate = Arc::new(Mutex::new(()));
        struct Gated(Arc<Mutex<()>>, Sink);
        impl Write for Gated {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                let _open = self.0.lock().unwrap();
                self.1.write(data)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let closed = gate.lock().unwrap();
        let (writer, guard) = writer_to(Box::new(Gated(gate.clone(), sink.clone()))).unwrap();
        // The first line is taken by the thread, which then blocks on the gate.
        writeln!(writer.make_writer(), "first").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let big = "x".repeat(1 << 20);
        for _ in 0..10 {
            writeln!(writer.make_writer(), "{big}").unwrap();
        }
        drop(closed);
        drop(guard);
        let out = text(&sink);
        let kept = out.lines().filter(|l| l.starts_with('x')).count();
        assert!(kept < 10, "all big lines were kept");
        assert!(
            out.contains(&format!("dropped {} lines", 10 - kept)),
            "no drop note: kept {kept}"
        );
    }
}
