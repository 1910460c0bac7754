#!/usr/bin/env bash
# Figures for issue 11 (one misbehaving camera): peak RSS, log volume, retained status size and
# /api/cameras size while a camera answers DESCRIBE with a BODY_BYTES non-SDP body, for SECONDS.
# A gateway with that camera only, a real mosquitto, the console on loopback.
#   benches/camera-abuse/run.sh [GATEWAY_BINARY] [BODY_BYTES] [SECONDS]
#   e.g. benches/camera-abuse/run.sh target/debug/gateway 52428800 60
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$root/target/debug/gateway}; size=${2:-500000}; secs=${3:-60}
out=$(mktemp -d)
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$root/.cache/onnxruntime/1.31.1/libonnxruntime.so}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mport=$(free_port); cport=$(free_port); hport=$(free_port)
chmod 777 "$out"
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mport" > "$out/mosquitto.conf"
mosquitto -c "$out/mosquitto.conf" >/dev/null 2>&1 & mpid=$!
python3 "$root/benches/camera-abuse/fake_rtsp_camera.py" "$cport" "$size" & fpid=$!
sleep 1
mosquitto_sub -h 127.0.0.1 -p "$mport" -t 'lixia/status/cameras/#' -F '%t %l' > "$out/status.txt" 2>/dev/null & spid=$!
cat > "$out/gateway.toml" <<TOML
[ingest]
reconnect_initial_ms = 200
reconnect_max_ms = 1000
connect_timeout_ms = 3000
[detector]
model = "$root/models/yolox_nano.toml"
[storage]
state_dir = "$out/state"
[console]
bind = "127.0.0.1:$hport"
[mqtt]
url = "mqtt://127.0.0.1:$mport"
client_id = "gw-camera-abuse"
[cameras.bad]
url = "rtsp://127.0.0.1:$cport/stream"
TOML
RUST_LOG=info,ort=warn "$bin" run --run-for-secs $((secs + 30)) --config "$out/gateway.toml" 2> "$out/stderr.log" >/dev/null & gpid=$!
sleep "$secs"
curl -s "http://127.0.0.1:$hport/api/cameras" > "$out/api.json"
curl -s "http://127.0.0.1:$hport/metrics" > "$out/metrics.txt"
rss=$(grep VmHWM "/proc/$gpid/status")
kill -TERM "$gpid"; wait "$gpid"
kill "$spid" "$fpid" "$mpid" 2>/dev/null; wait 2>/dev/null
echo "body $size bytes, $secs s, $bin"
echo "peak RSS: $rss"
echo "log: $(wc -l < "$out/stderr.log") lines, $(wc -c < "$out/stderr.log") bytes"
echo "retained camera status: $(wc -l < "$out/status.txt") messages, largest $(awk '{print $2}' "$out/status.txt" | sort -n | tail -1) bytes"
echo "/api/cameras: $(wc -c < "$out/api.json") bytes"
grep -E '^gateway_(camera_errors_total\{camera="bad",kind="(response_refused|protocol)"\}|camera_log_lines_suppressed_total|camera_reasons_capped_total|mqtt_connected|ingest_reconnects_total)' "$out/metrics.txt"
rm -rf "$out"
