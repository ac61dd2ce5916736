//! The encoded line is `tracing_subscriber`'s line for the same event, byte
//! for byte but the timestamp, in both formats and at both levels.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::*;

#[test]
fn a_clock_past_year_9999_is_written_not_panicked_on() {
    let mut out = Vec::new();
    let far = UNIX_EPOCH + Duration::from_secs(LAST_SECOND + 86_400);
    timestamp(far, &mut out);
    let text = String::from_utf8(out).expect("utf-8");
    assert!(text.starts_with("9999-12-31T23:59:59."), "{text}");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The line `tracing_subscriber`, configured as `telemetry::init` does
/// (without colours), writes for `line`'s event.
fn from_tracing(line: &AccessLine<'_>, format: LogFormat, debug: bool) -> String {
    let captured = Captured::default();
    let writer = {
        let captured = captured.clone();
        move || captured.clone()
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(writer);
    match format {
        LogFormat::Text => {
            tracing::subscriber::with_default(builder.finish(), || line.event(debug));
        }
        LogFormat::Json => {
            let subscriber = builder.json().flatten_event(true).finish();
            tracing::subscriber::with_default(subscriber, || line.event(debug));
        }
    }
    let bytes = captured.0.lock().expect("lock").clone();
    String::from_utf8(bytes).expect("utf-8")
}

fn encoded(line: &AccessLine<'_>, format: LogFormat, debug: bool) -> String {
    let mut out = Vec::new();
    line.encode(format, debug, SystemTime::now(), &mut out);
    String::from_utf8(out).expect("utf-8")
}

/// The line without its timestamp (`2026-12-02T16:11:37.123456Z`).
fn untimed(line: &str, format: LogFormat) -> String {
    let at = match format {
        LogFormat::Text => 0,
        LogFormat::Json => "{\"timestamp\":\"".len(),
    };
    let stamp = &line[at..at + 27];
    assert!(
        stamp.as_bytes()[4] == b'-' && stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
        "a timestamp at {at}: {line}"
    );
    format!("{}{}", &line[..at], &line[at + 27..])
}

fn full<'a>(method: &'a Method) -> AccessLine<'a> {
    AccessLine {
        request_id: "4f0c1d2e3b4a59687766554433221100",
        method,
        path: Some("/asset/v1/content/assets"),
        status: Some(200),
        upstream_status: Some(201),
        duration_us: 84120,
        upstream_us: Some(83050),
        queued_us: Some(12),
        throttle_wait_us: Some(0),
        bytes_in: 0,
        bytes_out: 5120,
        client: "127.0.0.1:52144".parse().expect("address"),
        user_agent: Some("python-requests/2.32"),
        tenant: Some("acme"),
        account_id: Some("12345"),
        api: Some("rest"),
        token: Some("hit"),
        replayed: false,
        throttle_retries: 2,
        error: Some("upstream_timeout"),
        completed: true,
    }
}

#[test]
fn the_encoded_line_is_tracing_subscribers_line() {
    let get = Method::GET;
    let odd = Method::from_bytes(b"PROPFIND").expect("method");
    let strange = AccessLine {
        // A sane id is plain (`access::request_id`): spaces, no quotes.
        request_id: "id with spaces",
        path: Some("/caf\u{e9}/\u{1b}[31m/tab\there"),
        status: None,
        upstream_status: None,
        upstream_us: None,
        queued_us: None,
        throttle_wait_us: None,
        client: "[::1]:8080".parse().expect("address"),
        user_agent: Some("agent \"quoted\" \\ \u{7f}\u{85}\u{200b}\n"),
        tenant: None,
        account_id: None,
        api: None,
        token: None,
        replayed: true,
        error: None,
        completed: false,
        ..full(&odd)
    };
    for line in [full(&get), strange] {
        for format in [LogFormat::Text, LogFormat::Json] {
            for debug in [false, true] {
                let ours = encoded(&line, format, debug);
                let theirs = from_tracing(&line, format, debug);
                assert_eq!(
                    untimed(&ours, format),
                    untimed(&theirs, format),
                    "{format:?}, debug {debug}"
                );
            }
        }
    }
}

#[test]
fn the_documented_text_line() {
    let get = Method::GET;
    let line = encoded(&full(&get), LogFormat::Text, false);
    assert_eq!(
        untimed(&line, LogFormat::Text),
        "  INFO sfmc_proxy::access: request request_id=\"4f0c1d2e3b4a59687766554433221100\" method=GET path=\"/asset/v1/content/assets\" status=200 upstream_status=201 duration_us=84120 upstream_us=83050 queued_us=12 throttle_wait_us=0 bytes_in=0 bytes_out=5120 client=127.0.0.1:52144 user_agent=\"python-requests/2.32\" tenant=\"acme\" account_id=\"12345\" api=\"rest\" token=\"hit\" replayed=false throttle_retries=2 error=\"upstream_timeout\" completed=true\n"
    );
}

#[test]
fn timestamps_are_rfc3339_in_microseconds_and_utc() {
    let at = |seconds: u64, micros: u64| {
        let mut out = Vec::new();
        let time = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros);
        timestamp(time, &mut out);
        String::from_utf8(out).expect("utf-8")
    };
    assert_eq!(at(1_700_000_000, 42), "2023-11-14T22:13:20.000042Z");
    // The same second again (made once), then the next.
    assert_eq!(at(1_700_000_000, 999_999), "2023-11-14T22:13:20.999999Z");
    assert_eq!(at(1_700_000_001, 0), "2023-11-14T22:13:21.000000Z");
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
}

#[test]
fn eight_bytes_at_a_time_finds_what_one_at_a_time_finds() {
    for odd in 0..=255u8 {
        for at in 0..17 {
            let mut bytes = [b'a'; 17];
            bytes[at] = odd;
            for len in [at + 1, 8, 16, 17] {
                let bytes = &bytes[..len.max(at + 1)];
                assert_eq!(
                    all_plain(bytes),
                    bytes.iter().all(|&b| plain(b)),
                    "{odd:#x} at {at} of {len}"
                );
            }
        }
    }
    assert!(all_plain(
        b"/asset/v1/content/assets~ !#$%&'()*+,-.:;<=>?@[]^_`{|}"
    ));
}
