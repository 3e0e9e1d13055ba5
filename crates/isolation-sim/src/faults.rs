//! Injected faults: the FIFO queue that tests fill with [`SimHandle::push_fault`] and the
//! responses each fault produces.
//!
//! A request is classified first ([`FaultTarget`]), then takes one unit from the first queued
//! entry whose target matches. Faults are applied after authentication: a request with a bad
//! key never consumes a fault, so a test's fault cannot be eaten by an unrelated request.
//!
//! [`SimHandle::push_fault`]: super::SimHandle::push_fault

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::Frame;

/// Which requests a queued fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// Any request that passed authentication.
    Any,
    /// A request without `jobId` (creates a job).
    Create,
    /// A request with `jobId`, no `pageToken`, on a job that would still answer PENDING.
    Poll,
    /// A request with `pageToken`, or the poll that completes the job (it carries page 1).
    Page,
}

impl FaultTarget {
    fn matches(self, kind: FaultTarget) -> bool {
        self == FaultTarget::Any || self == kind
    }
}

/// One injected misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (500/502/503…) and a short `text/plain` body.
    Status(u16),
    /// `429` with `Retry-After: <retry_after_secs>`.
    TooManyRequests {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// `200` whose `Content-Length` is the full body's, but only half of the body is sent
    /// before the connection is closed.
    Truncate,
    /// `200` with a body that is not valid JSON.
    Malformed,
    /// Wait this long before answering (slow first byte), then answer normally.
    Delay(Duration),
    /// Answer with this status (a 4xx the client does not retry) and this `text/plain` body,
    /// for example one that echoes the request's key, as some servers quote what they refuse.
    Refuse {
        /// HTTP status.
        status: u16,
        /// The body, as is.
        body: String,
    },
    /// Answer with the job's status `ERROR`. The job stays failed: later requests for it get
    /// `ERROR` too, as a failed job would.
    JobError,
}

/// FIFO of `(target, fault, remaining uses)`.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    entries: VecDeque<(FaultTarget, Fault, u32)>,
}

impl FaultQueue {
    pub fn push(&mut self, target: FaultTarget, fault: Fault, times: u32) {
        if times > 0 {
            self.entries.push_back((target, fault, times));
        }
    }

    /// Takes one use of the first entry matching a request of kind `kind`.
    pub fn take(&mut self, kind: FaultTarget) -> Option<Fault> {
        let pos = self.entries.iter().position(|(t, _, _)| t.matches(kind))?;
        let entry = &mut self.entries[pos];
        entry.2 -= 1;
        let fault = entry.1.clone();
        if entry.2 == 0 {
            self.entries.remove(pos);
        }
        Some(fault)
    }
}

/// The response for [`Fault::Status`].
pub(crate) fn status_response(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The response for [`Fault::Refuse`].
pub(crate) fn refusal(code: u16, body: String) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The response for [`Fault::TooManyRequests`].
pub(crate) fn too_many_requests(retry_after_secs: u64) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [
            (header::CONTENT_TYPE, "text/plain".to_string()),
            (header::RETRY_AFTER, retry_after_secs.to_string()),
        ],
        "Too Many Requests\n",
    )
        .into_response()
}

/// The response for [`Fault::Malformed`]: a JSON document cut off in the middle of a string,
/// sent completely (valid HTTP, invalid JSON).
pub(crate) fn malformed(job_id: Option<&str>) -> Response {
    let body = format!(
        "{{\"jobId\":\"{}\",\"status\":\"COMPL",
        job_id.unwrap_or("00000000-0000-0000-0000-000000000000")
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// The response for [`Fault::Truncate`]: announces `body.len()` bytes, sends half, then fails
/// the body so that hyper closes the connection.
pub(crate) fn truncated(body: Vec<u8>, content_type: &'static str) -> Response {
    let full_len = body.len();
    let mut bytes = Bytes::from(body);
    let half = bytes.split_to(full_len / 2);
    let mut resp = Response::new(Body::new(TruncatedBody {
        first: Some(half),
        // The pause lets hyper flush the headers and the first half before the error makes it
        // drop the connection; without it the client may see no response at all, which is a
        // different fault (a reset) from the one wanted (a short body).
        pause: Some(Box::pin(tokio::time::sleep(Duration::from_millis(50)))),
    }));
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(full_len));
    resp
}

/// A body of unknown size (so hyper uses our `Content-Length`) that yields one chunk, pauses,
/// then errors.
struct TruncatedBody {
    first: Option<Bytes>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for TruncatedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some(chunk) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "simulated truncated response",
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_fifo_per_target() {
        let mut q = FaultQueue::default();
        q.push(FaultTarget::Page, Fault::Malformed, 1);
        q.push(FaultTarget::Any, Fault::Status(503), 2);
        assert_eq!(q.take(FaultTarget::Create), Some(Fault::Status(503)));
        assert_eq!(q.take(FaultTarget::Page), Some(Fault::Malformed));
        assert_eq!(q.take(FaultTarget::Page), Some(Fault::Status(503)));
        assert_eq!(q.take(FaultTarget::Poll), None);
    }
}
