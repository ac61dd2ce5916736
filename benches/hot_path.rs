//! Hot-path micro-benchmarks, `cargo bench`: the proxy's own per-request work
//! that the profile of a proxied request shows next to hyper and tokio —
//! header rewriting in both directions, the inbound guard and routing, and the
//! token lookup on a warm cache, alone and from several threads at once.
//!
//! The side-by-side benchmark of whole systems is `bench/run.sh`.

use std::future::Future;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use divan::{Bencher, black_box};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request};
use sfmc_proxy::config::Settings;
use sfmc_proxy::headers::{strip_hop_by_hop, strip_request_headers};
use sfmc_proxy::token::{FetchedToken, TokenCache, TokenError, TokenKey, TokenSource};
use sfmc_proxy::upstream::InstanceBase;
use sfmc_proxy::{guard, route};

fn main() {
    divan::main();
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

/// What a script (curl, Python requests) sends through the proxy.
fn client_request() -> HeaderMap {
    headers(&[
        ("host", "127.0.0.1:8080"),
        ("user-agent", "python-requests/2.32.3"),
        ("accept-encoding", "gzip, deflate"),
        ("accept", "application/json"),
        ("connection", "keep-alive"),
        ("content-type", "application/json"),
        ("content-length", "512"),
    ])
}

/// What an SFMC REST instance answers with.
fn sfmc_response() -> HeaderMap {
    headers(&[
        ("date", "Mon, 23 Nov 2026 04:00:00 GMT"),
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "1024"),
        ("connection", "keep-alive"),
        (
            "cache-control",
            "no-cache, must-revalidate, max-age=0, no-store, private",
        ),
        ("strict-transport-security", "max-age=15552000; preload"),
        ("x-content-type-options", "nosniff"),
        (
            "x-mashery-responder",
            "prod-j-worker-us-west-1b-115.mashery.com",
        ),
        ("vary", "Accept-Encoding"),
    ])
}

#[divan::bench]
fn strip_request_headers_typical(bencher: Bencher) {
    bencher
        .with_inputs(client_request)
        .bench_local_refs(strip_request_headers);
}

#[divan::bench]
fn strip_response_headers_typical(bencher: Bencher) {
    bencher
        .with_inputs(sfmc_response)
        .bench_local_refs(strip_hop_by_hop);
}

/// A `Connection` header naming an end-to-end header: the rare, slower path.
#[divan::bench]
fn strip_request_headers_connection_named(bencher: Bencher) {
    bencher
        .with_inputs(|| {
            let mut map = client_request();
            map.insert(
                "connection",
                HeaderValue::from_static("keep-alive, x-trace"),
            );
            map.insert("x-trace", HeaderValue::from_static("1"));
            map
        })
        .bench_local_refs(strip_request_headers);
}

static SETTINGS: LazyLock<Settings> = LazyLock::new(|| {
    let toml = r#"
[tenants.acme]
auth_url = "https://mc123.auth.marketingcloudapis.com/"
client_id = "id"
client_secret = "secret"
"#;
    Settings::from_toml(toml, |_| None, Path::new(".")).expect("bench config is valid")
});

fn request_parts() -> Parts {
    let mut request =
        Request::get("/data/v1/customobjectdata/key/MyDE/rowset?$page=1&$pageSize=50")
            .body(())
            .expect("bench request is valid");
    *request.headers_mut() = client_request();
    request.into_parts().0
}

#[divan::bench]
fn guard_and_route(bencher: Bencher) {
    let settings = &*SETTINGS;
    bencher
        .with_inputs(request_parts)
        .bench_local_refs(|parts| {
            guard::check(parts, &settings.server).expect("allowed");
            route::route(parts, settings, None)
                .map(|_| ())
                .expect("routed");
        });
}

/// A token source that answers at once, so the cache can be warmed without a network.
struct Fixed;

impl TokenSource for Fixed {
    fn fetch<'a>(
        &'a self,
        _key: &'a TokenKey,
    ) -> Pin<Box<dyn Future<Output = Result<FetchedToken, TokenError>> + Send + 'a>> {
        Box::pin(async {
            let allowed = [".marketingcloudapis.com".to_owned()];
            let rest = InstanceBase::parse("https://mc123.rest.marketingcloudapis.com/", &allowed)
                .map_err(|reason| TokenError::InstanceNotAllowed {
                    url: "https://mc123.rest.marketingcloudapis.com/".into(),
                    reason,
                })?;
            Ok(FetchedToken {
                access_token: "t".repeat(400),
                expires_in: Duration::from_secs(1080),
                scope: None,
                rest_instance: rest,
                soap_instance: None,
            })
        })
    }
}

/// Polls a future that must complete without waiting (a warm cache does).
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a warm token cache answers without waiting"),
    }
}

static WARM: LazyLock<(TokenCache, TokenKey)> = LazyLock::new(|| {
    let cache = TokenCache::new(Arc::new(Fixed), Duration::from_secs(120));
    let key = TokenKey {
        tenant: Arc::from("acme"),
        account_id: Some(Arc::from("12345")),
        scope: None,
    };
    ready(cache.get(&key)).expect("the fixed source always answers");
    (cache, key)
});

/// `TokenCache::get` on a cached token, from 1, 2 and 4 threads at once: the
/// hit path takes only read locks, so it should not slow down under contention.
#[divan::bench(threads = [1, 2, 4])]
fn token_get_warm(bencher: Bencher) {
    let (cache, key) = &*WARM;
    bencher.bench(|| black_box(ready(cache.get(key)).is_ok()));
}
