//! Who may do what (issue 11: frames, snapshots with faces and incidents were readable by any
//! loopback peer, so by a DNS-rebinding page or through the SSH tunnel the docs recommend).
//!
//! 1. `Host` must be `localhost`, an IP literal, or a name in `[console] allowed_hosts`;
//!    anything else gets 421. A DNS-rebinding page always names its own domain, so this stops
//!    it even where no token is configured; IP literals are safe (their origin is ours).
//! 2. The page shells, their scripts and `/healthz` are open: they hold no data and must
//!    load to ask for the token.
//! 3. `/metrics` (camera ids and counters) is open to loopback peers, for a local Prometheus;
//!    from elsewhere it needs the token.
//! 4. Camera and incident data (lists, frames, snapshots, the live stream) need the token:
//!    `Authorization: Bearer <token>`, or the session cookie that `POST /api/session` sets
//!    (HttpOnly, SameSite=Strict; its value is a hash of the token, not the token). Without a
//!    configured token the console is read-only and its data is readable from loopback only.
//! 5. Changes need the `Authorization` header (never the cookie: no cross-site request can
//!    set that header, so no CSRF).
//!
//! The token is compared in constant time and never logged. Refusals are counted and logged
//! once per interval.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::api::error;
use super::Shared;

/// The session cookie's name.
pub(super) const SESSION_COOKIE: &str = "gateway_session";
/// How long a session cookie lasts in the browser.
pub(super) const SESSION_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

/// The middleware: lets a request through or answers 401/403/421.
pub(super) async fn guard(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let config = shared.config();
    let allowed_hosts = config.console.as_ref().map_or(&[][..], |console| console.allowed_hosts.as_slice());
    let host = request.headers().get(header::HOST).and_then(|value| value.to_str().ok());
    if !host_allowed(host, allowed_hosts) {
        shared.refused_host.fetch_add(1, Ordering::Relaxed);
        if super::server::due(&shared.last_refusal_log_ms) {
            tracing::warn!(%peer, host = ?host.map(|h| h.chars().take(80).collect::<String>()),
                "console request for a host not allowed refused (counted in /metrics; logged once a minute)");
        }
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "this host name is not allowed: use localhost or the address, or add it to [console] allowed_hosts",
        )
        .into_response();
    }
    let access = classify(request.method(), request.uri().path());
    let token = config.console.as_ref().and_then(|console| console.token.as_ref());
    let presented = presented(request.headers());
    match decide(access, peer.ip().is_loopback(), token.map(|t| t.expose()), presented) {
        Decision::Allow => {
            let mut response = next.run(request).await;
            // Camera and incident data stays out of caches (snapshots show faces).
            if access == Access::Data {
                response
                    .headers_mut()
                    .entry(header::CACHE_CONTROL)
                    .or_insert(header::HeaderValue::from_static("no-store"));
            }
            response
        }
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

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Page shells, assets, `/healthz`, ending a session.
    Open,
    /// `/metrics`.
    Metrics,
    /// Camera and incident data.
    Data,
    /// A change (and starting a session).
    Change,
}

fn classify(method: &Method, path: &str) -> Access {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    match path {
        "/" | "/editor" | "/healthz" if reads => Access::Open,
        _ if reads && path.starts_with("/assets/") => Access::Open,
        "/metrics" if reads => Access::Metrics,
        "/api/session" if *method == Method::DELETE => Access::Open,
        _ if reads => Access::Data,
        _ => Access::Change,
    }
}

/// What a request presents: the bearer token, the session cookie.
#[derive(Debug, Clone, Copy, Default)]
struct Presented<'a> {
    bearer: Option<&'a str>,
    cookie: Option<&'a str>,
}

fn presented(headers: &HeaderMap) -> Presented<'_> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim());
    Presented { bearer, cookie }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    Refuse(StatusCode, &'static str),
}

/// The rule, pure.
fn decide(access: Access, loopback: bool, token: Option<&str>, presented: Presented<'_>) -> Decision {
    let bearer = matches!((token, presented.bearer), (Some(token), Some(bearer)) if same(token, bearer));
    let cookie =
        matches!((token, presented.cookie), (Some(token), Some(cookie)) if same(&session_value(token), cookie));
    let shown = presented.bearer.is_some() || presented.cookie.is_some();
    match (access, token) {
        (Access::Open, _) => Decision::Allow,
        (Access::Metrics, _) if loopback || bearer || cookie => Decision::Allow,
        (Access::Data, Some(_)) if bearer || cookie => Decision::Allow,
        (Access::Data, None) if loopback => Decision::Allow,
        (Access::Change, Some(_)) if bearer => Decision::Allow,
        (Access::Change, None) => Decision::Refuse(
            StatusCode::FORBIDDEN,
            "the console is read-only: no token is configured ([console] token_file or token_env)",
        ),
        (_, None) => Decision::Refuse(
            StatusCode::UNAUTHORIZED,
            "no token is configured ([console] token_file or token_env): data is readable from this host only",
        ),
        (Access::Change, Some(_)) if cookie && presented.bearer.is_none() => {
            Decision::Refuse(StatusCode::UNAUTHORIZED, "changes need the token as Authorization: Bearer …")
        }
        _ if shown => Decision::Refuse(StatusCode::UNAUTHORIZED, "wrong token"),
        _ => Decision::Refuse(StatusCode::UNAUTHORIZED, "this needs the console token (Authorization: Bearer …)"),
    }
}

