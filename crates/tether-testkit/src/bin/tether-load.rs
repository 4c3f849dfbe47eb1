//! `tether-load`: an HTTP/1.1 load generator for Tether's benchmarks (`scripts/bench.sh`).
//!
//! wrk measures a closed loop: each connection sends its next request when the previous one
//! answers, so at saturation its percentiles are mostly queueing, and below saturation it
//! cannot hold a rate. This tool holds a **fixed request rate** spread over a fixed number of
//! keep-alive connections, and measures each request's latency from the moment it was
//! *scheduled*, not from when it could be sent (the correction for coordinated omission that
//! wrk2 makes): a server that stalls is charged for every request that should have been sent
//! during the stall. `--rate 0` runs a closed loop instead (maximum throughput).
//!
//! Like wrk, it writes the request bytes directly and reads each response by its length, one
//! task per connection on one thread, so that little of the two cores goes to the measuring
//! (with hyper's client it spent about twice the user CPU, and its p50 was 0.3 ms higher).
//! A second thread paces the requests (see [`pace`]).
//!
//! ```text
//! tether-load --url http://127.0.0.1:8420/v1/orgs/default/envs/dev --rate 10000 \
//!     --connections 64 --duration 10 [--warmup 2] [--token TOKEN | TETHER_TOKEN]
//! ```
//!
//! Prints one line of figures, and the same as JSON with `--json`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

struct Args {
    host: String,
    authority: String,
    path: String,
    token: Option<String>,
    rate: u64,
    connections: u64,
    duration: Duration,
    warmup: Duration,
    /// The shortest sleep of the pacing thread.
    tick: Duration,
    json: bool,
}

fn usage() -> String {
    "usage: tether-load --url http://HOST:PORT/PATH [--rate REQ_PER_S (0 = closed loop)] \
     [--connections N] [--duration SECONDS] [--warmup SECONDS] [--tick-us MICROS] [--token T] \
     [--json]"
        .to_owned()
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut args = Args {
        host: String::new(),
        authority: String::new(),
        path: String::new(),
        token: std::env::var("TETHER_TOKEN").ok().filter(|t| !t.is_empty()),
        rate: 10_000,
        connections: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        tick: Duration::from_micros(250),
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--json" {
            args.json = true;
            continue;
        }
        let value = it.next().ok_or_else(usage)?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--url" => url = Some(value.clone()),
            "--token" => args.token = Some(value.clone()),
            "--rate" => args.rate = number()?,
            "--connections" => args.connections = number()?.max(1),
            "--duration" => args.duration = Duration::from_secs(number()?),
            "--warmup" => args.warmup = Duration::from_secs(number()?),
            "--tick-us" => args.tick = Duration::from_micros(number()?),
            _ => return Err(usage()),
        }
    }
    let url = url.ok_or_else(usage)?;
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs (loopback benchmarks)")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    args.authority = authority.to_owned();
    args.host = authority.to_owned();
    args.path = format!("/{path}");
    Ok(args)
}

/// What one connection measured: latencies in microseconds of the requests scheduled after
/// the warm-up, and the count of non-2xx answers and transport errors.
#[derive(Default)]
struct Sample {
    latencies_us: Vec<u64>,
    bad_status: u64,
    errors: u64,
    /// When the last measured request completed.
    last_done: Option<Instant>,
}

/// One keep-alive HTTP/1.1 connection, written and read directly: the request bytes are built
/// once, and a response is read by its `Content-Length`. A client library cost this tool more
/// CPU per request than the server spends on some routes, on the same two cores.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// The bytes of the one request this run sends.
fn request_bytes(args: &Args) -> Vec<u8> {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\naccept: application/json\r\n",
        args.path, args.authority
    );
    if let Some(t) = &args.token {
        req.push_str("authorization: Bearer ");
        req.push_str(t);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

async fn connect(args: &Args) -> Result<Conn, String> {
    let tcp = TcpStream::connect(&args.host)
        .await
        .map_err(|e| format!("connect {}: {e}", args.host))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(Conn {
        tcp,
        buf: Vec::with_capacity(16 * 1024),
    })
}

/// The status code and body length of a response head (`head` ends before its blank line).
fn parse_head(head: &[u8]) -> Result<(u16, usize), String> {
    let text = std::str::from_utf8(head).map_err(|_| "a response head that is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("a response without a status line")?;
    let mut len = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            len = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".into());
        }
    }
    Ok((status, len.unwrap_or(0)))
}

