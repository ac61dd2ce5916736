//! hyper's service for one connection: each request is handled on the
//! generation current when it began, and the connection counts as busy from
//! the moment hyper has the head until the response head is ready (the body
//! then streams under the idle deadline). On HTTP/1 the connection also
//! learns when the request body has been read: until then it is not at a
//! message boundary. (A request without keep-alive needs nothing more:
//! hyper ends such a connection in the same poll that reaches the boundary.)

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::Service;

use super::activity::{Activity, Busy, Streaming};
use crate::body::Inbound;
use crate::proxy::Entry;
use crate::reload::Live;
use crate::telemetry::Logged;

#[derive(Clone)]
pub struct ConnectionService {
    live: Arc<Live>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    entry: Entry,
}

impl ConnectionService {
    pub fn new(live: Arc<Live>, activity: Arc<Activity>, peer: SocketAddr, entry: Entry) -> Self {
        Self {
            live,
            activity,
            peer,
            entry,
        }
    }
}

impl Service<Request<Incoming>> for ConnectionService {
    type Response = Response<Streaming<Logged>>;
    type Error = Infallible;
    type Future = Handling;

    fn call(&self, request: Request<Incoming>) -> Handling {
        let busy = self.activity.begin_request();
        let request = if request.version() < Version::HTTP_2 {
            request.map(|body| Inbound::watched(body, &self.activity))
        } else {
            request.map(Inbound::unwatched)
        };
        Handling {
            // Boxed: hyper keeps room for this future for as long as the
            // connection lives, idle or not, and the request's own future
            // (guard, token, upstream send: kilobytes) is needed only while
            // a request is in flight. So an idle connection holds a pointer,
            // not the whole pipeline's state.
            request: Box::pin(self.live.handle(request, self.peer, self.entry)),
            busy,
        }
    }
}

/// One request being handled. A named future (not an `async` block) so it is
/// `Unpin`, which taking a connection back from hyper to park it requires.
/// hyper drops it as soon as it has the response, which ends the busy mark.
pub struct Handling {
    request: Pin<Box<dyn Future<Output = Response<Logged>> + Send>>,
    busy: Busy,
}

impl Future for Handling {
    type Output = Result<Response<Streaming<Logged>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = std::task::ready!(self.request.as_mut().poll(cx));
        let activity = self.busy.activity();
        Poll::Ready(Ok(
            response.map(|body| Streaming::new(body, activity.clone()))
        ))
    }
}
