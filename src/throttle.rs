//! SFMC's throttling as the forwarding meets it: which answers say SFMC is
//! throttling (REST `429` or `503`; SOAP's `Rate Limited` fault, told by
//! `soap::fault`), how long SFMC asked to wait (`Retry-After`), and the rule
//! for sending a throttled request again under `retry_throttled`.
//!
//! The rule: only a request whose body is held (the very same bytes go
//! again; a bodiless `GET` counts), at most [`MAX_RETRIES`] times per
//! request, and only when SFMC said how long to wait and that is no longer
//! than `upstream.max_retry_wait` — a longer wait, or none said, is the
//! client's to decide, so SFMC's answer reaches it untouched. A `429` (and
//! SOAP's `Rate Limited`) says SFMC did not act on the request, so any held
//! request may go again; a `503` may come after SFMC (or a proxy before it)
//! acted, so only an idempotent one does. SOAP's fault says no time;
//! [`SOAP_RATE_LIMITED_WAIT`] stands for one. The wait is stretched by a
//! little jitter ([`jittered`]) so that requests throttled together do not
//! come back together. Pure but for that jitter: the clock is passed in,
//! and the wait itself is the caller's.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

/// Retries of one request after throttling, at most (a third `429` in a
/// row is SFMC saying it means it).
pub const MAX_RETRIES: u32 = 2;

/// The wait before a SOAP call is sent again after a `Rate Limited` fault,
/// which carries no `Retry-After`.
pub const SOAP_RATE_LIMITED_WAIT: Duration = Duration::from_secs(1);

/// Whether a REST status says SFMC is throttling (`429`, or `503`, which
/// SFMC sends with `Retry-After` when overloaded).
pub fn is_throttling(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
}

/// SFMC's throttling as one answer says it: the wait it asked for, if any,
/// and whether the request may go again whatever its method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttling {
    pub asked: Option<Duration>,
    /// `429` or `Rate Limited`: SFMC did not act on it. A `503`: only if the
    /// method is idempotent.
    pub repeatable: bool,
}

impl Throttling {
    /// A REST answer with throttling `status` and `headers`, to `method`.
    pub fn rest(status: StatusCode, headers: &HeaderMap, method: &http::Method) -> Self {
        Self {
            asked: retry_after(headers, SystemTime::now()),
            repeatable: status == StatusCode::TOO_MANY_REQUESTS || method.is_idempotent(),
        }
    }

    /// SOAP's `Rate Limited` fault: no time said, nothing done.
    pub fn soap_rate_limited() -> Self {
        Self {
            asked: Some(SOAP_RATE_LIMITED_WAIT),
            repeatable: true,
        }
    }
}

/// `wait` stretched by up to a quarter (at least up to 100 ms), drawn at
/// random: Retry-After is a lower bound, and requests throttled in the same
/// moment should not all come back in the same moment.
pub fn jittered(wait: Duration) -> Duration {
    let spread = (wait / 4).max(Duration::from_millis(100));
    let extra = fastrand::u64(..=u64::try_from(spread.as_millis()).unwrap_or(u64::MAX));
    wait + Duration::from_millis(extra)
}

/// The wait `Retry-After` asks for: delay-seconds, or an HTTP date (a date
/// already past is no wait). `None` when absent, repeated or unreadable.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let mut values = headers.get_all(header::RETRY_AFTER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are a wait no rule would take.
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A tenant's retry rule: `retry_throttled` and `upstream.max_retry_wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryRule {
    pub enabled: bool,
    pub max_wait: Duration,
}

/// Why a throttled answer is passed on rather than waited out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOn {
    /// `retry_throttled` is off for the tenant.
    Off,
    /// The body streamed to SFMC and is gone.
    BodyNotHeld,
    /// SFMC said no `Retry-After` (or one that cannot be read).
    NoWaitSaid,
    /// A `503` to a method that is not idempotent: SFMC may have acted.
    MayHaveActed,
    /// SFMC asked for longer than `upstream.max_retry_wait`.
    WaitTooLong { asked: Duration, max: Duration },
    /// [`MAX_RETRIES`] already spent on this request.
    RetriesSpent,
}

impl fmt::Display for PassOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = humantime::format_duration;
        match self {
            Self::Off => f.write_str("retry_throttled is off"),
            Self::BodyNotHeld => f.write_str(
                "the request body was streamed, not held (it is larger than token.replay_body_limit or its length was not announced)",
            ),
            Self::NoWaitSaid => f.write_str("SFMC sent no usable Retry-After"),
            Self::MayHaveActed => f.write_str(
                "a 503 may come after the request was acted on, and this method is not idempotent",
            ),
            Self::WaitTooLong { asked, max } => write!(
                f,
                "SFMC asked to wait {}, longer than upstream.max_retry_wait ({})",
                show(*asked),
                show(*max)
            ),
            Self::RetriesSpent => write!(f, "{MAX_RETRIES} retries already sent"),
        }
    }
}