impl Conn {
    /// Sends `request` and reads the whole response; returns its status.
    async fn exchange(&mut self, request: &[u8]) -> Result<u16, String> {
        self.tcp
            .write_all(request)
            .await
            .map_err(|e| e.to_string())?;
        self.buf.clear();
        // The status and the length of the whole response, once its head is in.
        let mut parsed = None;
        loop {
            if parsed.is_none()
                && let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n")
            {
                let head = self.buf.get(..end).unwrap_or_default();
                let (status, len) = parse_head(head)?;
                parsed = Some((status, end + 4 + len));
            }
            if let Some((status, total)) = parsed
                && self.buf.len() >= total
            {
                return Ok(status);
            }
            let n = self
                .tcp
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
        }
    }
}

/// Where a connection's requests come from.
enum Dues {
    /// Closed loop: each request follows the previous answer, until this time.
    Closed(Instant),
    /// Fixed rate: the due times the pacer sends, until it closes the channel.
    Paced(mpsc::UnboundedReceiver<Instant>),
}

/// One connection's loop. With a rate, a request's latency counts from its due time if the
/// connection was still waiting for an earlier answer then, else from when it was sent.
/// Requests due before `measure_from` warm up and are not measured.
async fn drive(args: &Args, request: &[u8], measure_from: Instant, mut dues: Dues) -> Sample {
    let mut sample = Sample::default();
    // Taken before the run starts (t0 is 200 ms ahead): the first request finds the
    // connection free.
    let mut prev_done = Instant::now();
    let mut conn = match connect(args).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            sample.errors += 1;
            return sample;
        }
    };
    loop {
        let (scheduled, start) = match &mut dues {
            Dues::Paced(due) => {
                let Some(scheduled) = due.recv().await else {
                    break;
                };
                // Free at its due time (the previous answer came first): any delay past it is
                // this tool's pacing (the timer's tick), so the latency counts from the send.
                // Still busy: the server held the connection, and is charged from the due time.
                let start = if prev_done <= scheduled {
                    Instant::now()
                } else {
                    scheduled
                };
                (scheduled, start)
            }
            Dues::Closed(end) => {
                let now = Instant::now();
                if now >= *end {
                    break;
                }
                (now, now)
            }
        };
        let result = conn.exchange(request).await;
        prev_done = Instant::now();
        let latency = prev_done - start;
        if scheduled < measure_from {
            continue;
        }
        sample.last_done = Some(Instant::now());
        match result {
            Ok(status) if (200..300).contains(&status) => {
                sample
                    .latencies_us
                    .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
            }
            Ok(_) => sample.bad_status += 1,
            Err(_) => {
                sample.errors += 1;
                match connect(args).await {
                    Ok(c) => conn = c,
                    Err(_) => break,
                }
            }
        }
    }
    sample
}

/// Sends each connection its due times, `first + k * interval` before `end`, from a thread of
/// its own that sleeps until the next one, but never for less than `tick`; then closes every
/// channel, which ends the connections' loops. The schedule lives only here, so a connection
/// never waits for a due time that will not come.
///
/// tokio's timers tick every millisecond, so sleeping on them released a whole millisecond's
/// requests together (bursts of 20 at 20,000/s): not the steady rate this tool claims to hold,
/// and it added about 0.5 ms to the p50. A thread's sleep wakes within tens of microseconds;
/// the `tick` floor bounds how often it wakes (each wake-up also wakes the runtime's thread,
/// on the cores the server uses). A connection still waiting for an answer finds the due
/// times it missed queued in its channel.
fn pace(
    schedule: Vec<(Instant, mpsc::UnboundedSender<Instant>)>,
    interval: Duration,
    end: Instant,
    tick: Duration,
) {
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = schedule
        .iter()
        .enumerate()
        .filter(|(_, (first, _))| *first < end)
        .map(|(i, (first, _))| Reverse((*first, i)))
        .collect();
    while let Some(&Reverse((next, _))) = due.peek() {
        let now = Instant::now();
        if next > now {
            #[expect(
                clippy::disallowed_methods,
                reason = "the pacing thread is its own OS thread, outside the runtime"
            )]
            std::thread::sleep((next - now).max(tick));
            continue;
        }
        while let Some(&Reverse((at, i))) = due.peek()
            && at <= now
        {
            due.pop();
            if let Some((_, conn)) = schedule.get(i) {
                // A connection that gave up (could not reconnect) no longer listens.
                let _ = conn.send(at);
            }
            if at + interval < end {
                due.push(Reverse((at + interval, i)));
            }
        }
    }
}

