#!/usr/bin/python3
"""Change gating figures (issue 14, item 3): the share of inferences the gate saves, its cost
per frame, and whether incidents move, on footage replayed through `gateway replay --stats`.

Clips (made with ffmpeg into .cache/gating/ when missing):
  plaza_sub     the plaza clip as the capacity harness serves it (640x360, 25 fps, keyframe
                every 2 s), looped to 10 min: people cross the walkway all the time;
  plaza         ../shared/media/vtest_plaza_768x576_10fps_gop20.mp4 as it is (40 s);
  falls         every clip in ../shared/media/falls (replayed one by one, summed);
  night_static  a dark, still street at night with sensor noise (lavfi), 10 min.

Cameras (configs written to a temporary directory):
  lower_half    the capacity harness's plain camera: a no-parking zone over the frame's lower
                half, 10 s;
  walkway       the same camera with the zone over the plaza's walkway band, 10 s;
  bikes         config/examples/misparked_bikes.toml (whole frame, 2 s);
  fall_watch    config/examples/fall_watch.toml (whole frame, 1 s, every frame decoded).

Each pair is replayed with gating on and off (`[detector] gate_max_stale_ms = 0`); the
incident events of both runs are compared (same events, times within one interval).

  python3 benches/gating/run.py                 # every pair
  python3 benches/gating/run.py --only night    # pairs whose clip name contains "night"
  python3 benches/gating/run.py --json out.json
  python3 benches/gating/run.py --no-compare    # gating on only

Needs ffmpeg, the ONNX Runtime library and model (scripts/setup) and target/release/gateway
(built when missing or older than the sources). Standard library only.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared", "media")
CACHE = os.path.join(ROOT, ".cache", "gating")
GATEWAY = os.path.join(ROOT, "target", "release", "gateway")
ORT_LIBRARY = os.path.join(ROOT, ".cache", "onnxruntime", "1.31.1", "libonnxruntime.so")
MODEL_MANIFEST = os.path.join(ROOT, "models", "yolox_nano.toml")
PLAZA = os.path.join(SHARED, "vtest_plaza_768x576_10fps_gop20.mp4")

# The capacity harness's substream recipe (benches/capacity/run.py: 512 kbit/s, keyframe every
# 2 s), in MP4 for replay.
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-keyint_min", "50",
        "-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p"]
CLIPS = {
    "plaza_sub": ["-stream_loop", "-1", "-i", PLAZA, "-t", "600", "-an",
                  "-vf", "fps=25,scale=640:360", "-b:v", "512k", "-maxrate", "512k",
                  "-bufsize", "1024k"] + X264,
    # A dark street: road, kerb, two house fronts, a lit window and a street lamp, all still;
    # temporal sensor noise (strength 14) over everything, as a night camera's gain gives.
    "night_static": ["-f", "lavfi", "-i", "color=c=0x101014:s=640x360:r=25", "-t", "600",
                     "-vf", "drawbox=x=0:y=220:w=640:h=140:c=0x1c1c1c:t=fill,"
                            "drawbox=x=0:y=214:w=640:h=6:c=0x2a2a2a:t=fill,"
                            "drawbox=x=40:y=60:w=220:h=150:c=0x18181e:t=fill,"
                            "drawbox=x=330:y=40:w=260:h=170:c=0x16161a:t=fill,"
                            "drawbox=x=400:y=90:w=40:h=30:c=0x5a4a20:t=fill,"
                            "drawbox=x=300:y=20:w=10:h=200:c=0x303030:t=fill,"
                            "drawbox=x=290:y=14:w=30:h=10:c=0xd0c080:t=fill,"
                            "noise=alls=14:allf=t",
                     "-b:v", "512k", "-maxrate", "512k", "-bufsize", "1024k"] + X264,
}

WALKWAY = [[0.0, 0.3], [1.0, 0.2], [1.0, 0.75], [0.0, 0.55]]
LOWER_HALF = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]


def log(message):
    print(f"[gating] {message}", file=sys.stderr, flush=True)


def make_clip(name):
    path = os.path.join(CACHE, f"{name}.mp4")
    stamp = path + ".cmd"
    recipe = " ".join(CLIPS[name])
    if os.path.isfile(path) and os.path.isfile(stamp) and open(stamp).read() == recipe:
        return path
    os.makedirs(CACHE, exist_ok=True)
    log(f"making {os.path.relpath(path, ROOT)}")
    partial = path + ".partial.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *CLIPS[name], partial],
                   check=True)
    os.replace(partial, path)
    with open(stamp, "w") as f:
        f.write(recipe)
    return path


def plain_camera(polygon):
    """The capacity harness's plain camera with its no-parking zone."""
    return f"""[detector]
model = {json.dumps(MODEL_MANIFEST)}

[cameras.example]
url = "rtsp://192.0.2.1/stream"
analysis_interval_ms = 10000

[[cameras.example.zones]]
id = "walkway"
kind = "no_parking"
polygon = {json.dumps(polygon)}
"""


def example(name):
    text = open(os.path.join(ROOT, "config", "examples", name)).read()
    return text.replace('model = "../../models/yolox_nano.toml"', f"model = {json.dumps(MODEL_MANIFEST)}")


