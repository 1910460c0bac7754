//! The console's HTTP/1 server, with every limit `axum::serve` leaves open (issue 11: 20 000
//! idle connections took every file descriptor and the cameras failed with "Too many open
//! files"; SIGTERM waited 88 s for one client):
//!
//! - at most `max_connections` connections at once, SSE streams included: the accept loop
//!   takes a permit *before* it accepts, so a connection beyond the cap waits in the kernel's
//!   listen backlog and holds no file descriptor of ours;
//! - [`HEADER_READ_TIMEOUT`] for a request's head, which in hyper also runs while a kept-alive
//!   connection waits for its next request: idle, half-open and slowloris connections are
//!   closed, an SSE stream (a response being written) is not;
//! - [`MAX_HEADER_BYTES`] of request head and [`MAX_HEADERS`] header lines;
//! - [`REQUEST_TIMEOUT`] for a handler, body upload included (not for the live stream);
//! - while every slot is taken, connections that have had no request in flight for
//!   [`SHED_IDLE_AFTER`] are dropped, every [`SHED_IDLE_AFTER`] (the overload policy of envoy
//!   and linkerd): a flood of idle connections delays an operator's request by about that
//!   much per cap's worth of flood queued before it, instead of by the head timeout; live
//!   streams and requests being served are never shed;
//! - on shutdown, idle connections close at once, requests in flight get [`SHUTDOWN_GRACE`],
//!   then every connection is dropped: shutdown never waits on a client.
//!
//! What is refused is counted ([`HttpCounters`], in `/metrics`) and logged at most once per
//! [`LOG_INTERVAL`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// Time a client has to send a request's head, counted from when the connection starts
/// waiting for it (so also the keep-alive idle limit).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a handler has, reading the body included; the live stream is exempt.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time requests in flight get to finish when the gateway stops; then they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Largest request head (hyper's read buffer; its minimum is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header lines in one request.
pub const MAX_HEADERS: usize = 48;
/// At the cap, a connection with no request in flight for this long is dropped.
pub const SHED_IDLE_AFTER: Duration = Duration::from_secs(1);
/// Live event streams open at once; more get 503 (each also holds a connection).
pub const MAX_LIVE_STREAMS: usize = 16;
/// Refusals of one kind are logged at most this often.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The console's HTTP counters, shown in `/metrics`.
#[derive(Debug, Default)]
pub struct HttpCounters {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Times the accept loop found every connection slot taken.
    pub at_cap: AtomicU64,
    /// Connections closed because the request head did not arrive in time (idle included).
    pub header_timeouts: AtomicU64,
    /// Connections closed on a malformed or oversized request head.
    pub bad_requests: AtomicU64,
    /// Requests whose handler ran past [`REQUEST_TIMEOUT`].
    pub request_timeouts: AtomicU64,
    /// Connections dropped at shutdown after the grace period.
    pub dropped_at_shutdown: AtomicU64,
    /// Idle connections dropped to make room while every slot was taken.
    pub shed_idle: AtomicU64,
    /// `accept` failures (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    last_cap_log_ms: AtomicI64,
    last_accept_error_log_ms: AtomicI64,
}

/// True at most once per [`LOG_INTERVAL`] for one `last` slot: refusals are logged once per
/// interval, never per item.
pub(crate) fn due(last: &AtomicI64) -> bool {
    let now_ms = super::wall_now_ms();
    let previous = last.load(Ordering::Relaxed);
    now_ms - previous >= LOG_INTERVAL.as_millis() as i64
        && last.compare_exchange(previous, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}

impl HttpCounters {
    /// The counters in the Prometheus text format.
    pub fn render(&self, refused: &[(&str, u64)]) -> String {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for (labels, value) in lines {
                out.push_str(&format!("{name}{labels} {value}\n"));
            }
        };
        family(
            "gateway_console_connections_open",
            "gauge",
            "Console connections open now.",
            &[(String::new(), read(&self.open))],
        );
        family(
            "gateway_console_connections_accepted_total",
            "counter",
            "Console connections accepted.",
            &[(String::new(), read(&self.accepted))],
        );
        family(
            "gateway_console_connections_at_cap_total",
            "counter",
            "Times every console connection slot was taken (newcomers wait in the listen backlog).",
            &[(String::new(), read(&self.at_cap))],
        );
        let closed = [
            ("header_timeout", read(&self.header_timeouts)),
            ("shed_idle_at_cap", read(&self.shed_idle)),
            ("bad_request", read(&self.bad_requests)),
            ("dropped_at_shutdown", read(&self.dropped_at_shutdown)),
            ("accept_error", read(&self.accept_errors)),
        ];
        family(
            "gateway_console_connections_closed_total",
            "counter",
            "Console connections closed or failed by the server's limits, by reason.",
            &closed.iter().map(|(reason, value)| (format!("{{reason=\"{reason}\"}}"), *value)).collect::<Vec<_>>(),
        );
        let mut requests: Vec<(String, u64)> = vec![("{reason=\"timeout\"}".into(), read(&self.request_timeouts))];
        requests.extend(refused.iter().map(|(reason, value)| (format!("{{reason=\"{reason}\"}}"), *value)));
        family("gateway_console_requests_refused_total", "counter", "Console requests refused, by reason.", &requests);
        out
    }
}

