#!/usr/bin/env bash
# The console under a flood of idle connections (issue 11): N (default 128, twice the default
# cap of 64) connections that never send a request; prints the gateway's open descriptors and
# RSS before and under the flood, how long an authenticated request takes, the console's
# counters, and the time from SIGTERM to exit with the flood and a live stream connected.
# Usage: FOOTAGE=clip.mp4 [N=2000] [GATEWAY=target/release/gateway] benches/console/flood.sh
# Needs ORT_DYLIB_PATH, curl, python3, ss, bc. Figures: BENCHMARKS.md.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${GATEWAY:-$root/target/debug/gateway}
dir=$(mktemp -d)
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
token=measure-token-0123456789abcdef
echo "$token" > $dir/console.token; chmod 600 $dir/console.token
bike=$(realpath "${FOOTAGE:?set FOOTAGE to an H.264 clip, e.g. target/tmp/footage/parked_bike.mp4 made by the tests}")
cat > $dir/gateway.toml <<TOML
[detector]
model = "$root/models/yolox_nano.toml"
[storage]
state_dir = "$dir/state"
[console]
bind = "127.0.0.1:$port"
token_file = "console.token"
[cameras.gate-8]
url = "file:$bike"
analysis_interval_ms = 1000
TOML
N=${N:-128}
RUST_LOG=warn $bin run --config $dir/gateway.toml > $dir/log 2>&1 &
pid=$!
for i in $(seq 60); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 1; done
sleep 5
fds() { ls /proc/$pid/fd | wc -l; }
rss() { awk '/VmRSS/{print $2" kB"}' /proc/$pid/status; }
echo "baseline: fds=$(fds) rss=$(rss)"
python3 $root/benches/console/flood.py $port $N 40 & fl=$!
sleep 3
echo "with $N idle connections (cap 64): fds=$(fds) rss=$(rss) established_server_side=$(ss -Htn state established "( sport = :$port )" | wc -l)"
t0=$(date +%s.%N)
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/cameras")
t1=$(date +%s.%N)
echo "authenticated GET /api/cameras under the flood: HTTP $code after $(echo "$t1 - $t0" | bc) s"
curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/metrics" | grep -E '^gateway_console_(connections|requests)' 
curl -s -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/cameras" | python3 -c 'import json,sys; c=json.load(sys.stdin)["cameras"][0]; print("camera", c["id"], c["state"], "frames_analysed", c["frames_analysed"])'
wait $fl
python3 $root/benches/console/flood.py $port $N 30 & fl=$!
curl -s -N -H "Authorization: Bearer $token" "http://127.0.0.1:$port/api/events" > /dev/null & sse=$!
sleep 2
echo "before SIGTERM: fds=$(fds)"
t0=$(date +%s.%N); kill -TERM $pid; wait $pid; rc=$?; t1=$(date +%s.%N)
echo "SIGTERM -> exit (rc $rc) with $N idle clients + 1 live stream connected: $(echo "$t1 - $t0" | bc) s"
kill $fl $sse 2>/dev/null
grep -c "Too many open files" $dir/log
rm -rf $dir
