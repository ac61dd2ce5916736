//! The fake's REST instance: SFMC's 401, the echo, and the `/fake/*` helpers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::channel::Channel;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::auth::Issued;
use crate::transport::{ConnectionId, HangUp, stamp};
use crate::{
    NOT_AUTHORIZED, Reply, State, THROTTLED, hex, json_response, lock, lossy, query_pairs,
    text_response,
};

/// The size of the chunks `/fake/download` sends.
const CHUNK: u64 = 64 * 1024;
/// The period of its byte pattern (`i % 251`).
const PERIOD: u64 = 251;

/// The REST instance: SFMC's 401 without a valid token, else a fake path or
/// the echo. Every answer names its connection (`x-fake-connection`).
pub(super) async fn instance(req: Request<Incoming>, state: &Arc<State>) -> Reply {
    let connection = req.extensions().get::<ConnectionId>().copied();
    let mut reply = route(req, state).await;
    stamp(&mut reply, connection);
    reply
}

async fn route(req: Request<Incoming>, state: &Arc<State>) -> Reply {
    state.rest_requests.fetch_add(1, Ordering::SeqCst);
    let Some(grant) = state.authorize(req.headers()) else {
        return text_response(StatusCode::UNAUTHORIZED, "application/json", NOT_AUTHORIZED);
    };
    if State::refuse_one(&state.rest_throttled) {
        return throttled(state);
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/fake/download") => download(req.uri().query(), state),
        (&Method::GET, "/fake/gated") => gated(state),
        // Any method, and the request body is never read: an upload answered
        // early, as SFMC does when it refuses one. With `drain`, answered
        // early and then read to its end (the connection kept).
        (_, "/fake/respond") => {
            let reply = respond(req.uri().query());
            let pairs = query_pairs(req.uri().query());
            if pairs.iter().any(|(name, _)| name == "drain") {
                tokio::spawn(drain(req.into_body()));
            }
            reply
        }
        (&Method::POST, "/fake/upload-gated") => echo(req, &grant, Some(&state.upload)).await,
        // What a keep-alive connection closing at that very moment looks like
        // to the proxy: the request was read, no answer ever comes.
        (_, "/fake/hangup-once") if state.transport.hang_up_once() => {
            let mut reply = text_response(StatusCode::OK, "text/plain", "");
            reply.extensions_mut().insert(HangUp);
            reply
        }
        _ => echo(req, &grant, None).await,
    }
}

/// Reads a request body to its end, for nothing.
async fn drain(mut body: Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}

/// SFMC's 429 (the request body is never read, as SFMC does not).
fn throttled(state: &State) -> Reply {
    let mut reply = text_response(StatusCode::TOO_MANY_REQUESTS, "application/json", THROTTLED);
    let retry_after = lock(&state.rest_retry_after).clone();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        reply.headers_mut().insert(header::RETRY_AFTER, value);
    }
    reply
}

/// Hashes the body as it streams (never buffered), then describes the request.
async fn echo(req: Request<Incoming>, grant: &Issued, started: Option<&Notify>) -> Reply {
    let connection = req.extensions().get::<ConnectionId>().map(|id| id.0);
    let (parts, mut body) = req.into_parts();
    let (mut hasher, mut len, mut started) = (Sha256::new(), 0u64, started);
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return text_response(StatusCode::BAD_REQUEST, "text/plain", "unreadable body");
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !data.is_empty()
            && let Some(notify) = started.take()
        {
            notify.notify_one();
        }
        len += data.len() as u64;
        hasher.update(&data);
    }
    let headers = parts.headers.keys().map(|name| {
        let values: Vec<String> = parts.headers.get_all(name).iter().map(lossy).collect();
        // The token it checked is named, not shown: the demo's echo goes to a
        // client, and a token never should.
        let value = if name == header::AUTHORIZATION {
            format!("Bearer <fake token #{}>", grant.number)
        } else {
            values.join(", ")
        };
        (name.as_str().to_owned(), Value::String(value))
    });
    json_response(
        StatusCode::OK,
        &json!({
            "method": parts.method.as_str(), "path": parts.uri.path(), "query": parts.uri.query(),
            "account_id": grant.account_id, "scope": grant.scope, "token_number": grant.number,
            "body_len": len, "body_sha256": hex(&hasher.finalize()),
            "version": format!("{:?}", parts.version), "connection": connection,
            "headers": headers.collect::<Map<_, _>>(),
        }),
    )
}