/// How late a thread that only sleeps woke up during the measured window.
#[derive(Debug, Default, PartialEq)]
struct Stalls {
    /// Wake-ups later than [`STALL`].
    count: u64,
    /// The latest wake-up's lateness.
    longest: Duration,
}

/// A wake-up this late counts as a stall of the machine.
const STALL: Duration = Duration::from_millis(2);

/// Sleeps `step` at a time (with `sleep`) until `end` and records how late it woke. This thread
/// does nothing else, so a late wake-up means no core ran it: at a few milliseconds, the whole
/// machine (here a VM whose host takes its cores away now and then) was stalled or overloaded,
/// and the server was too. The figures say which runs measured the machine more than Tether.
fn probe(end: std::time::Instant, step: Duration, sleep: impl Fn(Duration)) -> Stalls {
    let mut stalls = Stalls::default();
    loop {
        let before = std::time::Instant::now();
        if before >= end {
            return stalls;
        }
        sleep(step);
        let late = before.elapsed().saturating_sub(step);
        if late > STALL {
            stalls.count += 1;
            stalls.longest = stalls.longest.max(late);
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a sample of at most millions"
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.saturating_sub(1).min(sorted.len().saturating_sub(1));
    #[expect(clippy::cast_precision_loss, reason = "microseconds to milliseconds")]
    sorted.get(idx).map_or(0.0, |v| *v as f64 / 1000.0)
}

async fn run(args: Args) -> Result<(), String> {
    let args = std::sync::Arc::new(args);
    let request: std::sync::Arc<[u8]> = request_bytes(&args).into();
    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let t0 = Instant::now() + Duration::from_millis(200);
    let measure_from = t0 + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = Vec::new();
    let mut schedule = Vec::new();
    for c in 0..args.connections {
        let (args, request) = (args.clone(), request.clone());
        let dues = match interval {
            Some(i) => {
                // Spread the connections' schedules evenly over one interval.
                let offset = i.mul_f64(c as f64 / args.connections as f64);
                let (tx, rx) = mpsc::unbounded_channel();
                schedule.push((t0 + offset, tx));
                Dues::Paced(rx)
            }
            None => Dues::Closed(end),
        };
        tasks.push(tokio::spawn(async move {
            drive(&args, &request, measure_from, dues).await
        }));
    }
    if let Some(interval) = interval {
        let tick = args.tick;
        std::thread::spawn(move || pace(schedule, interval, end, tick));
    }
    let probe_end = end.into_std();
    let wait = measure_from.into_std();
    let prober = std::thread::spawn(move || {
        #[expect(
            clippy::disallowed_methods,
            reason = "the probe is its own OS thread, outside the runtime"
        )]
        let sleep = std::thread::sleep;
        sleep(wait.saturating_duration_since(std::time::Instant::now()));
        probe(probe_end, Duration::from_millis(1), sleep)
    });
    let mut all = Sample::default();
    for t in tasks {
        let s = t.await.map_err(|e| e.to_string())?;
        all.latencies_us.extend(s.latencies_us);
        all.bad_status += s.bad_status;
        all.errors += s.errors;
        all.last_done = all.last_done.max(s.last_done);
    }
    let stalls = prober.join().unwrap_or_default();
    all.latencies_us.sort_unstable();
    let ok = all.latencies_us.len();
    let secs = args.duration.as_secs_f64();
    // Completed requests over the time they took: when the server falls behind the schedule,
    // the last ones complete after the window, and the rate is what it really served.
    let took = all.last_done.map_or(secs, |d| {
        d.duration_since(measure_from).as_secs_f64().max(secs)
    });
    #[expect(clippy::cast_precision_loss, reason = "a request count")]
    let achieved = ok as f64 / took;
    let figures = [
        ("p50_ms", percentile(&all.latencies_us, 50.0)),
        ("p90_ms", percentile(&all.latencies_us, 90.0)),
        ("p99_ms", percentile(&all.latencies_us, 99.0)),
        ("p999_ms", percentile(&all.latencies_us, 99.9)),
        ("max_ms", percentile(&all.latencies_us, 100.0)),
    ];
    let mode = if args.rate > 0 {
        format!("fixed rate {}/s", args.rate)
    } else {
        "closed loop".to_owned()
    };
    if args.json {
        let mut obj = serde_json::Map::new();
        obj.insert("mode".into(), mode.into());
        obj.insert("connections".into(), args.connections.into());
        obj.insert("ok".into(), ok.into());
        obj.insert("achieved_per_s".into(), achieved.into());
        obj.insert("non_2xx".into(), all.bad_status.into());
        obj.insert("errors".into(), all.errors.into());
        for (k, v) in figures {
            obj.insert(k.into(), v.into());
        }
        obj.insert("stalls".into(), stalls.count.into());
        obj.insert(
            "longest_stall_ms".into(),
            (stalls.longest.as_secs_f64() * 1000.0).into(),
        );
        println!("{}", serde_json::Value::Object(obj));
    } else {
        let lat: Vec<String> = figures
            .iter()
            .map(|(k, v)| format!("{}={v:.2}", k.trim_end_matches("_ms")))
            .collect();
        println!(
            "{mode}, {} connections, {secs:.0} s: {achieved:.0} req/s ok, latency ms {} \
             (non-2xx {}, errors {}); machine stalls over 2 ms: {}, longest {:.1} ms",
            args.connections,
            lat.join(" "),
            all.bad_status,
            all.errors,
            stalls.count,
            stalls.longest.as_secs_f64() * 1000.0
        );
    }
    if all.bad_status > 0 || all.errors > 0 || ok == 0 {
        return Err("some requests failed".into());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Instant, mpsc, pace, parse_head};

    #[test]
    fn the_probe_counts_wake_ups_that_came_late() {
        use std::cell::Cell;
        // A sleeper that oversleeps by 5 ms on its third call, and sleeps exactly otherwise.
        let calls = Cell::new(0);
        let sleep = |d: Duration| {
            calls.set(calls.get() + 1);
            let extra = if calls.get() == 3 { 5 } else { 0 };
            #[expect(clippy::disallowed_methods, reason = "a plain thread, as in the tool")]
            std::thread::sleep(d + Duration::from_millis(extra));
        };
        let end = std::time::Instant::now() + Duration::from_millis(200);
        let stalls = super::probe(end, Duration::from_millis(1), sleep);
        assert!(calls.get() >= 3);
        assert!(stalls.count >= 1, "{stalls:?}");
        assert!(stalls.longest >= Duration::from_millis(5), "{stalls:?}");
    }

    #[test]
    fn the_pacer_sends_every_due_time_before_the_end_and_none_early() {
        let start = Instant::now() + Duration::from_millis(2);
        let ms = Duration::from_millis;
        let (a_tx, mut a) = mpsc::unbounded_channel();
        let (b_tx, mut b) = mpsc::unbounded_channel();
        let schedule = vec![(start, a_tx), (start + Duration::from_micros(500), b_tx)];
        pace(schedule, ms(1), start + ms(5), Duration::from_micros(100));
        // Due at +0, +1, +2, +3, +4 ms and at +0.5 ... +4.5 ms: five each, none at or past
        // +5, and then the channels are closed (the connections' loops end).
        let drain = |rx: &mut mpsc::UnboundedReceiver<Instant>| {
            let mut got = Vec::new();
            while let Ok(at) = rx.try_recv() {
                got.push(at);
            }
            assert!(rx.is_closed());
            got
        };
        let want_a: Vec<Instant> = (0..5).map(|k| start + ms(k)).collect();
        let want_b: Vec<Instant> = want_a
            .iter()
            .map(|t| *t + Duration::from_micros(500))
            .collect();
        assert_eq!(drain(&mut a), want_a);
        assert_eq!(drain(&mut b), want_b);
        // The last one was due at +4.5 ms, and none is sent before its time.
        assert!(Instant::now() >= start + Duration::from_micros(4_500));
    }

    #[test]
    fn a_head_gives_its_status_and_body_length() {
        let head =
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\nContent-Length: 57";
        assert_eq!(parse_head(head), Ok((404, 57)));
        assert_eq!(parse_head(b"HTTP/1.1 204 No Content"), Ok((204, 0)));
    }

    #[test]
    fn chunked_and_malformed_heads_are_refused() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked").is_err());
        assert!(parse_head(b"garbage").is_err());
        assert!(parse_head(&[0xff, 0xfe]).is_err());
    }
}
