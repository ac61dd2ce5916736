//! SOAP through the proxy. SOAP carries the token inside the envelope
//! (`<fueloauth xmlns="http://exacttarget.com">`), so the proxy reads just
//! enough of a request body to put it there (`inject` decides where), streams
//! the rest, recognises SFMC's token faults on the way back, and answers its own
//! errors as SOAP 1.1 faults rather than JSON.

mod fault;
mod inject;
mod operation;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::{ClientBody, ProxyBody, SfmcBody};
use crate::error::{ProxyError, Side};
pub use fault::Fault;
use inject::encoding::Charset;
#[doc(hidden)]
pub use inject::verify::checked_apply;
pub use inject::{Plan, Scan, scan};
pub use operation::{Operation, PARTNER_API_NS, operation_of};

/// Held bytes may grow by this much before the envelope is scanned again.
const RESCAN_STEP: usize = 64 * 1024;

/// SFMC's token faults are small; a 500 larger than this is passed on unread.
const FAULT_PEEK_LIMIT: usize = 64 * 1024;

/// A request envelope: the bytes read so far, where the token goes in them,
/// and the part of the body not read yet.
pub struct Envelope {
    held: Bytes,
    plan: Plan,
    rest: Option<ClientBody>,
    /// The body was longer than what is held (it streams after `held`).
    streams: bool,
    declared_length: Option<u64>,
}

/// The start of an envelope, read until the token's place is known: enough
/// to see who is calling (a local token in `fueloauth`) before reading more.
pub struct EnvelopeStart {
    buf: BytesMut,
    plan: Plan,
    body: ClientBody,
    ended: bool,
    declared_length: Option<u64>,
    /// The body's whole size, as announced before any of it was read.
    announced: Option<u64>,
    /// The Content-Type's charset, if it names one.
    charset: Option<Charset>,
}

impl Envelope {
    /// Reads until the token's place is known: the end of the Header when it
    /// comes first, else the whole envelope; that region may be at most `limit`
    /// bytes (`soap.header_limit`, or `soap.preauth_limit` for a caller not
    /// yet known), and nothing past it is read here.
    pub async fn start(
        mut body: ClientBody,
        headers: &HeaderMap,
        limit: usize,
    ) -> Result<EnvelopeStart, ProxyError> {
        check_encoding(headers)?;
        let charset = content_charset(headers)?;
        let declared_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let announced = body.size_hint().upper();
        let mut buf = BytesMut::new();
        let mut ended = body.is_end_stream();
        // Bytes held at the last scan (see `worth_scanning`).
        let mut scanned = 0;
        let plan = loop {
            if !worth_scanning(buf.len(), scanned, limit, ended) {
                ended = read_frame(&mut body, &mut buf).await?;
                continue;
            }
            scanned = buf.len();
            match inject::scan_as(&buf, ended, charset) {
                // Checked on the plan, not on what was read: a frame may bring
                // more than the region, and the answer must not depend on framing.
                Ok(Scan::Ready(plan)) if plan.upto > limit => return Err(too_large(limit)),
                Ok(Scan::Ready(plan)) => break plan,
                Ok(Scan::NeedMore) if buf.len() > limit => return Err(too_large(limit)),
                Ok(Scan::NeedMore) => ended = read_frame(&mut body, &mut buf).await?,
                Err(error) => return Err(ProxyError::BadRequest(error.to_string())),
            }
        };
        Ok(EnvelopeStart {
            buf,
            plan,
            body,
            ended,
            declared_length,
            announced,
            charset,
        })
    }

    /// Whether the request can be sent again after a token fault.
    pub fn replayable(&self, limit: usize) -> bool {
        !self.streams && self.held.len() <= limit
    }

    /// The request body with `token` in place, and its length when known.
    /// A streamed envelope can be taken once; a held one any number of times.
    pub fn request_body(&mut self, token: &str) -> (ProxyBody, Option<u64>) {
        let head = self.held.get(..self.plan.upto).unwrap_or(&self.held);
        let mut rewritten = self.plan.apply(head, token);
        rewritten.extend_from_slice(self.held.get(self.plan.upto..).unwrap_or_default());
        let rewritten_len = rewritten.len() as u64;
        match self.rest.take() {
            Some(rest) => {
                // The client's length minus what was held plus its rewrite; an
                // announced length shorter than what came is sent chunked instead.
                let length = self
                    .declared_length
                    .and_then(|declared| declared.checked_sub(self.held.len() as u64))
                    .map(|unread| unread + rewritten_len);
                (
                    ProxyBody::Prefixed(Some(Bytes::from(rewritten)), Box::new(rest.into())),
                    length,
                )
            }
            None => (ProxyBody::full(rewritten), Some(rewritten_len)),
        }
    }
}

