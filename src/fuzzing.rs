//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), not an API.
//!
//! The library is to keep its internals `pub(crate)`; these thin wrappers
//! are the one door the fuzz targets use. Each takes raw input, runs one
//! parser or check on it, and panics only where a property is broken (the
//! fuzzer reports a panic as a crash): a parser may refuse any input, but it
//! must never panic, and the SOAP injector must never edit outside its plan.

use std::path::Path;
use std::sync::OnceLock;

use crate::config::{ServerSettings, Settings};
use crate::soap::{Scan, checked_apply, operation_of, scan};

/// The token the SOAP property applies (escaping included: `&` and `<`).
const TOKEN: &str = "fuzz-token-<&>-0123456789";

/// The injector's promise on any bytes: scanned whole and as every prefix
/// of a streamed body, the envelope is refused, waits for more, or is
/// edited only at its plan's places (checked by the envelope's bytes, not by
/// what the scanner believed); a ready prefix decides as the whole does.
///
/// The reader of the SOAP operation (the Body's one element, which a
/// `read_only` tenant's policy decides on) names one only for a whole
/// envelope, and a prefix it refuses is refused whole.
pub fn soap_inject(data: &[u8]) {
    let whole = scan(data, true);
    if let Ok(Scan::Ready(plan)) = &whole {
        assert_in_place(data, plan);
    }
    let operation = operation_of(data, true, None);
    for at in 0..=data.len() {
        if let Ok(Scan::Ready(plan)) = scan(&data[..at], false) {
            assert_in_place(data, &plan);
            if let Ok(Scan::Ready(whole)) = &whole {
                assert_eq!(&plan, whole, "prefix {at} decided otherwise than the whole");
            }
        }
        match operation_of(&data[..at], false, None) {
            Ok(None) => {}
            // Refused early only if refused in the end: no framing decides.
            Err(error) => assert!(operation.is_err(), "prefix {at} refused ({error})"),
            Ok(Some(found)) => panic!("prefix {at} named {found:?} before the envelope ended"),
        }
    }
}

fn assert_in_place(data: &[u8], plan: &crate::soap::Plan) {
    if let Err(why) = checked_apply(data, plan, TOKEN) {
        panic!("{why}: {:?}", String::from_utf8_lossy(data));
    }
}

/// SFMC's `/v2/token` answer (`status`, body as it came) through the parser
/// the token client uses, with the default instance-host allowlist.
pub fn token_response(status: u16, body: &[u8]) {
    let Ok(status) = http::StatusCode::from_u16(status) else {
        return;
    };
    let hosts = [".marketingcloudapis.com".to_owned()];
    let _ =
        crate::token::sfmc::parse_response("https://fuzz.invalid/v2/token", status, body, &hosts);
}

/// A `proxy.toml` through loading and validation; every `${VAR}` is set
/// (so that the checks behind it run too). Files it names are looked for
/// under a directory that does not exist.
pub fn config(text: &str) {
    let env = |name: &str| Some(format!("fuzz-value-of-{name}-0123456789abcdef0123456789"));
    let _ = Settings::from_toml(text, env, Path::new("/nonexistent-sfmc-proxy-fuzz"));
}