/// The session cookie's value for `token`: a hash, so the cookie jar never holds the token
/// itself, and rotating the token ends every session.
pub(super) fn session_value(token: &str) -> String {
    let digest = Sha256::digest(format!("street-gateway console session v1\n{token}").as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Whether a request naming `host` (the `Host` header, port included) may be served.
fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else { return false };
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((literal, port)) if port.is_empty() || port[1..].bytes().all(|b| b.is_ascii_digit()) => {
                return literal.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || port.starts_with(':'));
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.parse::<IpAddr>().is_ok() || allowed.contains(&name)
}

/// Constant-time comparison (the length is not secret).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef";

    #[test]
    fn requests_are_classified_by_method_and_path() {
        let table = [
            (Method::GET, "/", Access::Open),
            (Method::GET, "/editor", Access::Open),
            (Method::GET, "/assets/console.js", Access::Open),
            (Method::GET, "/healthz", Access::Open),
            (Method::GET, "/metrics", Access::Metrics),
            (Method::GET, "/api/incidents", Access::Data),
            (Method::GET, "/api/incidents/x/snapshot.jpg", Access::Data),
            (Method::GET, "/api/cameras/gate-3/frame.jpg", Access::Data),
            (Method::GET, "/api/events", Access::Data),
            (Method::HEAD, "/api/cameras", Access::Data),
            (Method::POST, "/", Access::Change),
            (Method::POST, "/api/session", Access::Change),
            (Method::DELETE, "/api/session", Access::Open),
            (Method::PUT, "/api/cameras/gate-3/zones", Access::Change),
        ];
        for (method, path, expected) in table {
            assert_eq!(classify(&method, path), expected, "{method} {path}");
        }
    }

    #[test]
    fn data_needs_the_token_or_the_cookie_and_changes_need_the_header() {
        let session = session_value(TOKEN);
        let wrong_session = session_value("another-token-0123");
        let none = Presented::default();
        let bearer = |b| Presented { bearer: Some(b), cookie: None };
        let cookie = |c| Presented { bearer: None, cookie: Some(c) };
        // (access, loopback, configured token, presented, allowed)
        type Row<'a> = (Access, bool, Option<&'a str>, Presented<'a>, bool);
        let table: &[Row] = &[
            (Access::Open, false, Some(TOKEN), none, true),
            (Access::Metrics, true, Some(TOKEN), none, true),
            (Access::Metrics, false, Some(TOKEN), none, false),
            (Access::Metrics, false, Some(TOKEN), bearer(TOKEN), true),
            // Data: the token from everywhere, loopback included (issue 11).
            (Access::Data, true, Some(TOKEN), none, false),
            (Access::Data, true, Some(TOKEN), bearer(TOKEN), true),
            (Access::Data, false, Some(TOKEN), bearer(TOKEN), true),
            (Access::Data, true, Some(TOKEN), bearer("0123456789abcdeX"), false),
            (Access::Data, true, Some(TOKEN), cookie(&session), true),
            (Access::Data, false, Some(TOKEN), cookie(&session), true),
            (Access::Data, true, Some(TOKEN), cookie(&wrong_session), false),
            (Access::Data, true, Some(TOKEN), cookie(TOKEN), false),
            // No token configured: read-only, data from loopback only.
            (Access::Data, true, None, none, true),
            (Access::Data, false, None, none, false),
            (Access::Data, false, None, bearer(TOKEN), false),
            // Changes: the header only.
            (Access::Change, true, Some(TOKEN), none, false),
            (Access::Change, true, Some(TOKEN), cookie(&session), false),
            (Access::Change, true, Some(TOKEN), bearer("0123456789abcdeX"), false),
            (Access::Change, true, Some(TOKEN), bearer(TOKEN), true),
            (Access::Change, false, Some(TOKEN), bearer(TOKEN), true),
            (Access::Change, true, None, bearer("anything"), false),
        ];
        for &(access, loopback, configured, presented, allowed) in table {
            let decision = decide(access, loopback, configured, presented);
            assert_eq!(decision == Decision::Allow, allowed, "{access:?} {loopback} {configured:?} {presented:?}");
        }
        assert!(matches!(decide(Access::Change, true, None, none), Decision::Refuse(StatusCode::FORBIDDEN, _)));
        assert!(matches!(decide(Access::Data, true, Some(TOKEN), none), Decision::Refuse(StatusCode::UNAUTHORIZED, _)));
    }

    #[test]
    fn the_cookie_is_read_among_others_and_is_not_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "theme=dark; gateway_session=abc123 ; x=1".parse().unwrap());
        assert_eq!(presented(&headers).cookie, Some("abc123"));
        assert!(!session_value(TOKEN).contains(TOKEN));
        assert_eq!(session_value(TOKEN).len(), 64);
    }

    #[test]
    fn only_local_names_ip_literals_and_listed_names_are_served() {
        let allowed = vec!["gateway.lan".to_string()];
        let table = [
            (Some("localhost:8080"), true),
            (Some("LOCALHOST"), true),
            (Some("127.0.0.1:8080"), true),
            (Some("10.0.0.7"), true),
            (Some("[::1]:8080"), true),
            (Some("[::1]"), true),
            (Some("gateway.lan:8080"), true),
            (Some("gateway.lan."), true),
            (Some("evil.example:8080"), false),
            (Some("localhost.evil.example"), false),
            (Some("127.0.0.1.nip.io"), false),
            (Some("[::1]x"), false),
            (Some("[nonsense]:80"), false),
            (Some("localhost:80a"), false),
            (Some(""), false),
            (None, false),
        ];
        for (host, expected) in table {
            assert_eq!(host_allowed(host, &allowed), expected, "{host:?}");
        }
    }
}