impl EnvelopeStart {
    /// The token the client put in its `fueloauth`, if any (never forwarded).
    pub fn client_token(&self) -> Option<&str> {
        self.plan
            .client_token(&self.buf)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    /// The operation the envelope asks for (the Body's one element): the
    /// envelope is read whole to tell, at most `limit` bytes
    /// (`soap.header_limit`). What is read stays held and is forwarded as
    /// it came.
    pub async fn operation(&mut self, limit: usize) -> Result<Operation, ProxyError> {
        while !self.ended && self.buf.len() <= limit {
            self.ended = read_frame(&mut self.body, &mut self.buf).await?;
        }
        if self.buf.len() > limit {
            return Err(ProxyError::BadRequest(format!(
                "a SOAP call to a read_only tenant is read whole to tell its operation, and this one is larger than soap.header_limit ({limit} bytes); raise it if such envelopes are expected"
            )));
        }
        match operation::operation_of(&self.buf, true, self.charset) {
            Ok(Some(found)) => Ok(found),
            // Not reached (a whole envelope decides), but never pass on it.
            Ok(None) => Err(ProxyError::BadRequest(
                "the SOAP envelope's operation cannot be read".into(),
            )),
            Err(error) => Err(ProxyError::BadRequest(error.to_string())),
        }
    }

    /// Once the caller may be served: a body announced (`Content-Length`) at
    /// most `replay_limit` bytes is read whole, as for REST, so that it can be
    /// replayed after a token fault however it was split in transit; a larger
    /// one streams after what is held.
    pub async fn finish(self, replay_limit: usize) -> Result<Envelope, ProxyError> {
        let Self {
            mut buf,
            plan,
            mut body,
            mut ended,
            declared_length,
            announced,
            charset: _,
        } = self;
        let hold_whole = announced.is_some_and(|upper| upper <= replay_limit as u64);
        while hold_whole && !ended {
            ended = read_frame(&mut body, &mut buf).await?;
        }
        Ok(Envelope {
            held: buf.freeze(),
            plan,
            rest: (!ended).then_some(body),
            streams: !ended,
            declared_length,
        })
    }
}

/// Each scan parses everything held; rescanning on every frame would cost
/// the square of the size (a slow sender in tiny frames). Rescan when the
/// held bytes doubled, grew by RESCAN_STEP, or the body ended; past the
/// limit, one more scan decides: the region fits or not.
fn worth_scanning(held: usize, scanned: usize, limit: usize, ended: bool) -> bool {
    ended
        || held >= 2 * scanned
        || held >= scanned + RESCAN_STEP
        || (held > limit && scanned <= limit)
}

fn too_large(limit: usize) -> ProxyError {
    ProxyError::BadRequest(format!(
        "the SOAP Header (or, when it follows the Body, the whole envelope) must come within the first {limit} bytes; raise soap.header_limit if such envelopes are expected"
    ))
}

/// Appends the next data frame of `body` to `buf`; returns whether the body ended.
async fn read_frame(body: &mut ClientBody, buf: &mut BytesMut) -> Result<bool, ProxyError> {
    match body.frame().await {
        None => Ok(true),
        Some(Ok(frame)) => {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
            }
            Ok(body.is_end_stream())
        }
        Some(Err(error)) => Err(ProxyError::BadRequest(format!(
            "could not read the SOAP request body: {error}"
        ))),
    }
}

/// Compressed envelopes cannot be rewritten without decompressing them.
fn check_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    match headers.get(header::CONTENT_ENCODING) {
        None => Ok(()),
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"identity") => Ok(()),
        Some(value) => Err(ProxyError::BadRequest(format!(
            "a SOAP request with Content-Encoding `{}` cannot carry the token; send the envelope uncompressed",
            String::from_utf8_lossy(value.as_bytes())
        ))),
    }
}

/// The charset the Content-Type names (`text/xml; charset=…`), when the
/// envelope can be edited byte for byte in it; refused (saying why) when not.
fn content_charset(headers: &HeaderMap) -> Result<Option<Charset>, ProxyError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let named = text.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_owned())
    });
    match named {
        None => Ok(None),
        Some(name) => match inject::encoding::charset(&name) {
            Some(charset) => Ok(Some(charset)),
            None => Err(ProxyError::BadRequest(
                inject::encoding::unsupported("the Content-Type", &name).to_string(),
            )),
        },
    }
}