/// The inbound guard on a request with these header bytes (`None`: header
/// absent) and request target, under one of two server configurations
/// (`strict`: an inbound key, allowed hosts and origins configured).
/// Inputs that `http` itself refuses are skipped: they never reach the guard.
pub fn guard(
    strict: bool,
    host: Option<&[u8]>,
    origin: Option<&[u8]>,
    sec_fetch_site: Option<&[u8]>,
    uri: &[u8],
) {
    let Ok(uri) = http::Uri::try_from(uri) else {
        return;
    };
    let mut request = http::Request::builder().uri(uri);
    for (name, value) in [
        ("host", host),
        ("origin", origin),
        ("sec-fetch-site", sec_fetch_site),
    ] {
        if let Some(value) = value {
            let Ok(value) = http::HeaderValue::from_bytes(value) else {
                return;
            };
            request = request.header(name, value);
        }
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let _ = crate::guard::check(&parts, server_settings(strict));
}

fn server_settings(strict: bool) -> &'static ServerSettings {
    static LOOSE: OnceLock<ServerSettings> = OnceLock::new();
    static STRICT: OnceLock<ServerSettings> = OnceLock::new();
    let (cell, server) = match strict {
        false => (&LOOSE, ""),
        true => (
            &STRICT,
            "[server]\nlisten = \"0.0.0.0:8080\"\ninbound_keys = [\"fuzz-inbound-key-0123456789\"]\nallowed_hosts = [\"proxy.example\", \"[::1]\"]\nallowed_origins = [\"https://app.example\"]\n",
        ),
    };
    cell.get_or_init(|| {
        let toml = format!(
            "{server}[tenants.acme]\nauth_url = \"https://mcaaaaaaaaaaaaaaaaaaaaaaaaaa.auth.marketingcloudapis.com/\"\nclient_id = \"id\"\nclient_secret = \"secret\"\n"
        );
        match Settings::from_toml(&toml, |_| None, Path::new(".")) {
            Ok(settings) => settings.server,
            Err(error) => panic!("the fuzz target's own config is invalid: {error}"),
        }
    })
}

/// A local `/v2/token` request body (`content_type` as sent) through the broker's parser.
pub fn broker_request(content_type: Option<&str>, body: &[u8]) {
    let _ = crate::broker::parse_request(content_type, body);
}

/// SFMC's HTTP/1.1 response, as the proxy's own client reads it (its real
/// exchange, over a scripted socket): any bytes, never a panic, and the
/// same outcome however they are split up on the way (`step` bytes a read
/// against all at once), a body never longer than the bytes it came in.
pub fn upstream_response(head_request: bool, step: usize, wire: &[u8]) {
    let whole = crate::upstream::read_response(wire, head_request, wire.len());
    let stepped = crate::upstream::read_response(wire, head_request, step);
    assert_eq!(
        whole, stepped,
        "split every {step} bytes, the response read otherwise"
    );
    if let Ok((_, body, _, _)) = &whole {
        assert!(body.len() <= wire.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed seeds, as the fuzz targets get them.
    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| std::fs::read(entry.expect("entry").path()).expect("seed"))
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
        seeds
    }

    /// `cargo test` runs every wrapper on the seeds (the fuzz runs are in CI).
    #[test]
    fn the_wrappers_take_the_seeds() {
        for seed in seeds("soap_inject") {
            soap_inject(&seed);
        }
        for seed in seeds("token_response") {
            let (status, body) = seed.split_at(2);
            token_response(u16::from_be_bytes([status[0], status[1]]), body);
        }
        for seed in seeds("config") {
            config(std::str::from_utf8(&seed).expect("TOML seeds are text"));
        }
        for seed in seeds("broker_request") {
            broker_request(Some("application/json"), &seed[1..]);
        }
        guard(
            true,
            Some(b"proxy.example"),
            Some(b"https://app.example"),
            Some(b"same-origin"),
            b"/hub/v1/x",
        );
        guard(
            false,
            None,
            Some(b"\xFF"),
            Some(b"cross-site"),
            b"http://[::1]:8080/Service.asmx",
        );
    }

    #[test]
    fn the_soap_seeds_are_ready_or_refused_as_meant() {
        let bom = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus/soap_inject/bom-wsse-fueloauth.xml"),
        )
        .expect("seed");
        assert!(matches!(scan(&bom, true), Ok(Scan::Ready(_))));
        let settings = Settings::from_toml(
            &String::from_utf8_lossy(&seeds("config")[0]),
            |name| Some(format!("value-of-{name}-0123456789abcdef0123456789")),
            Path::new("."),
        );
        assert!(settings.is_ok(), "{:?}", settings.err());
    }
}
