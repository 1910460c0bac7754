//! A bounded relay in front of `retina`: every byte a camera sends on its RTSP connection
//! passes through a framing scanner that refuses oversized messages before `retina` buffers
//! them.
//!
//! Why a relay: `retina` 0.4.21 reads RTSP with its own parser, which has a
//! `max_message_size` option (`rtsp::parse::ParserBuilder`), but its connection builds the
//! parser with the default (no limit) and neither `SessionOptions` nor any other public API sets
//! it or accepts a connected stream. So a camera's answer is buffered whole, however large: a
//! camera answering DESCRIBE with a 50 MB page grew the gateway to 740 MB and put the page in
//! the error (issue 11); a header section that never ends grows without end. Rather than fork
//! `retina`, each RTSP camera gets a loopback listener (one per camera task, so `retina`'s
//! background TEARDOWN on a fresh connection still reaches the camera); `retina` is given
//! `rtsp://127.0.0.1:<relay port>/<path>` and every connection it opens is relayed to the
//! camera, the camera's side through [`Scanner`]:
//! - a message's header section (start line and headers) at most [`MAX_HEAD_BYTES`];
//! - a message's body (`Content-Length`) at most [`MAX_BODY_BYTES`] (an SDP is a few KB);
//! - interleaved RTP/RTCP (`$`, channel, 16-bit length) passes as it is: 64 KiB at most by
//!   construction.
//!
//! A message over a limit is not forwarded: the connection is cut, and the camera's next error
//! says which limit (a [`Refusal`], counted as `kind="response_refused"`). So one camera's
//! answers cost at most a header section and a body in `retina` (its ring buffer, ≤ 128 KiB) and
//! [`MAX_HEAD_BYTES`] plus a [`COPY_BUFFER_BYTES`] buffer here, per connection.
//!
//! The camera sees requests for `rtsp://127.0.0.1:<port>/<path>`, as it would behind a NAT port
//! mapping; cameras route by path (and Digest authentication hashes the URI the client sends,
//! so it stays consistent). UDP transport is not relayed: `retina` binds its RTP sockets to the
//! RTSP connection's local address, which would be loopback; those cameras' RTSP answers are
//! not size-limited (see `docs/design/security.md`).
//!
//! Cost: one extra copy of the camera's stream through loopback (about a syscall pair per
//! 16 KiB read).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tracing::debug;

/// The largest header section (start line and headers) accepted from a camera, bytes. Real
/// cameras' responses are under 2 KiB (a long `WWW-Authenticate` included).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The largest message body (`Content-Length`) accepted from a camera, bytes. An SDP with a
/// few streams is 1–4 KiB.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;

/// Read buffer per relayed direction, bytes.
pub const COPY_BUFFER_BYTES: usize = 16 * 1024;

/// Why the relay cut a camera's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The header section passed [`MAX_HEAD_BYTES`] without ending.
    HeadTooLarge,
    /// A body longer than [`MAX_BODY_BYTES`] was announced.
    BodyTooLarge {
        /// The announced `Content-Length`.
        content_length: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::HeadTooLarge => {
                write!(f, "RTSP message refused: header section over {MAX_HEAD_BYTES} bytes; connection cut")
            }
            Refusal::BodyTooLarge { content_length } => write!(
                f,
                "RTSP message refused: Content-Length {content_length} over the {MAX_BODY_BYTES}-byte limit; connection cut"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// What went wrong on the camera's side of the relay, for the session's error.
#[derive(Debug)]
pub enum RelayFailure {
    /// A message over a limit.
    Refused(Refusal),
    /// The camera could not be reached.
    Connect(std::io::Error),
}

impl std::fmt::Display for RelayFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayFailure::Refused(refusal) => refusal.fmt(f),
            RelayFailure::Connect(error) => write!(f, "connect to camera: {error}"),
        }
    }
}

// No `source()`: the message already says it, and a chain would say it twice.
impl std::error::Error for RelayFailure {}