/// Passes SFMC's answer on, first reading a small HTTP 500 to see whether it is
/// a fault the proxy acts on: a refused token (`Token Expired`, `Login
/// failed`) or throttling (`Rate Limited`). Returns the response to send and
/// that fault.
pub async fn inspect_response(
    response: Response<SfmcBody>,
) -> (Response<ProxyBody>, Option<Fault>) {
    let (parts, mut body) = response.into_parts();
    if parts.status != StatusCode::INTERNAL_SERVER_ERROR {
        return (Response::from_parts(parts, body.into()), None);
    }
    let mut held = BytesMut::new();
    while held.len() <= FAULT_PEEK_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    held.extend_from_slice(&data);
                }
            }
            // The body ended (or broke, which the client would see anyway).
            Some(Err(_)) | None => {
                let fault = Fault::of(&held);
                return (
                    Response::from_parts(parts, ProxyBody::full(held.freeze())),
                    fault,
                );
            }
        }
    }
    (
        Response::from_parts(
            parts,
            ProxyBody::Prefixed(Some(held.freeze()), Box::new(body.into())),
        ),
        None,
    )
}

/// The proxy's own error as a SOAP 1.1 Fault, with the same status, code,
/// message and context as the JSON form (`x-sfmc-proxy-error` included).
pub fn fault_response(error: ProxyError) -> Response<ProxyBody> {
    // A stale local token gets SFMC's own `Token Expired` Security fault (HTTP
    // 500): the fault SOAP tools (fuel-soap, sfmc-sdk) re-authenticate on;
    // they give up on `Login failed`.
    let local_token_invalid = matches!(error, ProxyError::LocalTokenInvalid);
    let (faultcode, faultstring) = match error.side() {
        _ if local_token_invalid => ("soap:Security", "Token Expired".to_owned()),
        Side::Downstream => ("soap:Client", error.to_string()),
        Side::Upstream | Side::Internal => ("soap:Server", error.to_string()),
    };
    let json = error.json_body();
    let mut detail = String::new();
    if let Some(fields) = json.as_object() {
        for (name, value) in fields.iter().filter(|(name, _)| name.as_str() != "message") {
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            detail.push_str(&format!(
                "<{name}>{}</{name}>",
                quick_xml::escape::escape(&text)
            ));
        }
    }
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body><soap:Fault><faultcode>{faultcode}</faultcode><faultstring>{}</faultstring><detail><sfmcProxyError xmlns=\"urn:sfmc-proxy\">{detail}</sfmcProxyError></detail></soap:Fault></soap:Body></soap:Envelope>",
        quick_xml::escape::escape(&faultstring)
    );
    let mut response: Response<ProxyBody> = error.into_response();
    *response.body_mut() = ProxyBody::full(xml);
    if local_token_invalid {
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TokenRejection;

    #[test]
    fn proxy_errors_become_soap_faults_with_the_same_information() {
        let error = ProxyError::TokenRejected(Box::new(TokenRejection {
            tenant: "acme".into(),
            status: 401,
            sfmc_error: "invalid_client".into(),
            sfmc_error_description: Some("Invalid <client> ID".into()),
            url: "https://mc1.auth.marketingcloudapis.com/v2/token".into(),
            hint: "check client_id and client_secret".into(),
            retry_after_secs: 5,
        }));
        let response = fault_response(error);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(response.headers()["x-sfmc-proxy-error"], "token_rejected");
        assert_eq!(
            response.headers()["content-type"],
            "text/xml; charset=utf-8"
        );
        let ProxyBody::Full(Some(body)) = response.into_body() else {
            panic!("a full body");
        };
        let xml = String::from_utf8_lossy(&body);
        assert!(xml.contains("<faultcode>soap:Server</faultcode>"), "{xml}");
        assert!(
            xml.contains("<sfmc_error>invalid_client</sfmc_error>"),
            "{xml}"
        );
        assert!(xml.contains("Invalid &lt;client&gt; ID"), "{xml}");
        assert!(
            matches!(scan(&body, true), Ok(Scan::Ready(_))),
            "the fault is a well-formed envelope"
        );
    }

    #[test]
    fn client_errors_are_client_faults() {
        let response = fault_response(ProxyError::BadRequest("not XML".into()));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let ProxyBody::Full(Some(body)) = response.into_body() else {
            panic!("a full body");
        };
        assert!(String::from_utf8_lossy(&body).contains("<faultcode>soap:Client</faultcode>"));
    }
}
