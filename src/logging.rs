//! Logging set-up: `tracing` to stderr, filtered by `RUST_LOG` (default `info`, with ONNX
//! Runtime's own chatter at `warn`). `GATEWAY_LOG_FORMAT=json` switches to JSON lines for log
//! shippers.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; a second call is a no-op.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if std::env::var("GATEWAY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
