//! The server's JSON log line: one object per event,
//! `{"timestamp","level","fields":{..},"target","request_id"?,"span"?}`.
//!
//! Written straight into the line buffer. The request id comes from the request's task-local
//! (set by the request middleware), so a request needs no tracing span: tracing-subscriber's
//! JSON format kept each span's fields as a JSON string and parsed it back for every event, and
//! creating the span per request cost more than the request's authorization check.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        w.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut w)?;
        write!(
            w,
            "\",\"level\":\"{}\",\"fields\":{{",
            event.metadata().level()
        )?;
        let mut fields = Fields {
            out: &mut w,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        w.write_str("},\"target\":")?;
        json_str(&mut w, event.metadata().target())?;
        if let Ok(r) = tether_server::error::REQUEST_ID.try_with(|id| {
            w.write_str(",\"request_id\":")?;
            json_str(&mut w, id)
        }) {
            r?;
        }
        if let Some(span) = ctx.lookup_current() {
            w.write_str(",\"span\":{\"name\":")?;
            json_str(&mut w, span.name())?;
            let ext = span.extensions();
            if let Some(f) = ext.get::<FormattedFields<N>>()
                && !f.is_empty()
            {
                w.write_str(",\"fields\":")?;
                json_str(&mut w, f)?;
            }
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

/// Writes an event's fields as JSON members.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn member(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.out.write_char(',')?;
            }
            json_str(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field, |w| json_str(w, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, |w| write!(w, "{value}"));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, |w| write!(w, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, |w| write!(w, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.member(field, |w| write!(w, "{value}"));
        } else {
            self.member(field, |w| json_str(w, &value.to_string()));
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, |w| json_display(w, value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.member(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

fn json_display(w: &mut Writer<'_>, value: &dyn fmt::Display) -> fmt::Result {
    w.write_char('"')?;
    write!(Escaped(w), "{value}")?;
    w.write_char('"')
}

fn json_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let esc = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f | 0x7f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if esc.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(esc)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn every_field_type_and_awkward_text_give_valid_json() {
        let err = std::io::Error::other("disk \"full\"");
        let lines = capture(|| {
            tracing::warn!(
                n = -3i64,
                u = 7u64,
                ok = true,
                f = 1.5f64,
                inf = f64::INFINITY,
                text = "tab\there \"quoted\" back\\slash \u{1} é",
                dbg = ?vec!["a\nb"],
                error = &err as &(dyn std::error::Error + 'static),
                "message with {} newline\n",
                "a"
            );
        });
        let v = &lines[0];
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["fields"]["n"], -3);
        assert_eq!(v["fields"]["u"], 7);
        assert_eq!(v["fields"]["ok"], true);
        assert_eq!(v["fields"]["f"], 1.5);
        assert_eq!(v["fields"]["inf"], "inf");
        assert_eq!(
            v["fields"]["text"],
            "tab\there \"quoted\" back\\slash \u{1} é"
        );
        assert_eq!(v["fields"]["dbg"], "[\"a\\nb\"]");
        assert_eq!(v["fields"]["error"], "disk \"full\"");
        assert_eq!(v["fields"]["message"], "message with a newline\n");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(v.get("request_id").is_none());
    }

    #[test]
    fn the_request_id_of_the_task_is_on_each_line() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let lines = capture(|| {
            rt.block_on(
                tether_server::error::REQUEST_ID
                    .scope("req_test".to_owned(), async { tracing::info!("inside") }),
            );
            tracing::info!("outside");
        });
        assert_eq!(lines[0]["request_id"], "req_test");
        assert!(lines[1].get("request_id").is_none());
    }

    #[test]
    fn the_current_span_is_named_with_its_fields() {
        let lines = capture(|| {
            let span = tracing::info_span!("session", runner = "r1");
            span.in_scope(|| tracing::info!("hello"));
        });
        assert_eq!(lines[0]["span"]["name"], "session");
        assert!(lines[0]["span"]["fields"].as_str().unwrap().contains("r1"));
    }
}