/// The limits one server runs with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`SHUTDOWN_GRACE`].
    pub shutdown_grace: Duration,
}

impl Limits {
    /// The defaults with `max_connections`.
    pub fn new(max_connections: usize) -> Self {
        Limits {
            max_connections: max_connections.max(1),
            header_read_timeout: HEADER_READ_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown`, then gives requests in flight
/// the grace period and drops whatever is left.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    counters: Arc<HttpCounters>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Bumped while every slot is taken: connections idle for SHED_IDLE_AFTER then close.
    let (shed, _) = tokio::sync::watch::channel(0u64);
    loop {
        if slots.available_permits() == 0 {
            counters.at_cap.fetch_add(1, Ordering::Relaxed);
            if due(&counters.last_cap_log_ms) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "console connection cap reached: idle connections are shed, new ones wait in the backlog \
                     (counted in /metrics; logged once a minute)"
                );
            }
        }
        let slot = loop {
            tokio::select! {
                () = shutdown.cancelled() => break None,
                slot = slots.clone().acquire_owned() => break Some(slot.expect("the semaphore is never closed")),
                () = tokio::time::sleep(SHED_IDLE_AFTER), if slots.available_permits() == 0 => {
                    shed.send_modify(|generation| *generation += 1);
                }
            }
        };
        let Some(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    if due(&counters.last_accept_error_log_ms) {
                        tracing::warn!(error = %error, "console cannot accept a connection");
                    }
                    // EMFILE and friends: the condition lasts a while, do not spin on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        let app = app.clone();
        let counters = counters.clone();
        let shutdown = shutdown.clone();
        let shed = shed.subscribe();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, &counters, shutdown, shed).await;
            counters.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    // No new connections from here on: the kernel refuses them.
    drop(listener);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.shutdown_grace + Duration::from_secs(1), slots.acquire_many(all)).await;
}

/// What a connection is doing, for shedding: handlers running, whether it carries a live
/// stream, and when its last handler ended (or it was accepted).
#[derive(Debug)]
struct Activity {
    handlers: AtomicU64,
    streaming: std::sync::atomic::AtomicBool,
    last_active: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    /// Whether the connection may be dropped to make room: no handler running, no live
    /// stream, nothing for [`SHED_IDLE_AFTER`]. (A response body still being written after its
    /// handler ended counts as idle: under a flood a reader that slow loses its response.)
    fn sheddable(&self) -> bool {
        self.handlers.load(Ordering::Relaxed) == 0
            && !self.streaming.load(Ordering::Relaxed)
            && self.last_active.lock().unwrap().elapsed() >= SHED_IDLE_AFTER
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    counters: &HttpCounters,
    shutdown: CancellationToken,
    mut shed: tokio::sync::watch::Receiver<u64>,
) {
    let activity = Arc::new(Activity {
        handlers: AtomicU64::new(0),
        streaming: false.into(),
        last_active: std::sync::Mutex::new(tokio::time::Instant::now()),
    });
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        if request.uri().path() == "/api/events" {
            seen.streaming.store(true, Ordering::Relaxed);
        }
        seen.handlers.fetch_add(1, Ordering::Relaxed);
        let seen = seen.clone();
        let mut app = app.clone();
        async move {
            let response = app.call(request).await.unwrap_or_else(|never| match never {});
            *seen.last_active.lock().unwrap() = tokio::time::Instant::now();
            seen.handlers.fetch_sub(1, Ordering::Relaxed);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let shed_now = async {
        loop {
            if shed.changed().await.is_err() {
                // The server is gone: only shutdown ends the connection now.
                std::future::pending::<()>().await;
            }
            if activity.sheddable() {
                return;
            }
        }
    };
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shed_now => {
            counters.shed_idle.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        () = shutdown.cancelled() => {
            // Idle connections close now; a request in flight gets the grace period.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits.shutdown_grace, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    counters.dropped_at_shutdown.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            }
        }
    };
    if let Err(error) = result {
        if error.is_timeout() {
            counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
        } else if error.is_parse() || error.is_parse_too_large() {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        }
        tracing::trace!(%peer, error = %error, "console connection ended");
    }
}

/// Middleware: a handler that runs past [`REQUEST_TIMEOUT`] (a slow body upload, a stuck
/// reply from the run loop) gets 503; the live stream is exempt.
pub(super) async fn request_timeout(
    axum::extract::State(counters): axum::extract::State<Arc<HttpCounters>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/api/events" {
        return next.run(request).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            counters.request_timeouts.fetch_add(1, Ordering::Relaxed);
            super::api::error(StatusCode::SERVICE_UNAVAILABLE, "the request took too long").into_response()
        }
    }
}