/// Where the scanner is in the camera's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages (line ends there are skipped, as `retina` does).
    Idle,
    /// In a header section, buffered in `head`.
    Head,
    /// In a body or interleaved payload: this many bytes pass unexamined.
    Pass(u64),
    /// In an interleaved frame's 4-byte header (`$`, channel, length): this many bytes seen.
    DataHeader(u8),
}

/// The camera-side framing scanner: pure, fed any split of the stream.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    head: Vec<u8>,
    line_start: usize,
    data_length_high: u8,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner { state: State::Idle, head: Vec::new(), line_start: 0, data_length_high: 0 }
    }
}

impl Scanner {
    /// Feeds the next bytes from the camera; appends to `out` what may be forwarded now (a
    /// header section only once it is complete and within limits). After an error the
    /// connection must be cut: nothing more may be forwarded.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Refusal> {
        while let Some(&byte) = input.first() {
            match self.state {
                State::Idle => match byte {
                    b'\r' | b'\n' => {
                        out.push(byte);
                        input = &input[1..];
                    }
                    b'$' => {
                        out.push(byte);
                        input = &input[1..];
                        self.state = State::DataHeader(1);
                    }
                    _ => {
                        self.state = State::Head;
                        self.head.clear();
                        self.line_start = 0;
                    }
                },
                State::DataHeader(seen) => {
                    out.push(byte);
                    input = &input[1..];
                    self.state = match seen {
                        1 => State::DataHeader(2),
                        2 => {
                            self.data_length_high = byte;
                            State::DataHeader(3)
                        }
                        _ => match u16::from_be_bytes([self.data_length_high, byte]) {
                            0 => State::Idle,
                            length => State::Pass(u64::from(length)),
                        },
                    };
                }
                State::Pass(remaining) => {
                    let take = input.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 { State::Idle } else { State::Pass(remaining) };
                }
                State::Head => {
                    let line_end = input.iter().position(|b| *b == b'\n');
                    let take = line_end.map_or(input.len(), |end| end + 1);
                    if self.head.len() + take > MAX_HEAD_BYTES {
                        return Err(Refusal::HeadTooLarge);
                    }
                    self.head.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if line_end.is_none() {
                        continue;
                    }
                    let line = &self.head[self.line_start..self.head.len() - 1];
                    let blank = line.is_empty() || line == b"\r";
                    let is_first_line = self.line_start == 0;
                    self.line_start = self.head.len();
                    if blank && !is_first_line {
                        let content_length = content_length(&self.head);
                        if content_length > MAX_BODY_BYTES {
                            return Err(Refusal::BodyTooLarge { content_length });
                        }
                        out.extend_from_slice(&self.head);
                        self.head.clear();
                        self.state = if content_length == 0 { State::Idle } else { State::Pass(content_length) };
                    }
                }
            }
        }
        Ok(())
    }
}

/// The largest `Content-Length` in a header section (0 when none or unreadable: `retina`
/// then refuses the message itself, and whatever follows is scanned as a new message, within
/// the same limits).
fn content_length(head: &[u8]) -> u64 {
    head.split(|b| *b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let line = std::str::from_utf8(line).ok()?;
            let (name, value) = line.split_once(':')?;
            name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<u64>().ok())?
        })
        .max()
        .unwrap_or(0)
}

/// The camera's address, as `retina` would connect to it.
#[derive(Debug, Clone)]
struct Upstream {
    host: url::Host<String>,
    port: u16,
}

impl Upstream {
    async fn connect(&self) -> std::io::Result<TcpStream> {
        match &self.host {
            url::Host::Domain(name) => TcpStream::connect((name.as_str(), self.port)).await,
            url::Host::Ipv4(ip) => TcpStream::connect((*ip, self.port)).await,
            url::Host::Ipv6(ip) => TcpStream::connect((*ip, self.port)).await,
        }
    }
}