CAMERAS = {
    "walkway": (lambda: plain_camera(WALKWAY), 10000),
    "lower_half": (lambda: plain_camera(LOWER_HALF), 10000),
    "bikes": (lambda: example("misparked_bikes.toml"), 2000),
    "fall_watch": (lambda: example("fall_watch.toml"), 1000),
}

PAIRS = [
    ("plaza_sub", "walkway"), ("plaza_sub", "lower_half"), ("plaza_sub", "fall_watch"),
    ("plaza", "fall_watch"), ("falls", "fall_watch"),
    ("night_static", "walkway"), ("night_static", "bikes"), ("night_static", "fall_watch"),
]


def ensure_gateway():
    newest = max(os.path.getmtime(os.path.join(d, f)) for top in ("src",)
                 for d, _, files in os.walk(os.path.join(ROOT, top)) for f in files)
    if not os.path.isfile(GATEWAY) or os.path.getmtime(GATEWAY) < newest:
        log("building target/release/gateway")
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)


def replay(config, footage, workdir):
    stats = os.path.join(workdir, "stats.json")
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", ORT_LIBRARY)
    result = subprocess.run([GATEWAY, "replay", "--json", "--camera", "example", "--stats", stats,
                             "--config", config, footage], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"gating: replay {footage} failed:\n{result.stderr[-3000:]}")
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return events, json.load(open(stats))


def add(total, stats):
    for key in ("analysed_frames", "inferences_run", "inferences_reused"):
        total[key] = total.get(key, 0) + stats[key]
    total["gate_us"] = total.get("gate_us", 0.0) + stats["gate_us_per_frame"] * stats["analysed_frames"]
    total["inference_ms"] = total.get("inference_ms", 0.0) + stats["inference_ms_per_run"] * stats["inferences_run"]
    for reason, count in stats["runs_by_reason"].items():
        total.setdefault("runs_by_reason", {})
        total["runs_by_reason"][reason] = total["runs_by_reason"].get(reason, 0) + count


def compare(off, on, interval_ms):
    """'same' when both runs gave the same events within one interval, else what differs."""
    key = lambda e: (e["event"], e["kind"], e["zone"])  # noqa: E731
    if [key(e) for e in off] != [key(e) for e in on]:
        return f"DIFFERENT: off {[(key(e), e['t_ms']) for e in off]} on {[(key(e), e['t_ms']) for e in on]}"
    shifts = [e1["t_ms"] - e0["t_ms"] for e0, e1 in zip(off, on)]
    late = [s for s in shifts if abs(s) > interval_ms]
    text = f"same {len(on)} events" + (f", shifts {shifts} ms" if any(shifts) else "")
    return text if not late else "LATE: " + text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="only pairs whose clip or camera name contains this")
    ap.add_argument("--json", metavar="FILE", help="write the figures to FILE")
    ap.add_argument("--no-compare", action="store_true", help="skip the gating-off runs (half the time)")
    args = ap.parse_args()
    ensure_gateway()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gateway-gating-") as workdir:
        for clip, camera in PAIRS:
            if args.only and args.only not in clip and args.only not in camera:
                continue
            if clip == "falls":
                footages = sorted(glob.glob(os.path.join(SHARED, "falls", "*.mp4")))
            elif clip == "plaza":
                footages = [PLAZA]
            else:
                footages = [make_clip(clip)]
            make_config, interval_ms = CAMERAS[camera]
            text = make_config()
            configs = {}
            for gating in (True, False):
                path = os.path.join(workdir, f"{camera}-{'on' if gating else 'off'}.toml")
                with open(path, "w") as f:
                    f.write(text if gating else text.replace("[detector]\n", "[detector]\ngate_max_stale_ms = 0\n", 1))
                configs[gating] = path
            total, comparisons = {}, []
            for footage in footages:
                log(f"{clip} ({os.path.basename(footage)}) x {camera}")
                on_events, on_stats = replay(configs[True], footage, workdir)
                add(total, on_stats)
                if not args.no_compare:
                    off_events, _ = replay(configs[False], footage, workdir)
                    comparisons.append(compare(off_events, on_events, interval_ms))
            analysed = max(1, total["analysed_frames"])
            row = {"clip": clip, "camera": camera, "interval_ms": interval_ms, **total,
                   "saved_share": total["inferences_reused"] / analysed,
                   "gate_us_per_frame": total["gate_us"] / analysed,
                   "inference_ms_per_run": total["inference_ms"] / max(1, total["inferences_run"]),
                   "events_gating_on_vs_off": comparisons}
            rows.append(row)
            print(f"{clip:<13} {camera:<11} analysed {row['analysed_frames']:>5}  run {row['inferences_run']:>5}  "
                  f"reused {row['inferences_reused']:>5}  saved {100 * row['saved_share']:5.1f}%  "
                  f"gate {row['gate_us_per_frame']:6.0f} us/frame  inference {row['inference_ms_per_run']:5.1f} ms/run  "
                  f"runs by reason {row['runs_by_reason']}  events: {'; '.join(sorted(set(comparisons))) or 'not compared'}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
