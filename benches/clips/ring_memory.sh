#!/usr/bin/env bash
# Packet-ring memory of clip-recording cameras (issue 16), measured: N cameras (default 4) on
# a substream-like footage file (the plaza clip as 640x360, 25 fps, GOP 2 s, 512 kbit/s CBR,
# no B-frames), each with a fall-watch zone (clips on by default: pre-roll 10 s), run by
# `gateway run` for 40 s; prints the rings' bytes from /metrics and what bitrate x (pre-roll
# + 2 s analysis slack + up to one GOP) predicts. Usage, from the repository root after a build:
#   ORT_DYLIB_PATH=... benches/clips/ring_memory.sh [N] [target/debug/gateway]
set -euo pipefail
cameras=${1:-4}
gateway=${2:-target/debug/gateway}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plaza=../shared/media/vtest_plaza_768x576_10fps_gop20.mp4
ffmpeg -loglevel error -y -i "$plaza" -t 60 -vf scale=640:360 -r 25 -c:v libx264 -preset veryfast \
  -b:v 512k -maxrate 512k -bufsize 512k -g 50 -bf 0 -pix_fmt yuv420p "$work/sub.mp4"
bits=$(ffprobe -v error -show_entries format=bit_rate -of csv=p=0 "$work/sub.mp4")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  printf '[detector]\nmodel = "%s/models/yolox_nano.toml"\n[storage]\nstate_dir = "%s/state"\n' "$PWD" "$work"
  printf '[console]\nbind = "127.0.0.1:%s"\n' "$port"
  for i in $(seq 1 "$cameras"); do
    printf '[cameras.cam-%s]\nurl = "file:%s/sub.mp4"\nanalysis_interval_ms = 10000\n' "$i" "$work"
    printf '[[cameras.cam-%s.zones]]\nid = "door"\nkind = "fall_watch"\n' "$i"
    printf 'polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\n'
  done
} > "$work/gateway.toml"
"$gateway" run --config "$work/gateway.toml" --run-for-secs 45 > "$work/log" 2>&1 &
sleep 40
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^gateway_clip_ring' || { tail -20 "$work/log"; exit 1; }
wait
python3 - "$bits" "$cameras" <<'PY'
import sys
bits, cameras = int(sys.argv[1]), int(sys.argv[2])
for gop in (0, 2):
    seconds = 10 + 2 + gop
    print(f"predicted per camera at {bits/1000:.0f} kbit/s x {seconds} s: {bits/8*seconds/1024:.0f} KiB;"
          f" x{cameras}: {bits/8*seconds*cameras/2**20:.2f} MiB; x600: {bits/8*seconds*600/2**20:.0f} MiB")
PY