/// `?bytes=N`: N bytes of the pattern `i % 251`, sliced from one small buffer in
/// 64 KiB chunks through a bounded channel; with `&chunked`, no `Content-Length`
/// (HTTP/1.1 then sends it chunked). Each stream's end, full or cut off, is
/// counted for `FakeTenant::downloads_ended`.
fn download(query: Option<&str>, state: &Arc<State>) -> Reply {
    let pairs = query_pairs(query);
    let size = pairs.iter().find(|(name, _)| name == "bytes");
    let Some(len) = size.and_then(|(_, value)| value.parse::<u64>().ok()) else {
        return text_response(StatusCode::BAD_REQUEST, "text/plain", "use ?bytes=N");
    };
    let chunked = pairs.iter().any(|(name, _)| name == "chunked");
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(2);
    let state = state.clone();
    tokio::spawn(async move {
        let pattern: Bytes = (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect();
        let mut sent = 0;
        while sent < len {
            let (start, size) = (sent % PERIOD, (len - sent).min(CHUNK));
            let chunk = pattern.slice(start as usize..(start + size) as usize);
            if tx.send_data(chunk).await.is_err() {
                break;
            }
            sent += size;
        }
        // Counted when the producer stops, done or refused (its reader gone):
        // the last chunks may still be on their way.
        state.transport.download_ended();
    });
    let mut reply = Response::new(body.boxed());
    if !chunked {
        let length = HeaderValue::from(len);
        reply.headers_mut().insert(header::CONTENT_LENGTH, length);
    }
    reply
}

/// `first\n` at once, `second\n` after `release_gate()`.
fn gated(state: &Arc<State>) -> Reply {
    let (mut tx, body) = Channel::<Bytes, Infallible>::new(2);
    let state = state.clone();
    tokio::spawn(async move {
        if tx.send_data(Bytes::from_static(b"first\n")).await.is_ok() {
            tokio::select! {
                () = state.gate.notified() => {
                    let _ = tx.send_data(Bytes::from_static(b"second\n")).await;
                }
                () = state.stopped() => {}
            }
        }
    });
    Response::new(body.boxed())
}

/// `?status=S&header=Name:Value&…`: that status and those headers, verbatim.
fn respond(query: Option<&str>) -> Reply {
    let (mut status, mut headers) = (Some(StatusCode::OK), Vec::new());
    for (name, value) in query_pairs(query) {
        if name == "status" {
            let code = value.parse::<u16>().ok().filter(|s| (200..600).contains(s));
            status = code.and_then(|code| StatusCode::from_u16(code).ok());
        } else if name == "header" {
            headers.push(value.split_once(':').and_then(|(name, value)| {
                let name = HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
                Some((name, HeaderValue::from_str(value.trim()).ok()?))
            }));
        }
    }
    let headers: Option<Vec<_>> = headers.into_iter().collect();
    let (Some(status), Some(headers)) = (status, headers) else {
        let text = "use ?status=200..599&header=Name:Value";
        return text_response(StatusCode::BAD_REQUEST, "text/plain", text);
    };
    let mut reply = json_response(status, &json!({ "status": status.as_u16() }));
    if headers.iter().any(|(name, _)| name == header::CONTENT_TYPE) {
        reply.headers_mut().remove(header::CONTENT_TYPE);
    }
    for (name, value) in headers {
        reply.headers_mut().append(name, value);
    }
    reply
}