impl RetryRule {
    /// After SFMC throttled a request (as `throttling` says),
    /// the wait before sending it again, or why its answer is passed on.
    /// `retries` is how many times this request was already sent again;
    /// `held`, whether its body can be sent again.
    pub fn decide(
        &self,
        throttling: Throttling,
        retries: u32,
        held: bool,
    ) -> Result<Duration, PassOn> {
        if !self.enabled {
            return Err(PassOn::Off);
        }
        if !held {
            return Err(PassOn::BodyNotHeld);
        }
        if !throttling.repeatable {
            return Err(PassOn::MayHaveActed);
        }
        if retries >= MAX_RETRIES {
            return Err(PassOn::RetriesSpent);
        }
        match throttling.asked {
            None => Err(PassOn::NoWaitSaid),
            Some(asked) if asked > self.max_wait => Err(PassOn::WaitTooLong {
                asked,
                max: self.max_wait,
            }),
            Some(asked) => Ok(asked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ON: RetryRule = RetryRule {
        enabled: true,
        max_wait: Duration::from_secs(10),
    };

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::RETRY_AFTER, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 12:00:00 GMT").unwrap();
        let read = |values: &[&'static str]| retry_after(&headers(values), now);
        assert_eq!(read(&["7"]), Some(Duration::from_secs(7)));
        assert_eq!(read(&[" 0 "]), Some(Duration::ZERO));
        assert_eq!(
            read(&["Wed, 02 Dec 2026 12:00:30 GMT"]),
            Some(Duration::from_secs(30))
        );
        // A date already past: no wait.
        assert_eq!(
            read(&["Wed, 02 Dec 2026 11:59:00 GMT"]),
            Some(Duration::ZERO)
        );
        assert_eq!(
            read(&["99999999999999999999999"]),
            Some(Duration::from_secs(u64::MAX))
        );
        for unreadable in [
            &[][..],
            &["-1"],
            &["1.5"],
            &["soon"],
            &["", ""],
            &["1", "2"],
        ] {
            assert_eq!(read(unreadable), None, "{unreadable:?}");
        }
    }

    #[test]
    fn only_429_and_503_say_throttling() {
        assert!(is_throttling(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_throttling(StatusCode::SERVICE_UNAVAILABLE));
        for other in [200, 401, 500, 502, 504] {
            assert!(!is_throttling(StatusCode::from_u16(other).unwrap()));
        }
    }

    /// A 429 asking for `asked`.
    fn asked(asked: Option<Duration>) -> Throttling {
        Throttling {
            asked,
            repeatable: true,
        }
    }

    #[test]
    fn a_held_request_waits_what_sfmc_asked_up_to_the_maximum_twice() {
        let secs = Duration::from_secs;
        assert_eq!(ON.decide(asked(Some(secs(3))), 0, true), Ok(secs(3)));
        assert_eq!(ON.decide(asked(Some(secs(10))), 1, true), Ok(secs(10)));
        assert_eq!(
            ON.decide(asked(Some(Duration::ZERO)), 0, true),
            Ok(Duration::ZERO)
        );
        assert_eq!(
            ON.decide(asked(Some(secs(3))), 2, true),
            Err(PassOn::RetriesSpent)
        );
        assert_eq!(
            ON.decide(asked(Some(secs(11))), 0, true),
            Err(PassOn::WaitTooLong {
                asked: secs(11),
                max: secs(10)
            })
        );
        assert_eq!(ON.decide(asked(None), 0, true), Err(PassOn::NoWaitSaid));
        assert_eq!(
            ON.decide(asked(Some(secs(1))), 0, false),
            Err(PassOn::BodyNotHeld)
        );
        let off = RetryRule {
            enabled: false,
            ..ON
        };
        assert_eq!(off.decide(asked(Some(secs(1))), 0, true), Err(PassOn::Off));
    }

    #[test]
    fn a_503_goes_again_only_for_an_idempotent_method() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, http::HeaderValue::from_static("2"));
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        let get = Throttling::rest(unavailable, &headers, &http::Method::GET);
        let post = Throttling::rest(unavailable, &headers, &http::Method::POST);
        let too_many =
            Throttling::rest(StatusCode::TOO_MANY_REQUESTS, &headers, &http::Method::POST);
        assert_eq!(ON.decide(get, 0, true), Ok(Duration::from_secs(2)));
        assert_eq!(ON.decide(post, 0, true), Err(PassOn::MayHaveActed));
        assert_eq!(ON.decide(too_many, 0, true), Ok(Duration::from_secs(2)));
        assert_eq!(
            ON.decide(Throttling::soap_rate_limited(), 0, true),
            Ok(SOAP_RATE_LIMITED_WAIT)
        );
    }

    #[test]
    fn the_jitter_only_ever_adds_a_little() {
        for wait in [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(8),
        ] {
            for _ in 0..100 {
                let jittered = jittered(wait);
                let spread = (wait / 4).max(Duration::from_millis(100));
                assert!(
                    jittered >= wait && jittered <= wait + spread,
                    "{wait:?} -> {jittered:?}"
                );
            }
        }
    }

    #[test]
    fn reasons_name_the_key_to_change() {
        let too_long = PassOn::WaitTooLong {
            asked: Duration::from_secs(60),
            max: Duration::from_secs(10),
        };
        assert_eq!(
            too_long.to_string(),
            "SFMC asked to wait 1m, longer than upstream.max_retry_wait (10s)"
        );
        assert!(
            PassOn::BodyNotHeld
                .to_string()
                .contains("token.replay_body_limit")
        );
        assert_eq!(PassOn::RetriesSpent.to_string(), "2 retries already sent");
    }
}
