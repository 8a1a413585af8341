//! A request timeout whose timer is set only when needed: the answer is polled once
//! first, and only if it is not ready then is a timer set (for the deadline counted from
//! when the request came in). Most lookups are answered at the first poll (the near cache
//! holds the entities, and a body already in the buffer is read at once), and need none.
//!
//! Why not `tower_http::timeout::TimeoutLayer`: it sets a timer for every request, and
//! whenever no other timer is pending, tokio wakes its I/O driver for it (an `eventfd`
//! write and an extra `epoll_wait`): a third of the near cache's lookups paid for one.
//! What a timed-out request gets is the same: 408 with no body.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Answers 408 for requests not answered within `timeout` (see the module's docs).
#[derive(Debug, Clone, Copy)]
pub struct LazyTimeoutLayer {
    timeout: Duration,
}

impl LazyTimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> tower::Layer<S> for LazyTimeoutLayer {
    type Service = LazyTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LazyTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LazyTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> tower::Service<Request> for LazyTimeout<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = LazyTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        LazyTimeoutFuture {
            answer: self.inner.call(request),
            deadline: Instant::now() + self.timeout,
            timer: None,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct LazyTimeoutFuture<F> {
        #[pin]
        answer: F,
        deadline: Instant,
        // Boxed: made only for the few requests that wait.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> Future for LazyTimeoutFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(answer) = this.answer.poll(cx) {
            return Poll::Ready(answer);
        }
        let deadline = *this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Ok(StatusCode::REQUEST_TIMEOUT.into_response())),
            Poll::Pending => Poll::Pending,
        }
    }
}
