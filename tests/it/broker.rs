//! Test support for delivery: a real mosquitto started on a free loopback port (persistence
//! on, so a restart keeps sessions and queued messages; shared with the benches in
//! `tests/support/fixtures.rs`), `mosquitto_sub` as a steward's phone with a persistent
//! session, and a scripted hung broker.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use super::fixtures::Mosquitto;

/// A test CA and a server certificate for 127.0.0.1/localhost (openssl), and a mosquitto
/// password file, in a directory mosquitto can read. Returns the listener config lines.
pub fn tls_and_passwords(dir: &Path, users: &[(&str, &str)]) -> String {
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=street-gateway-test-ca
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1
' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext
"#;
    let output = Command::new("sh").args(["-c", script]).current_dir(dir).output().unwrap();
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
    let passwd = dir.join("passwd");
    for (i, (user, password)) in users.iter().enumerate() {
        let mut command = Command::new("mosquitto_passwd");
        command.arg("-b");
        if i == 0 {
            command.arg("-c");
        }
        let status = command.arg(&passwd).args([user, password]).stderr(Stdio::null()).status().unwrap();
        assert!(status.success(), "mosquitto_passwd failed");
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    format!(
        "cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nallow_anonymous false\npassword_file {0}/passwd\n",
        dir.display()
    )
}

/// A message as received: topic and JSON payload.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: serde_json::Value,
}

/// `mosquitto_sub` with a persistent session (`-c -i`, QoS 1), collecting what it receives.
pub struct Subscriber {
    port: u16,
    client_id: String,
    filter: String,
    extra: Vec<String>,
    child: Option<Child>,
    pub messages: Arc<Mutex<Vec<Message>>>,
}

impl Subscriber {
    pub fn start(port: u16, client_id: &str, filter: &str) -> Self {
        Self::start_with(port, client_id, filter, &[])
    }

    pub fn start_with(port: u16, client_id: &str, filter: &str, extra: &[&str]) -> Self {
        let mut subscriber = Subscriber {
            port,
            client_id: client_id.into(),
            filter: filter.into(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            messages: Arc::default(),
        };
        subscriber.connect();
        subscriber
    }

    /// (Re)connects with the same client id: the broker hands over what was queued.
    pub fn connect(&mut self) {
        let mut child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-c", "-i", &self.client_id])
            .args(["-t", &self.filter, "-F", "%t\t%p"])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub");
        let stdout = child.stdout.take().unwrap();
        let messages = self.messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((topic, payload)) = line.split_once('\t') {
                    let payload = serde_json::from_str(payload).unwrap_or(serde_json::Value::String(payload.into()));
                    messages.lock().unwrap().push(Message { topic: topic.into(), payload });
                }
            }
        });
        self.child = Some(child);
        // Let the subscription be in place before anything is published.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Goes offline (the session stays on the broker).
    pub fn disconnect(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Messages received so far whose topic contains `part`.
    pub fn on(&self, part: &str) -> Vec<Message> {
        self.messages.lock().unwrap().iter().filter(|m| m.topic.contains(part)).cloned().collect()
    }

    /// Distinct `(incident_id, seq)` of incident events received.
    pub fn incident_events(&self) -> std::collections::BTreeSet<(String, u64)> {
        self.on("/incidents/")
            .iter()
            .map(|m| {
                (
                    m.payload["incident_id"].as_str().unwrap_or_default().to_string(),
                    m.payload["seq"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// A broker that accepts connections, answers CONNECT with CONNACK and then reads every
/// publish without ever acknowledging it. Counts PUBLISH packets per connection.
pub struct HungBroker {
    pub connections: Arc<AtomicUsize>,
    pub publishes_per_connection: Arc<Mutex<Vec<usize>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl HungBroker {
    /// On `port`, or a free one.
    pub fn start(port: Option<u16>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0))).unwrap();
        listener.set_nonblocking(true).unwrap();
        let broker =
            HungBroker { connections: Arc::default(), publishes_per_connection: Arc::default(), stop: Arc::default() };
        let (connections, per_connection, stop) =
            (broker.connections.clone(), broker.publishes_per_connection.clone(), broker.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let index = connections.fetch_add(1, Ordering::Relaxed);
                        per_connection.lock().unwrap().push(0);
                        let (per_connection, stop) = (per_connection.clone(), stop.clone());
                        std::thread::spawn(move || serve_hung(stream, index, &per_connection, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        broker
    }

    /// Stops listening and drops every connection; the port is free again.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for HungBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_hung(
    mut stream: TcpStream,
    index: usize,
    per_connection: &Mutex<Vec<usize>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        // Whole packets: fixed header byte, variable-length remaining length.
        while let Some((length, header)) = remaining_length(&buffer) {
            if buffer.len() < header + length {
                break;
            }
            match buffer[0] >> 4 {
                1 => {
                    // CONNACK, accepted; MQTT 5 (protocol level 5, after the "MQTT" name)
                    // adds an empty property length.
                    let _ = match buffer.get(header + 6) {
                        Some(5) => stream.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]),
                        _ => stream.write_all(&[0x20, 0x02, 0x00, 0x00]),
                    };
                }
                3 => per_connection.lock().unwrap()[index] += 1, // PUBLISH: never acknowledged
                12 => {
                    let _ = stream.write_all(&[0xd0, 0x00]); // PINGRESP: alive, just not acking
                }
                _ => {}
            }
            buffer.drain(..header + length);
        }
    }
}

/// (remaining length, fixed header size) of the packet at the start of `buffer`.
fn remaining_length(buffer: &[u8]) -> Option<(usize, usize)> {
    let mut length = 0usize;
    for (i, byte) in buffer.iter().skip(1).take(4).enumerate() {
        length |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((length, i + 2));
        }
    }
    None
}
