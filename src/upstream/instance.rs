//! Instance URLs from SFMC's token response, normalised and checked.
//!
//! SFMC returns `rest_instance_url`/`soap_instance_url` as a bare host (as in its
//! docs), `https://host` or `https://host/` (real responses). All three become
//! one [`InstanceBase`]. Because a token is about to be sent there, a host that
//! is not loopback must use https and match `allowed_instance_hosts`.

use std::fmt;

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

use crate::config::is_loopback_host;

/// Why an instance URL is not one the proxy sends a token to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceRefused {
    #[error("not a valid URL")]
    NotAUrl,
    #[error("not an absolute URL")]
    NotAbsolute,
    #[error("URL carries credentials or a query")]
    CredentialsOrQuery,
    #[error("instance URL is not https")]
    NotHttps,
    #[error("host `{host}` does not end with any of upstream.allowed_instance_hosts ({allowed})")]
    HostNotAllowed { host: String, allowed: String },
    #[error("instance URL is neither http nor https")]
    NotHttp,
    #[error("not a valid host")]
    BadHost,
}

/// Where requests for one token go: scheme, authority and an optional base path
/// (without trailing slash; empty for every real SFMC instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceBase {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    /// The `Host` header for HTTP/1.1, built once per token rather than
    /// formatted per request.
    host_header: HeaderValue,
}

impl InstanceBase {
    /// Normalises `raw` and checks it against the allowed host suffixes.
    pub fn parse(raw: &str, allowed_suffixes: &[String]) -> Result<Self, InstanceRefused> {
        let trimmed = raw.trim();
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("https://{trimmed}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| InstanceRefused::NotAUrl)?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(InstanceRefused::NotAbsolute);
        };
        if authority.as_str().contains('@') || uri.query().is_some() {
            return Err(InstanceRefused::CredentialsOrQuery);
        }
        let host = authority.host().to_ascii_lowercase();
        let loopback = is_loopback_host(&host);
        if !loopback {
            if scheme != &Scheme::HTTPS {
                return Err(InstanceRefused::NotHttps);
            }
            if !allowed_suffixes
                .iter()
                .any(|suffix| host_matches(&host, suffix))
            {
                return Err(InstanceRefused::HostNotAllowed {
                    host,
                    allowed: allowed_suffixes.join(", "),
                });
            }
        } else if scheme != &Scheme::HTTPS && scheme != &Scheme::HTTP {
            return Err(InstanceRefused::NotHttp);
        }
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|_| InstanceRefused::BadHost)?;
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            host_header,
        })
    }

    /// The upstream request target (origin form): the instance's base path
    /// plus the client's path and query exactly as received (nothing decoded,
    /// re-encoded or normalised). The upstream client adds scheme and
    /// authority where the protocol wants them.
    pub fn origin_form(&self, path_and_query: &PathAndQuery) -> Result<Uri, http::Error> {
        if self.base_path.is_empty() {
            Ok(Uri::from(path_and_query.clone()))
        } else {
            let joined = format!("{}{}", self.base_path, path_and_query.as_str());
            Uri::builder().path_and_query(joined).build()
        }
    }

    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The `Host` header for HTTP/1.1 requests to this instance.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    pub fn host(&self) -> &str {
        self.authority.host()
    }

    /// The port, explicit or the scheme's default.
    pub fn port(&self) -> u16 {
        self.authority
            .port_u16()
            .unwrap_or(if self.scheme == Scheme::HTTPS {
                443
            } else {
                80
            })
    }
}

impl fmt::Display for InstanceBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}/", self.scheme, self.authority, self.base_path)
    }
}

/// `.example.com` matches subdomains only; `example.com` matches itself and
/// its subdomains.
fn host_matches(host: &str, suffix: &str) -> bool {
    if suffix.starts_with('.') {
        host.ends_with(suffix)
    } else {
        host == suffix
            || (host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec![".marketingcloudapis.com".to_owned()]
    }

    #[test]
    fn the_three_forms_sfmc_uses_normalise_to_one() {
        let forms = [
            "mc563885gzs27c5t9-63k636ttgm.rest.marketingcloudapis.com",
            "https://mc563885gzs27c5t9-63k636ttgm.rest.marketingcloudapis.com",
            "https://mc563885gzs27c5t9-63k636ttgm.rest.marketingcloudapis.com/",
        ];
        let parsed: Vec<InstanceBase> = forms
            .iter()
            .map(|f| InstanceBase::parse(f, &allowed()).expect(f))
            .collect();
        assert!(parsed.windows(2).all(|w| w[0] == w[1]));
        let pq =
            PathAndQuery::from_static("//hub/v1/dataevents/key:MyDE/rowset?$filter=a%20eq%20'b'");
        assert_eq!(
            parsed[0].origin_form(&pq).expect("uri").to_string(),
            "//hub/v1/dataevents/key:MyDE/rowset?$filter=a%20eq%20'b'"
        );
        assert_eq!(
            parsed[0].host_header(),
            "mc563885gzs27c5t9-63k636ttgm.rest.marketingcloudapis.com"
        );
        assert_eq!(parsed[0].port(), 443);
    }

    #[test]
    fn foreign_or_plain_http_hosts_are_refused() {
        let foreign = |host: &str| InstanceRefused::HostNotAllowed {
            host: host.into(),
            allowed: ".marketingcloudapis.com".into(),
        };
        for (bad, why) in [
            ("https://evil.example.com/", foreign("evil.example.com")),
            (
                "https://marketingcloudapis.com.evil.com/",
                foreign("marketingcloudapis.com.evil.com"),
            ),
            (
                "http://mc1.rest.marketingcloudapis.com/",
                InstanceRefused::NotHttps,
            ),
            (
                "https://user@mc1.rest.marketingcloudapis.com/",
                InstanceRefused::CredentialsOrQuery,
            ),
            (
                "https://mc1.rest.marketingcloudapis.com/?x=1",
                InstanceRefused::CredentialsOrQuery,
            ),
            ("", InstanceRefused::NotAUrl),
            ("ftp://127.0.0.1/", InstanceRefused::NotHttp),
        ] {
            assert_eq!(InstanceBase::parse(bad, &allowed()), Err(why), "{bad}");
        }
    }

    #[test]
    fn loopback_is_always_allowed_with_http_or_https() {
        for ok in [
            "http://127.0.0.1:9000/",
            "https://localhost:9000",
            "127.0.0.1:9000",
            "http://[::1]:80/",
        ] {
            assert!(InstanceBase::parse(ok, &allowed()).is_ok(), "{ok}");
        }
        let plain = InstanceBase::parse("http://127.0.0.1:9000/", &allowed()).expect("valid");
        assert_eq!(
            (plain.host_header().as_bytes(), plain.port()),
            (&b"127.0.0.1:9000"[..], 9000)
        );
    }

    #[test]
    fn suffix_without_dot_matches_host_and_subdomains_only() {
        let list = ["example.com".to_owned()];
        assert!(host_matches("example.com", &list[0]));
        assert!(host_matches("a.example.com", &list[0]));
        assert!(!host_matches("badexample.com", &list[0]));
    }

    #[test]
    fn base_path_is_kept_before_the_client_path() {
        let base = InstanceBase::parse("https://x.marketingcloudapis.com/base/", &allowed())
            .expect("valid");
        let pq = PathAndQuery::from_static("/Service.asmx");
        assert_eq!(
            base.origin_form(&pq).expect("uri").to_string(),
            "/base/Service.asmx"
        );
    }
}