/// One camera's relay: a loopback listener relaying every connection to the camera, until
/// dropped (connections already relayed end when either side closes).
pub struct Relay {
    port: u16,
    failure: Arc<Mutex<Option<RelayFailure>>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Listens on a free loopback port for connections to relay to `camera`'s host and port
    /// (554 by default). A connect to the camera that takes longer than `connect_timeout`
    /// fails.
    pub async fn start(camera: &url::Url, connect_timeout: Duration) -> anyhow::Result<Relay> {
        let host = camera.host().ok_or_else(|| anyhow::anyhow!("no host in {camera}"))?.to_owned();
        let upstream = Upstream { host, port: camera.port().unwrap_or(554) };
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let failure: Arc<Mutex<Option<RelayFailure>>> = Arc::default();
        let recorded = failure.clone();
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((client, _)) => {
                        tokio::spawn(relay_connection(client, upstream.clone(), connect_timeout, recorded.clone()));
                    }
                    // Out of file descriptors, say: the session fails and is retried.
                    Err(error) => {
                        debug!(error = %error, "relay accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Relay { port, failure, accept })
    }

    /// `camera` with its host and port replaced by the relay's.
    pub fn url_for(&self, camera: &url::Url) -> url::Url {
        let mut relayed = camera.clone();
        // Infallible for an rtsp:// URL with a host (checked in `start`).
        let _ = relayed.set_host(Some("127.0.0.1"));
        let _ = relayed.set_port(Some(self.port));
        relayed
    }

    /// The last failure on the camera's side since the previous call, if any.
    pub fn take_failure(&self) -> Option<RelayFailure> {
        self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Relays one connection until either side closes or the camera breaks a limit.
async fn relay_connection(
    client: TcpStream,
    upstream: Upstream,
    connect_timeout: Duration,
    failure: Arc<Mutex<Option<RelayFailure>>>,
) {
    let record = |what: RelayFailure| *failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(what);
    let camera = match tokio::time::timeout(connect_timeout, upstream.connect()).await {
        Ok(Ok(camera)) => camera,
        Ok(Err(error)) => return record(RelayFailure::Connect(error)),
        Err(_) => {
            return record(RelayFailure::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("timed out after {connect_timeout:?}"),
            )))
        }
    };
    let _ = camera.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut camera_read, mut camera_write) = camera.into_split();
    // Our own requests (and RTCP receiver reports) go to the camera as they are.
    let requests = tokio::io::copy(&mut client_read, &mut camera_write);
    let answers = async {
        let mut scanner = Scanner::default();
        let mut buffer = vec![0u8; COPY_BUFFER_BYTES];
        let mut out = Vec::with_capacity(COPY_BUFFER_BYTES);
        loop {
            let read = match camera_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            out.clear();
            if let Err(refusal) = scanner.feed(&buffer[..read], &mut out) {
                // What was complete before the refused message still goes through.
                let _ = client_write.write_all(&out).await;
                return record(RelayFailure::Refused(refusal));
            }
            if client_write.write_all(&out).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        () = answers => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(stream: &[u8], piece: usize) -> (Vec<u8>, Result<(), Refusal>) {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            if let Err(refusal) = scanner.feed(chunk, &mut out) {
                return (out, Err(refusal));
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn well_formed_answers_and_interleaved_data_pass_unchanged_however_split() {
        let sdp = "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
        let mut stream = format!(
            "RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE, SETUP\r\n\r\n\
             RTSP/1.0 200 OK\r\nCSeq: 2\r\ncontent-length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes();
        // Interleaved RTP whose payload looks like a huge RTSP header: must not be scanned.
        let payload = b"RTSP/1.0 200 OK\r\nContent-Length: 99999999999\r\n";
        stream.extend_from_slice(&[b'$', 0, 0, payload.len() as u8]);
        stream.extend_from_slice(payload);
        stream.extend_from_slice(b"\r\nRTSP/1.0 200 OK\r\nCSeq: 3\r\n\r\n");
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let (out, result) = scan_in_pieces(&stream, piece);
            assert_eq!(result, Ok(()), "piece {piece}");
            assert_eq!(out, stream, "piece {piece}");
        }
    }

    #[test]
    fn oversized_bodies_and_endless_headers_are_refused_before_they_are_forwarded() {
        let ok = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n".to_vec();
        // (stream after a good answer, expected refusal)
        let big_body = format!("RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: {}\r\n\r\n<html>", 50 << 20).into_bytes();
        let endless_headers: Vec<u8> =
            b"RTSP/1.0 200 OK\r\n".iter().copied().chain(b"X-Filler: aaaaaaaaaaaaaaaa\r\n".repeat(2000)).collect();
        let endless_line: Vec<u8> = b"RTSP/1.0 200 OK\r\nX: ".iter().copied().chain([b'a'; 40_000]).collect();
        let table = [
            (big_body, Refusal::BodyTooLarge { content_length: 50 << 20 }),
            (endless_headers, Refusal::HeadTooLarge),
            (endless_line, Refusal::HeadTooLarge),
        ];
        for (bad, expected) in table {
            let stream = [ok.clone(), bad].concat();
            for piece in [1, 100, 4096, stream.len()] {
                let (out, result) = scan_in_pieces(&stream, piece);
                assert_eq!(result, Err(expected.clone()), "piece {piece}");
                assert_eq!(out, ok, "only the good answer is forwarded (piece {piece})");
            }
        }
        // At the limit exactly: accepted.
        let at_limit = format!("RTSP/1.0 200 OK\r\nContent-Length: {MAX_BODY_BYTES}\r\n\r\n");
        let mut scanner = Scanner::default();
        assert_eq!(scanner.feed(at_limit.as_bytes(), &mut Vec::new()), Ok(()));
    }

    #[tokio::test]
    async fn relays_to_the_camera_and_reports_a_refusal_or_an_unreachable_camera() {
        let camera = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let camera_url: url::Url =
            format!("rtsp://127.0.0.1:{}/h264", camera.local_addr().unwrap().port()).parse().unwrap();
        let relay = Relay::start(&camera_url, Duration::from_secs(5)).await.unwrap();
        let relayed = relay.url_for(&camera_url);
        assert_eq!(relayed.path(), "/h264");
        let server = tokio::spawn(async move {
            let (mut socket, _) = camera.accept().await.unwrap();
            let mut request = [0u8; 256];
            let read = socket.read(&mut request).await.unwrap();
            assert!(request[..read].starts_with(b"OPTIONS"));
            socket.write_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n").await.unwrap();
            let _ = socket.read(&mut request).await.unwrap();
            let head = format!("RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: {}\r\n\r\n", 50 << 20);
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&[b'x'; 1 << 20]).await;
        });
        let mut client = TcpStream::connect(("127.0.0.1", relayed.port().unwrap())).await.unwrap();
        client.write_all(b"OPTIONS rtsp://x/ RTSP/1.0\r\nCSeq: 1\r\n\r\n").await.unwrap();
        let mut answer = vec![0u8; 64];
        let read = client.read(&mut answer).await.unwrap();
        assert_eq!(&answer[..read], b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n");
        client.write_all(b"DESCRIBE rtsp://x/ RTSP/1.0\r\nCSeq: 2\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the refused answer was forwarded ({} bytes)", rest.len());
        server.await.unwrap();
        let failure = relay.take_failure().expect("refusal recorded");
        assert!(matches!(failure, RelayFailure::Refused(Refusal::BodyTooLarge { .. })), "{failure}");

        let closed: url::Url = format!("rtsp://127.0.0.1:{}/", crate_closed_port()).parse().unwrap();
        let relay = Relay::start(&closed, Duration::from_secs(5)).await.unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", relay.url_for(&closed).port().unwrap())).await.unwrap();
        let _ = client.read_to_end(&mut Vec::new()).await;
        let failure = relay.take_failure().expect("connect failure recorded");
        assert!(failure.to_string().to_lowercase().contains("connection refused"), "{failure}");
    }

    fn crate_closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }
}
