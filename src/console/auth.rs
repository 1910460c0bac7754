//! Who may do what: state-changing requests need the bearer token; read-only requests are
//! open to loopback peers and need the token from anywhere else. The token is compared in
//! constant time and never logged.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::error;
use super::Shared;

/// The middleware: lets a request through or answers 401/403.
pub(super) async fn guard(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    // The pages and their scripts hold no data, and must load anywhere to ask for the token.
    let path = request.uri().path();
    if !writes && (path == "/" || path == "/editor" || path.starts_with("/assets/")) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let config = shared.config();
    let token = config.console.as_ref().and_then(|console| console.token.as_ref());
    match decide(writes, peer.ip().is_loopback(), token.map(|t| t.expose()), presented) {
        Decision::Allow => next.run(request).await,
        Decision::Refuse(status, message) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, method = %request.method(), path = request.uri().path(), "console request refused");
            let mut response = error(status, message).into_response();
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
            }
            response
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    Refuse(StatusCode, &'static str),
}

/// The rule, pure: `writes` for state-changing requests.
fn decide(writes: bool, loopback: bool, token: Option<&str>, presented: Option<&str>) -> Decision {
    let valid = matches!((token, presented), (Some(token), Some(presented)) if same(token, presented));
    match (writes, token) {
        _ if valid => Decision::Allow,
        (false, _) if loopback => Decision::Allow,
        (true, None) => Decision::Refuse(
            StatusCode::FORBIDDEN,
            "the console is read-only: no token is configured ([console] token_file or token_env)",
        ),
        _ if presented.is_some() => Decision::Refuse(StatusCode::UNAUTHORIZED, "wrong token"),
        _ => Decision::Refuse(StatusCode::UNAUTHORIZED, "this needs the console token (Authorization: Bearer …)"),
    }
}

/// Constant-time comparison (the length is not secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_need_the_token_and_reads_need_it_off_loopback() {
        let token = Some("0123456789abcdef");
        let unauthorised = |d: Decision| matches!(d, Decision::Refuse(StatusCode::UNAUTHORIZED, _));
        // (writes, loopback, configured token, presented, allowed)
        type Row<'a> = (bool, bool, Option<&'a str>, Option<&'a str>, bool);
        let table: &[Row] = &[
            (false, true, token, None, true),
            (false, false, token, None, false),
            (false, false, token, Some("0123456789abcdef"), true),
            (false, false, None, None, false),
            (true, true, token, None, false),
            (true, true, token, Some("0123456789abcdeX"), false),
            (true, true, token, Some("0123456789abcdef"), true),
            (true, false, token, Some("0123456789abcdef"), true),
            (true, true, None, Some("anything"), false),
        ];
        for &(writes, loopback, configured, presented, allowed) in table {
            let decision = decide(writes, loopback, configured, presented);
            assert_eq!(decision == Decision::Allow, allowed, "{writes} {loopback} {configured:?} {presented:?}");
        }
        assert!(matches!(decide(true, true, None, None), Decision::Refuse(StatusCode::FORBIDDEN, _)));
        assert!(unauthorised(decide(true, true, token, Some("short"))));
    }
}
