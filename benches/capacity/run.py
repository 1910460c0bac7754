#!/usr/bin/python3
"""Capacity benchmark for the gateway (issue 6, "600 cameras on one box").

Runs the real thing end to end on this machine: reference camera streams made
with ffmpeg from the plaza clip, served over RTSP by the project's GStreamer
test server (tests/support/rtsp_server.py --shared), the release gateway with
N cameras pointed at it, and a sampler that reads the gateway's per-thread CPU
(/proc/<pid>/task/*/stat), memory (/proc/<pid>/status) and /metrics every few
seconds over a measured window that follows a warm-up.

Phases (one invocation can run several; they run one after the other against
the same RTSP server, never overlapping, so they do not compete for cores):

  capacity   N cameras (--cameras): plain cameras analysed every
             --interval-ms (10 s) on substreams (--stream sub) or main
             streams (--stream main), K of them fall-watch cameras
             (every_frame decode, 1 s, zone over the frame) and a few
             "incident" cameras with a short-dwell zone so incidents open.
             About 20% of the cameras use H.265 mounts.
  frigate    M ffmpeg processes per variant, the way Frigate-style NVRs
             ingest a camera (--frigate M or --compare M), on the 720p
             2 Mbit/s H.264 main streams: full decode to raw frames at
             0.5 fps, the same with -skip_frame nokey, and receive-only
             (-c copy -f null).
  compare    (--compare M) the frigate phase, then the gateway with M
             main-stream cameras at 2 s, keyframes mode: its ingest + decode
             CPU (all threads except detect-*) per camera, and the ratio.

Detector models: like the shipped configs, the gateway runs [detector] model (square
416x416) and wide_model (416x256): the plain and incident cameras (16:9 substreams, no
fall-watch zone) are analysed with the wide model, the fall-watch cameras with the square one
(README, "Detector models"; /metrics gateway_camera_model_info). `gateway calibrate` measures
both before the phases, and the saturation figure costs each camera at its own model's
isolated cost. -o detector.wide_model=none runs every camera on the square model.

Reference streams (cached in .cache/capacity/, made only when missing):
25 fps, keyframe every 2 s (GOP 50), no B-frames, Annex B elementary streams
with access unit delimiters: main 1280x720 at 2 Mbit/s and sub 640x360 at
512 kbit/s, each in H.264 (libx264) and H.265 (libx265), 30 s, looped forever
by the server.

Examples:
  python3 benches/capacity/run.py --cameras 50 --window 60 --json out.json
  python3 benches/capacity/run.py --cameras 600 --warmup 30 --window 120
  python3 benches/capacity/run.py --compare 10 --json compare.json
  python3 benches/capacity/run.py --cameras 20 --frigate 4

Needs: ffmpeg, Debian's /usr/bin/python3 with python3-gi and the GStreamer
RTSP server (scripts/setup --for-tests), the ONNX Runtime library and model
(scripts/setup); builds target/release/gateway when it is missing or older
than the sources (cargo build --release). Standard library only.
Every child process (RTSP server, gateway, ffmpeg) is stopped on exit or
Ctrl-C.
"""
import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(ROOT, "..", "shared")
CLIP = os.path.join(SHARED, "media", "vtest_plaza_768x576_10fps_gop20.mp4")
CACHE = os.path.join(ROOT, ".cache", "capacity")
GATEWAY = os.path.join(ROOT, "target", "release", "gateway")
RTSP_SERVER = os.path.join(ROOT, "tests", "support", "rtsp_server.py")
MODEL_MANIFEST = os.path.join(ROOT, "models", "yolox_nano.toml")
WIDE_MODEL_MANIFEST = os.path.join(ROOT, "models", "yolox_nano_416x256.toml")
ORT_LIBRARY = os.path.join(ROOT, ".cache", "onnxruntime", "1.31.1", "libonnxruntime.so")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FPS = 25
STREAM_SECONDS = 30  # 750 frames = 15 whole GOPs: the loop point is a keyframe
TOKEN_ENV = "GATEWAY_CONSOLE_TOKEN"

# Stream kinds: (stream, codec) -> size and bit rate.
STREAMS = {
    ("sub", "h264"): ("640x360", "512k"),
    ("sub", "h265"): ("640x360", "512k"),
    ("main", "h264"): ("1280x720", "2M"),
    ("main", "h265"): ("1280x720", "2M"),
}
EXT = {"h264": "h264", "h265": "h265"}

# The three ways a Frigate-style NVR can take in a camera with ffmpeg.
FFMPEG_VARIANTS = {
    "decode": ([], ["-r", "0.5", "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:"]),
    "decode_keyframes": (["-skip_frame", "nokey"],
                         ["-r", "0.5", "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:"]),
    "receive_only": ([], ["-c", "copy", "-f", "null", "-"]),
}
FFMPEG_VARIANT_TEXT = {
    "decode": "ffmpeg decode -> rawvideo 0.5 fps",
    "decode_keyframes": "ffmpeg -skip_frame nokey decode",
    "receive_only": "ffmpeg receive only (-c copy)",
}

CHILDREN = []  # every Popen we started, stopped by stop_all()


def log(message):
    print(f"[capacity] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Child processes


def _die_with_parent():
    """preexec_fn: children get SIGTERM if this harness dies (even SIGKILL)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


def spawn(cmd, **kwargs):
    """Starts a child that stop_all() will stop."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent, **kwargs)
    CHILDREN.append(proc)
    return proc


def stop(proc, grace=10.0):
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
    if proc in CHILDREN:
        CHILDREN.remove(proc)


def stop_all():
    """Stops every child still running (terminate all, then kill stragglers)."""
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                proc.terminate()
            except ProcessLookupError:
                pass
    deadline = time.time() + 10
    for proc in list(CHILDREN):
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    CHILDREN.clear()


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------
# Reference streams


def stream_path(stream, codec):
    return os.path.join(CACHE, f"{stream}_{codec}.{EXT[codec]}")


def make_streams():
    """Makes the four reference streams in .cache/capacity/ when missing."""
    if not os.path.isfile(CLIP):
        sys.exit(f"capacity: the plaza clip is missing: {CLIP} (expected ../shared beside the checkout)")
    os.makedirs(CACHE, exist_ok=True)
    for (stream, codec), (size, rate) in STREAMS.items():
        path = stream_path(stream, codec)
        width, height = size.split("x")
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
               "-stream_loop", "-1", "-i", CLIP, "-t", str(STREAM_SECONDS), "-an",
               "-vf", f"fps={FPS},scale={width}:{height}", "-pix_fmt", "yuv420p",
               "-b:v", rate, "-maxrate", rate, "-bufsize", bufsize(rate)]
        if codec == "h264":
            cmd += ["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-keyint_min", "50",
                    "-sc_threshold", "0", "-bf", "0", "-x264-params", "aud=1", "-f", "h264"]
        else:
            # open-gop=0: every keyframe an IDR, as cameras send (x265's default open GOP
            # makes CRA keyframes, which the gateway's RTSP client does not take as keyframes).
            cmd += ["-c:v", "libx265", "-preset", "veryfast", "-x265-params",
                    "keyint=50:min-keyint=50:bframes=0:scenecut=0:open-gop=0:aud=1:log-level=error",
                    "-f", "hevc"]
        # The command is kept beside the stream: a changed recipe makes it again.
        stamp = path + ".cmd"
        recipe = " ".join(cmd[cmd.index("-t"):])
        if os.path.isfile(path) and os.path.isfile(stamp) and open(stamp).read() == recipe:
            continue
        log(f"making {os.path.relpath(path, ROOT)} ({size}, {rate}bit/s, {codec}; a minute or two)")
        partial = path + ".partial"
        subprocess.run(cmd + [partial], check=True, stdin=subprocess.DEVNULL)
        os.replace(partial, path)
        with open(stamp, "w") as f:
            f.write(recipe)


def bufsize(rate):
    """Twice the bit rate ("2M" -> "4M", "512k" -> "1024k")."""
    return f"{int(rate[:-1]) * 2}{rate[-1]}"


# --------------------------------------------------------------------------
# RTSP server


class RtspServer:
    """tests/support/rtsp_server.py --shared with a few mounts per stream kind."""

    def __init__(self, h264_mounts, h265_mounts, logdir):
        self.mounts = {}  # (stream, codec) -> ["/sub-h264-0", ...]
        args = ["/usr/bin/python3", RTSP_SERVER, "--shared", "--bind", "127.0.0.1",
                "--port", "0", "--fps", str(FPS)]
        for (stream, codec) in STREAMS:
            count = h264_mounts if codec == "h264" else h265_mounts
            paths = [f"/{stream}-{codec}-{i}" for i in range(count)]
            self.mounts[stream, codec] = paths
            for path in paths:
                args += ["--mount", f"{path}={stream_path(stream, codec)}:{codec}"]
        self.log_path = os.path.join(logdir, "rtsp_server.log")
        self.proc = spawn(args, stdout=subprocess.PIPE, stderr=open(self.log_path, "w"), text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("READY port="):
            sys.exit(f"capacity: RTSP server did not start ({line!r}):\n{tail(self.log_path)}")
        self.port = int(line.split("=", 1)[1])
        log(f"RTSP server on 127.0.0.1:{self.port}, "
            f"{sum(len(p) for p in self.mounts.values())} shared mounts")

    def url(self, stream, codec, index):
        """The index-th camera's URL among the mounts of that kind (round robin)."""
        paths = self.mounts[stream, codec]
        return f"rtsp://127.0.0.1:{self.port}{paths[index % len(paths)]}"

    def check_alive(self):
        if self.proc.poll() is not None:
            sys.exit(f"capacity: RTSP server exited ({self.proc.returncode}):\n{tail(self.log_path)}")


def probe(url, seconds=3):
    """Receives `seconds` of a mount with ffmpeg; returns (ok, frames)."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-progress", "pipe:1",
           "-rtsp_transport", "tcp", "-i", url, "-t", str(seconds), "-c", "copy", "-f", "null", "-"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    frames = [int(m) for m in re.findall(r"^frame=(\d+)", result.stdout, re.M)]
    return result.returncode == 0, (frames[-1] if frames else 0)


# --------------------------------------------------------------------------
# Gateway config


def camera_table(cam_id, url, interval_ms, decode, zones, grid):
    lines = [f"[cameras.{cam_id}]",
             f'url = "{url}"',
             'street = "Lixia"',
             'community = "Capacity bench"',
             f'grid = "{grid}"',
             'steward = "steward-bench"',
             f"analysis_interval_ms = {interval_ms}",
             f'decode = "{decode}"']
    for zone in zones:
        lines += ["", f"[[cameras.{cam_id}.zones]]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in zone.items()]
    return "\n".join(lines) + "\n"


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


WHOLE_FRAME = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
# Fall-watch as shipped (config/examples/fall_watch.toml): nobody walking is down.
FALL_ZONE = {"id": "courtyard", "kind": "fall_watch", "polygon": WHOLE_FRAME}
# "Incident" cameras: the plaza has people but no bikes, so the no-parking zone watches
# persons who stand still 5 s (within the tracker's stationary radius), and clears fast.
INCIDENT_ZONE = {"id": "plaza", "kind": "no_parking", "polygon": WHOLE_FRAME,
                 "classes": ["person"], "dwell_ms": 5000, "clear_after_ms": 10000,
                 "cooldown_ms": 10000}
# Plain cameras: a no-parking zone (bikes, the shipped defaults) over the frame's lower half,
# so each does the work a real camera does. People cross it all through the plaza clip (the
# walkway reaches it on the right): benches/gating/run.py measured 0 of 60 inferences saved on
# it at 10 s (every one "changed"), so change gating is measured on moving people, not a still.
LOWER_HALF = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
PLAIN_ZONE = {"id": "pavement", "kind": "no_parking", "polygon": LOWER_HALF}


def plan_cameras(args, server, count, stream, fall_watch, incident_cams, interval_ms,
                 decode="keyframes"):
    """The camera mix: list of dicts (id, role, url, codec, interval, decode, zones)."""
    cameras = []
    fall_watch = min(fall_watch, count)
    incident_cams = min(incident_cams, count - fall_watch)
    counters = {}

    def url_for(stream_kind, index):
        # Every 5th camera of each role uses H.265 (20%), unless --h265-share says otherwise.
        codec = "h265" if args.h265_share > 0 and index % round(1 / args.h265_share) == \
            round(1 / args.h265_share) - 1 else "h264"
        n = counters.get((stream_kind, codec), 0)
        counters[stream_kind, codec] = n + 1
        return server.url(stream_kind, codec, n), codec

    for i in range(fall_watch):
        url, codec = url_for("sub", i)
        cameras.append(dict(id=f"fall-{i:03d}", role="fall_watch", url=url, codec=codec,
                            stream="sub", interval_ms=1000, decode="every_frame",
                            zones=[FALL_ZONE]))
    for i in range(incident_cams):
        url, codec = url_for(stream, i)
        cameras.append(dict(id=f"zone-{i:03d}", role="incident", url=url, codec=codec,
                            stream=stream, interval_ms=args.incident_interval_ms,
                            decode="keyframes", zones=[INCIDENT_ZONE]))
    for i in range(count - fall_watch - incident_cams):
        url, codec = url_for(stream, i)
        cameras.append(dict(id=f"cam-{i:04d}", role="plain", url=url, codec=codec,
                            stream=stream, interval_ms=interval_ms, decode=decode, zones=[PLAIN_ZONE]))
    return cameras


def write_config(workdir, cameras, console_port, options):
    """Writes gateway.toml for `cameras`; options: {"section.key": "raw TOML value"}."""
    sections = {
        "detector": {"model": json.dumps(MODEL_MANIFEST), "wide_model": json.dumps(WIDE_MODEL_MANIFEST)},
        "storage": {"state_dir": json.dumps(os.path.join(workdir, "state"))},
        "console": {"bind": json.dumps(f"127.0.0.1:{console_port}"),
                    "token_env": json.dumps(TOKEN_ENV)},
        "limits": {"max_cameras": str(max(1000, len(cameras)))},
    }
    for key, value in options.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    if sections["detector"].get("wide_model") == "none":
        del sections["detector"]["wide_model"]  # one model for every camera
    text = ["# Capacity benchmark config, written by benches/capacity/run.py\n"]
    for section, values in sections.items():
        text.append(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    for cam in cameras:
        text.append(camera_table(cam["id"], cam["url"], cam["interval_ms"], cam["decode"],
                                 cam["zones"], f"bench-{cam['role'].replace('_', '-')}"))
    path = os.path.join(workdir, "gateway.toml")
    with open(path, "w") as f:
        f.write("\n".join(text))
    return path


def gateway_env():
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", ORT_LIBRARY)
    env[TOKEN_ENV] = secrets.token_hex(16)
    return env


def check_config(path, env):
    result = subprocess.run([GATEWAY, "check-config", path], capture_output=True, text=True,
                            env=env, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        sys.exit(f"capacity: gateway check-config {path} failed ({result.returncode}):\n"
                 f"{result.stdout}{result.stderr}")


def ensure_gateway(build):
    """Builds the release binary when missing or older than the sources."""
    newest = 0.0
    for top in ("src", "Cargo.toml", "Cargo.lock", "build.rs"):
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            newest = max(newest, os.path.getmtime(path))
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                newest = max(newest, os.path.getmtime(os.path.join(dirpath, name)))
    stale = not os.path.isfile(GATEWAY) or os.path.getmtime(GATEWAY) < newest
    if stale and build:
        log("building target/release/gateway (cargo build --release)")
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True,
                       stdin=subprocess.DEVNULL)
    elif stale:
        if not os.path.isfile(GATEWAY):
            sys.exit("capacity: target/release/gateway is missing (run without --no-build)")
        log("warning: target/release/gateway is older than the sources (--no-build)")
    lib = os.environ.get("ORT_DYLIB_PATH", ORT_LIBRARY)
    if not os.path.isfile(lib):
        sys.exit(f"capacity: ONNX Runtime library {lib} not found: run scripts/setup")


def calibrate_models(options):
    """The model manifests the gateway phases run, by variant: {"square": path, "wide": path}
    (`-o detector.model=...` / `-o detector.wide_model=...`, TOML strings relative to the
    repository root; `-o detector.wide_model=none`: square only), so that calibrate measures
    the same models."""
    import tomllib

    def manifest(key, default):
        value = options.get(key)
        if value is None:
            return default
        if value == "none":
            return None
        path = tomllib.loads(f"v = {value}")["v"]
        return path if os.path.isabs(path) else os.path.join(ROOT, path)

    models = {"square": manifest("detector.model", MODEL_MANIFEST),
              "wide": manifest("detector.wide_model", WIDE_MODEL_MANIFEST)}
    return {variant: path for variant, path in models.items() if path}


def calibrate(models, frames=50):
    """`gateway calibrate` on each reference stream with each model: the isolated CPU cost of
    one analysed frame (keyframe decode + preprocess + inference, one thread), measured before
    the phases on the otherwise idle machine, with the models the phases run.
    {"sub/h264": {"square": {...}, "wide": {...}}, ...}"""
    env = gateway_env()
    costs = {}
    for stream in ("sub", "main"):
        for codec in ("h264", "h265"):
            for variant, model in models.items():
                result = subprocess.run([GATEWAY, "calibrate", "--json", "--frames", str(frames),
                                         "--model", model, stream_path(stream, codec)],
                                        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
                if result.returncode != 0:
                    sys.exit(f"capacity: gateway calibrate failed:\n{result.stderr}")
                cost = json.loads(result.stdout.strip().splitlines()[-1])
                cost["variant"] = variant
                costs.setdefault(f"{stream}/{codec}", {})[variant] = cost
    return costs


def camera_cost(costs, cam, variant):
    """The isolated cost of one of `cam`'s frames with the model it ran (`variant` from
    /metrics; when unknown, the rule the gateway applies: the wide model for the harness's
    16:9 cameras without a fall-watch zone, if one was measured)."""
    by_variant = costs[f"{cam['stream']}/{cam['codec']}"]
    if variant not in by_variant:
        variant = "square" if cam["role"] == "fall_watch" or "wide" not in by_variant else "wide"
    return by_variant[variant]


def saturation(res, cameras, costs, nproc):
    """How much of the machine the analysed frames account for at their isolated cost: a frame
    the model ran on at decode + preprocess + inference, one whose detections the change gate
    reused at decode + preprocess only (it ran no model)."""
    seconds = res["window_s"]
    cores = 0.0
    cores_if_all_inferred = 0.0
    for cam in cameras:
        per_camera = res["per_camera"][cam["id"]]
        cost = camera_cost(costs, cam, per_camera.get("model_variant"))
        fps = per_camera["analysed_fps"]
        reused_fps = per_camera.get("reused_fps") or 0.0
        cores += ((fps - reused_fps) * cost["total_ms"]
                  + reused_fps * (cost["decode_ms"] + cost["preprocess_ms"])) / 1000.0
        cores_if_all_inferred += fps * cost["total_ms"] / 1000.0
    available = nproc - res["rtsp_server_cpu_cores"] - res["harness_cpu_cores"]
    return {"analysis_cores_at_isolated_cost": cores,
            "analysis_cores_if_every_frame_inferred": cores_if_all_inferred,
            "share_of_all_cores": cores / nproc,
            "cores_left_by_rtsp_server_and_harness": available,
            "share_of_cores_left": cores / available if available > 0 else None,
            "window_s": seconds}


# --------------------------------------------------------------------------
# Sampling: /proc and /metrics


def proc_ticks(pid):
    """utime + stime of a process (all its threads, also exited ones), in ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid):
    """{tid: (name, utime + stime)} for the live threads of `pid`."""
    out = {}
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/stat") as f:
                data = f.read()
        except OSError:
            continue  # exited meanwhile
        name = data[data.index("(") + 1:data.rindex(")")]
        fields = data.rsplit(")", 1)[1].split()
        out[int(tid)] = (name, int(fields[11]) + int(fields[12]))
    return out


def memory_kb(pid):
    """{"VmHWM": kB, "VmRSS": kB}."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def thread_group(name):
    """Thread name (comm, at most 15 characters) -> group."""
    if name.startswith("detect-"):
        return "detect"
    if re.fullmatch(r"decode-\d+", name):
        return "decode-pool"
    if name.startswith("decode-"):
        return "decode-every-frame"  # decode-<camera id>, truncated to 15 characters
    if name.startswith(("gateway-io", "tokio-runtime")):
        return "tokio (io + blocking)"
    if name == "gateway":
        return "main"
    return "other"


SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> {name: {(("label", "value"), ...): float}}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL_RE.findall(m.group(2) or "")))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.setdefault(m.group(1), {})[labels] = value
    return out


def fetch_metrics(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_metrics(response.read().decode("utf-8", "replace"))


def by_label(metrics, name, label):
    """{label value: value} of one family (absent family -> {})."""
    return {dict(k).get(label, ""): v for k, v in metrics.get(name, {}).items()}


def scalar(metrics, name):
    series = metrics.get(name)
    return sum(series.values()) if series else None


class Sample:
    """One look at the gateway (and the RTSP server) at time t."""

    def __init__(self, gateway_pid, server_pid, metrics_url):
        self.t = time.monotonic()
        self.threads = thread_ticks(gateway_pid)
        self.ticks = proc_ticks(gateway_pid)
        self.memory = memory_kb(gateway_pid)
        self.server_ticks = proc_ticks(server_pid)
        self.harness = os.times()
        try:
            self.metrics = fetch_metrics(metrics_url)
        except OSError as e:
            log(f"warning: /metrics failed: {e}")
            self.metrics = None


def sample_window(gateway, server, metrics_url, window, every):
    """Samples every `every` s for `window` s; returns the samples (first at t=0)."""
    samples = [Sample(gateway.pid, server.proc.pid, metrics_url)]
    start = samples[0].t
    while True:
        now = time.monotonic()
        if now - start >= window - 1e-3:
            break
        time.sleep(min(every, window - (now - start)))
        if gateway.poll() is not None:
            raise RuntimeError(f"gateway exited during the window ({gateway.returncode})")
        server.check_alive()
        samples.append(Sample(gateway.pid, server.proc.pid, metrics_url))
    return samples


# --------------------------------------------------------------------------
# Figures


def thread_cpu(samples):
    """CPU seconds per thread group over the samples (threads born in the window count from
    zero; threads that exited lose their time since the last sample -> "exited threads")."""
    first, last = samples[0], samples[-1]
    groups = {}
    seen_ticks = {}
    for sample in samples[1:]:
        for tid, (name, ticks) in sample.threads.items():
            base = first.threads.get(tid, (name, 0))[1]
            seen_ticks[tid] = (name, ticks - base)
    for name, ticks in seen_ticks.values():
        group = thread_group(name)
        groups[group] = groups.get(group, 0) + ticks
    total = last.ticks - first.ticks
    accounted = sum(groups.values())
    if total - accounted > 0:
        groups["exited threads"] = total - accounted
    return {g: t / CLK_TCK for g, t in groups.items()}, total / CLK_TCK


def top_threads(samples, seconds, count=12):
    """The busiest threads in the window: [(name, tid, cores)]."""
    first, last = samples[0], samples[-1]
    busy = []
    for tid, (name, ticks) in last.threads.items():
        busy.append((name, tid, (ticks - first.threads.get(tid, (name, 0))[1]) / CLK_TCK / seconds))
    return sorted(busy, key=lambda t: -t[2])[:count]


def counter_delta(first, last, name, label="camera"):
    """{label: last - first} for a per-camera counter (cameras missing at the start: 0)."""
    a, b = by_label(first, name, label), by_label(last, name, label)
    return {k: v - a.get(k, 0.0) for k, v in b.items()}


def counter_delta_where(first, last, name, where, label="camera"):
    """{label: last - first} for the series of a counter whose labels include `where`."""
    def pick(metrics):
        out = {}
        for labels, value in metrics.get(name, {}).items():
            d = dict(labels)
            if all(d.get(k) == v for k, v in where.items()):
                out[d.get(label, "")] = value
        return out
    a, b = pick(first), pick(last)
    return {k: v - a.get(k, 0.0) for k, v in b.items()}


def revisit_from_counters(samples, cameras):
    """Worst gap (s) between increases of each camera's analysed counter, within the window
    (resolution: the sampling period). Gaps open at the window's ends count as seen."""
    worst = {}
    good = [s for s in samples if s.metrics is not None]
    if len(good) < 2:
        return worst
    series = [(s.t, by_label(s.metrics, "gateway_detect_frames_analysed_total", "camera")) for s in good]
    for cam in cameras:
        last_change, prev = series[0][0], series[0][1].get(cam, 0)
        gap = 0.0
        for t, values in series[1:]:
            value = values.get(cam, 0)
            if value > prev:
                gap = max(gap, t - last_change)
                last_change, prev = t, value
        worst[cam] = max(gap, series[-1][0] - last_change)
    return worst


def series_stats(metrics_list, name):
    """max / mean / last of an unlabelled gauge over the samples (None if absent)."""
    values = [scalar(m, name) for m in metrics_list]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"max": max(values), "mean": sum(values) / len(values), "last": values[-1]}


def histogram_quantiles(m0, m1, name, qs=(0.5, 0.95, 0.99)):
    """Quantiles (bucket upper bounds) of a histogram's observations within the window."""
    b0 = by_label(m0, name + "_bucket", "le")
    b1 = by_label(m1, name + "_bucket", "le")
    if not b1:
        return None
    bounds = sorted(b1, key=lambda le: float("inf") if le == "+Inf" else float(le))
    counts = [(le, b1[le] - b0.get(le, 0.0)) for le in bounds]
    total = counts[-1][1]
    if total <= 0:
        return {"count": 0}
    out = {"count": total}
    for q in qs:
        out[f"p{int(q * 100)}_le"] = next(le for le, c in counts if c >= q * total)
    return out


def latency_figures(metrics_list, m0, m1, base):
    """A latency summary (_sum, _count, _max, _recent_max) -> figures; None when absent."""
    if f"{base}_count" not in m1 and f"{base}_max" not in m1:
        return None
    out = {}
    count1, sum1 = scalar(m1, f"{base}_count"), scalar(m1, f"{base}_sum")
    if count1 is not None and sum1 is not None:
        count0, sum0 = scalar(m0, f"{base}_count") or 0.0, scalar(m0, f"{base}_sum") or 0.0
        out["count_since_start"] = count1
        out["count_window"] = count1 - count0
        out["mean_window"] = (sum1 - sum0) / (count1 - count0) if count1 > count0 else None
        out["mean_since_start"] = sum1 / count1 if count1 else None
    if f"{base}_max" in m1:
        out["max_since_start"] = max(m1[f"{base}_max"].values())
    recent = series_stats(metrics_list, f"{base}_recent_max")
    if recent is not None:
        out["recent_max_in_window"] = recent["max"]
    return out


def summarise_gateway(samples, cameras):
    """All figures of one gateway phase from its samples."""
    first, last = samples[0], samples[-1]
    seconds = last.t - first.t
    n = len(cameras)
    groups, total = thread_cpu(samples)
    m0, m1 = first.metrics or {}, last.metrics or {}
    res = {"window_s": round(seconds, 1), "cameras": n}
    res["gateway_cpu_cores"] = total / seconds
    res["gateway_cpu_ms_per_s_per_camera"] = 1000 * total / seconds / n if n else None
    res["cpu_cores_by_thread_group"] = {g: v / seconds for g, v in sorted(groups.items())}
    res["cpu_cores_top_threads"] = top_threads(samples, seconds)
    detect = groups.get("detect", 0.0)
    res["ingest_decode_ms_per_s_per_camera"] = 1000 * (total - detect) / seconds / n if n else None
    res["decode_pool_ms_per_s_per_camera"] = 1000 * groups.get("decode-pool", 0.0) / seconds / n if n else None

    analysed = counter_delta(m0, m1, "gateway_detect_frames_analysed_total")
    res["analysed_fps"] = sum(analysed.values()) / seconds
    res["analysed_total"] = sum(analysed.values())
    expected = sum(1000.0 / c["interval_ms"] for c in cameras)
    res["analysed_fps_expected"] = expected
    by_role = {}
    for cam in cameras:
        by_role.setdefault(cam["role"], []).append(analysed.get(cam["id"], 0.0) / seconds)
    res["analysed_fps_by_role"] = {
        role: {"cameras": len(v), "total": sum(v), "mean_per_camera": sum(v) / len(v),
               "min_per_camera": min(v)} for role, v in by_role.items()}
    for name, key in (("gateway_ingest_frames_received_total", "received_fps"),
                      ("gateway_decode_frames_decoded_total", "decoded_fps")):
        res[key] = sum(counter_delta(m0, m1, name).values()) / seconds
    dec_s = sum(counter_delta(m0, m1, "gateway_decode_seconds_total").values())
    inf_s = sum(counter_delta(m0, m1, "gateway_detect_inference_seconds_total").values())
    decoded = sum(counter_delta(m0, m1, "gateway_decode_frames_decoded_total").values())
    res["decode_ms_per_frame"] = 1000 * dec_s / decoded if decoded else None
    # Change gating: analysed frames the model ran on vs those that reused its last detections.
    runs = counter_delta_where(m0, m1, "gateway_detect_inferences_total", {"result": "run"})
    reused = counter_delta_where(m0, m1, "gateway_detect_inferences_total", {"result": "reused"})
    gate_s = sum(counter_delta(m0, m1, "gateway_detect_gate_seconds_total").values())
    if runs or reused:
        gating = {"run": sum(runs.values()), "reused": sum(reused.values()), "by_role": {}}
        gating["saved_share"] = gating["reused"] / max(1.0, gating["run"] + gating["reused"])
        gating["gate_us_per_frame"] = 1e6 * gate_s / max(1.0, gating["run"] + gating["reused"])
        for cam in cameras:
            role = gating["by_role"].setdefault(cam["role"], {"run": 0.0, "reused": 0.0})
            role["run"] += runs.get(cam["id"], 0.0)
            role["reused"] += reused.get(cam["id"], 0.0)
        for role in gating["by_role"].values():
            role["saved_share"] = role["reused"] / max(1.0, role["run"] + role["reused"])
        r0 = by_label(m0, "gateway_detect_gate_runs_total", "reason")
        gating["runs_by_reason"] = {k: v - r0.get(k, 0.0)
                                    for k, v in by_label(m1, "gateway_detect_gate_runs_total", "reason").items()}
        res["gating"] = gating
    # Inference time per frame the model ran on (every analysed frame without gating).
    inferred = sum(runs.values()) if runs else sum(analysed.values())
    res["inference_ms_per_frame"] = 1000 * inf_s / inferred if inferred else None

    skipped = {}
    skipping_cameras = {}
    for labels, value in m1.get("gateway_frames_skipped_total", {}).items():
        d = dict(labels)
        delta = value - m0.get("gateway_frames_skipped_total", {}).get(labels, 0.0)
        skipped[d.get("reason", "")] = skipped.get(d.get("reason", ""), 0.0) + delta
        if delta > 0:
            skipping_cameras[d.get("reason", "")] = skipping_cameras.get(d.get("reason", ""), 0) + 1
    res["frames_skipped"] = {r: {"total": v, "per_s": v / seconds, "cameras": skipping_cameras.get(r, 0)}
                             for r, v in sorted(skipped.items())}
    skipped_by_camera = {}
    for labels, value in m1.get("gateway_frames_skipped_total", {}).items():
        d = dict(labels)
        delta = value - m0.get("gateway_frames_skipped_total", {}).get(labels, 0.0)
        if delta > 0:
            skipped_by_camera.setdefault(d.get("camera", ""), {})[d.get("reason", "")] = delta
    res["reconnects"] = sum(counter_delta(m0, m1, "gateway_ingest_reconnects_total").values())
    res["decode_errors"] = sum(counter_delta(m0, m1, "gateway_decode_errors_total").values())

    # Queue depths: every unlabelled *_queue_depth gauge, and the scheduler's waiting frames.
    good = [s.metrics for s in samples if s.metrics is not None]
    queue_names = sorted({name for m in good for name in m
                          if name.endswith("_queue_depth") or name == "gateway_scheduler_waiting_frames"})
    res["queues"] = {name: series_stats(good, name) for name in queue_names}
    res["scheduler"] = {name.replace("gateway_scheduler_", ""): series_stats(good, name)
                        for name in ("gateway_scheduler_demand_frames_per_second",
                                     "gateway_scheduler_capacity_frames_per_second",
                                     "gateway_scheduler_active_cameras") if name in m1}
    # Frames given to cameras served first only because they waited a minute (their share).
    aged = [scalar(m, "gateway_scheduler_aged_frames_total") for m in (m0, m1)]
    res["aged_frames"] = aged[1] - aged[0] if None not in aged else None

    rss = [s.memory.get("VmRSS", 0) for s in samples]
    res["rss_mib"] = {"peak_VmHWM": last.memory.get("VmHWM", 0) / 1024, "max_VmRSS": max(rss) / 1024,
                      "mean_VmRSS": sum(rss) / len(rss) / 1024}

    states = {}
    for labels, value in m1.get("gateway_camera_state", {}).items():
        if value == 1:
            state = dict(labels).get("state", "")
            states[state] = states.get(state, 0) + 1
    res["cameras_by_state_at_end"] = states

    ids = [c["id"] for c in cameras]
    role_of = {c["id"]: c["role"] for c in cameras}
    revisit = {}
    # gateway_camera_revisit_seconds{camera} is the gap before the latest analysed frame; it
    # holds until the next one. Taken at each sample after which the camera's analysed counter
    # moved (so a gap that ended before the window is not counted), its maximum is the
    # window's worst (for cameras analysed more often than the sampling period, only the last
    # gap of each period is seen; the scheduler's recent-max gauge covers those).
    for before, after in zip(good, good[1:]):
        counts0 = by_label(before, "gateway_detect_frames_analysed_total", "camera")
        counts1 = by_label(after, "gateway_detect_frames_analysed_total", "camera")
        for cam, value in by_label(after, "gateway_camera_revisit_seconds", "camera").items():
            if counts1.get(cam, 0) > counts0.get(cam, 0):
                revisit[cam] = max(revisit.get(cam, 0.0), value)
    if revisit:
        worst = max(revisit.items(), key=lambda kv: kv[1])
        by_role_worst = {}
        for cam, value in revisit.items():
            role = role_of.get(cam, "?")
            by_role_worst[role] = max(by_role_worst.get(role, 0.0), value)
        since_start = by_label(m1, "gateway_camera_revisit_seconds_max", "camera")
        res["revisit_worst_s"] = {
            "source": "gateway_camera_revisit_seconds (max over samples in the window)",
            "camera": worst[0], "seconds": worst[1], "by_role": by_role_worst,
            "since_start_max": max(since_start.values()) if since_start else None,
            "recent_max_gauge": series_stats(good, "gateway_scheduler_revisit_recent_max_seconds")}
        quantiles = histogram_quantiles(m0, m1, "gateway_scheduler_revisit_seconds")
        if quantiles:
            res["revisit_worst_s"]["histogram_window"] = quantiles
    computed = revisit_from_counters(samples, ids)
    if computed:
        worst = max(computed.items(), key=lambda kv: kv[1])
        period = seconds / max(1, len(samples) - 1)
        res["revisit_worst_from_counters_s"] = {
            "camera": worst[0], "seconds": worst[1], "resolution_s": period,
            "cameras_not_analysed_in_window": sum(1 for c in ids if analysed.get(c, 0) <= 0)}
        by_role_worst = {}
        for cam in cameras:
            by_role_worst[cam["role"]] = max(by_role_worst.get(cam["role"], 0.0), computed.get(cam["id"], 0.0))
        res["revisit_worst_from_counters_s"]["by_role"] = by_role_worst

    # The model each camera's latest frame was prepared for (square or wide).
    model_variant = {dict(k).get("camera", ""): dict(k).get("variant")
                     for k in m1.get("gateway_camera_model_info", {})}
    res["cameras_by_model"] = {}
    for c in ids:
        key = f"{role_of[c]}/{model_variant.get(c) or 'none yet'}"
        res["cameras_by_model"][key] = res["cameras_by_model"].get(key, 0) + 1
    res["per_camera"] = {c: {"role": role_of[c], "analysed_fps": round(analysed.get(c, 0.0) / seconds, 4),
                             "model_variant": model_variant.get(c),
                             "reused_fps": round(reused.get(c, 0.0) / seconds, 4),
                             "revisit_window_s": revisit.get(c), "revisit_counters_s": computed.get(c),
                             "skipped": skipped_by_camera.get(c, {})}
                         for c in ids}
    for what in ("incident", "analysis"):
        res[f"{what}_latency_s"] = latency_figures(good, m0, m1, f"gateway_{what}_latency_seconds")

    opened = {}
    for labels, value in m1.get("gateway_incident_events_total", {}).items():
        d = dict(labels)
        key = f"{d.get('kind', '')}/{d.get('event', '')}"
        opened[key] = {"since_start": value,
                       "window": value - m0.get("gateway_incident_events_total", {}).get(labels, 0.0)}
    res["incident_events"] = opened

    server_s = (last.server_ticks - first.server_ticks) / CLK_TCK
    res["rtsp_server_cpu_cores"] = server_s / seconds
    res["rtsp_server_ms_per_s_per_session"] = 1000 * server_s / seconds / n if n else None
    harness = (last.harness.user + last.harness.system) - (first.harness.user + first.harness.system)
    res["harness_cpu_cores"] = harness / seconds
    res["loadavg_end"] = os.getloadavg()
    return res


# --------------------------------------------------------------------------
# Phases


def run_gateway_phase(args, server, cameras, workdir, label):
    """Starts the gateway on `cameras`, warms up, samples the window, stops it."""
    phase_dir = os.path.join(workdir, label)
    os.makedirs(phase_dir, exist_ok=True)
    console_port = free_port()
    options = dict(opt.split("=", 1) for opt in args.gateway_option)
    config = write_config(phase_dir, cameras, console_port, options)
    env = gateway_env()
    check_config(config, env)
    log(f"{label}: gateway with {len(cameras)} cameras, config {config}")
    log_path = os.path.join(phase_dir, "gateway.log")
    run_for = int(args.warmup + args.window) + 120  # safety net; we stop it ourselves
    gateway = spawn([GATEWAY, "run", "--config", config, "--run-for-secs", str(run_for)],
                    stdout=subprocess.DEVNULL, stderr=open(log_path, "w"), env=env, cwd=phase_dir)
    metrics_url = f"http://127.0.0.1:{console_port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while True:
            if gateway.poll() is not None:
                sys.exit(f"capacity: gateway exited ({gateway.returncode}) at start:\n{tail(log_path)}")
            try:
                fetch_metrics(metrics_url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"capacity: gateway console did not answer in 60 s:\n{tail(log_path)}")
                time.sleep(0.5)
        log(f"{label}: warm-up {args.warmup} s")
        time.sleep(args.warmup)
        at_start = fetch_metrics(metrics_url)
        online = sum(1 for k, v in at_start.get("gateway_camera_state", {}).items()
                     if v == 1 and dict(k).get("state") == "online")
        log(f"{label}: {online}/{len(cameras)} cameras online; measuring {args.window} s")
        samples = sample_window(gateway, server, metrics_url, args.window, args.sample_every)
    except RuntimeError as e:
        sys.exit(f"capacity: {e}\n{tail(log_path)}")
    finally:
        stop(gateway, grace=15)
    res = summarise_gateway(samples, cameras)
    res["phase"] = label
    res["gateway_log"] = log_path
    res["config"] = config
    roles = {}
    for cam in cameras:
        roles[cam["role"]] = roles.get(cam["role"], 0) + 1
    res["camera_mix"] = roles
    res["h265_cameras"] = sum(1 for c in cameras if c["codec"] == "h265")
    return res


def run_ffmpeg_phase(args, server, count, variant, workdir):
    """M ffmpeg processes of one variant on the main H.264 mounts: CPU per camera."""
    pre, post = FFMPEG_VARIANTS[variant]
    procs = []
    log_path = os.path.join(workdir, f"ffmpeg_{variant}.log")
    log_file = open(log_path, "w")
    for i in range(count):
        url = server.url("main", "h264", i)
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", *pre,
               "-rtsp_transport", "tcp", "-i", url, *post]
        procs.append(spawn(cmd, stdout=subprocess.DEVNULL, stderr=log_file))
    try:
        log(f"ffmpeg {variant}: {count} processes, warm-up {args.ffmpeg_warmup} s, window {args.window} s")
        time.sleep(args.ffmpeg_warmup)
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            sys.exit(f"capacity: {len(dead)} ffmpeg ({variant}) exited early:\n{tail(log_path)}")
        t0, s0 = time.monotonic(), proc_ticks(server.proc.pid)
        c0 = {p.pid: proc_ticks(p.pid) for p in procs}
        time.sleep(args.window)
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            sys.exit(f"capacity: {len(dead)} ffmpeg ({variant}) exited during the window:\n{tail(log_path)}")
        c1 = {p.pid: proc_ticks(p.pid) for p in procs}
        t1, s1 = time.monotonic(), proc_ticks(server.proc.pid)
    finally:
        for p in procs:
            stop(p)
        log_file.close()
    seconds = t1 - t0
    per = [(c1[pid] - c0[pid]) / CLK_TCK for pid in c0]
    return {"variant": variant, "processes": count, "window_s": round(seconds, 1),
            "cpu_cores": sum(per) / seconds,
            "ms_per_s_per_camera": 1000 * sum(per) / seconds / count,
            "ms_per_s_per_camera_max": 1000 * max(per) / seconds,
            "rtsp_server_cpu_cores": (s1 - s0) / CLK_TCK / seconds}


# --------------------------------------------------------------------------
# Report


def fmt(value, digits=2):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_gateway(res, title):
    rows = [(title, "")]
    mix = ", ".join(f"{v} {k}" for k, v in res["camera_mix"].items())
    rows.append(("cameras", f"{res['cameras']} ({mix}; {res['h265_cameras']} on H.265)"))
    rows.append(("window", f"{res['window_s']} s"))
    if res.get("cameras_by_model"):
        rows.append(("detector model (role/variant)",
                     ", ".join(f"{v} {k}" for k, v in sorted(res["cameras_by_model"].items()))))
    rows.append(("gateway CPU", f"{fmt(res['gateway_cpu_cores'])} cores = "
                 f"{fmt(res['gateway_cpu_ms_per_s_per_camera'])} ms/s per camera"))
    for group, cores in res["cpu_cores_by_thread_group"].items():
        rows.append((f"  {group}", f"{fmt(cores, 3)} cores"))
    rows.append(("ingest+decode (all but detect)", f"{fmt(res['ingest_decode_ms_per_s_per_camera'], 3)} ms/s per camera"))
    rows.append(("decode pool only", f"{fmt(res['decode_pool_ms_per_s_per_camera'], 3)} ms/s per camera"))
    rows.append(("analysed frames/s", f"{fmt(res['analysed_fps'])} (expected {fmt(res['analysed_fps_expected'])})"))
    for role, v in res["analysed_fps_by_role"].items():
        rows.append((f"  {role}", f"{v['cameras']} cams: total {fmt(v['total'])}, per camera "
                     f"mean {fmt(v['mean_per_camera'], 3)} min {fmt(v['min_per_camera'], 3)}"))
    rows.append(("received / decoded frames/s", f"{fmt(res['received_fps'], 1)} / {fmt(res['decoded_fps'], 1)}"))
    rows.append(("decode / inference ms per frame",
                 f"{fmt(res['decode_ms_per_frame'])} / {fmt(res['inference_ms_per_frame'])}"
                 + (" (inference: per frame the model ran on)" if "gating" in res else "")))
    if "gating" in res:
        g = res["gating"]
        rows.append(("change gating: inferences run / reused", f"{fmt(g['run'], 0)} / {fmt(g['reused'], 0)} "
                     f"({fmt(100 * g['saved_share'], 1)}% saved; gate {fmt(g['gate_us_per_frame'], 0)} us/frame)"))
        for role, v in sorted(g["by_role"].items()):
            rows.append((f"  {role}", f"run {fmt(v['run'], 0)}, reused {fmt(v['reused'], 0)} "
                         f"({fmt(100 * v['saved_share'], 1)}% saved)"))
        rows.append(("  model ran because", ", ".join(
            f"{k} {fmt(v, 0)}" for k, v in sorted(g["runs_by_reason"].items())) or "n/a"))
    skipped = res["frames_skipped"]
    rows.append(("frames skipped", ", ".join(
        f"{r} {fmt(v['total'], 0)} ({v['cameras']} cams)" for r, v in skipped.items()) or "none"))
    for name, q in res["queues"].items():
        rows.append((name.replace("gateway_", ""), f"max {fmt(q['max'], 0)}, mean {fmt(q['mean'])}"))
    rss = res["rss_mib"]
    rows.append(("RSS", f"peak (VmHWM) {fmt(rss['peak_VmHWM'], 0)} MiB, max in window "
                 f"{fmt(rss['max_VmRSS'], 0)} MiB"))
    rows.append(("cameras by state at end", ", ".join(f"{k} {v}" for k, v in sorted(res["cameras_by_state_at_end"].items()))))
    rows.append(("reconnects / decode errors", f"{fmt(res['reconnects'], 0)} / {fmt(res['decode_errors'], 0)}"))
    if res.get("aged_frames") is not None:
        rows.append(("frames for aged cameras (waited 60 s)", f"{res['aged_frames']:.0f} "
                     f"({res['aged_frames'] / max(res['analysed_total'], 1) * 100:.1f} % of analysed)"))
    if res["scheduler"]:
        rows.append(("scheduler (mean/max)", ", ".join(
            f"{k} {fmt(v['mean'], 1)}/{fmt(v['max'], 1)}" for k, v in res["scheduler"].items() if v)))
    if "revisit_worst_s" in res:
        r = res["revisit_worst_s"]
        roles = ", ".join(f"{k} {fmt(v, 1)}" for k, v in sorted(r["by_role"].items()))
        hist = r.get("histogram_window") or {}
        hist_text = (f"; p50/p95/p99 <= {hist['p50_le']}/{hist['p95_le']}/{hist['p99_le']} s"
                     if "p50_le" in hist else "")
        rows.append(("worst revisit in window (metric)", f"{fmt(r['seconds'], 1)} s ({r['camera']}; {roles}"
                     f"{hist_text}; since start {fmt(r['since_start_max'], 1)} s)"))
    if "revisit_worst_from_counters_s" in res:
        r = res["revisit_worst_from_counters_s"]
        roles = ", ".join(f"{k} {fmt(v, 1)}" for k, v in sorted(r["by_role"].items()))
        rows.append(("worst revisit (counters)", f"{fmt(r['seconds'], 1)} s ({r['camera']}; ±{fmt(r['resolution_s'], 1)} s; "
                     f"{roles}; {r['cameras_not_analysed_in_window']} cams never analysed)"))
    for what in ("analysis", "incident"):
        lat = res[f"{what}_latency_s"]
        label = "frame-to-detections latency" if what == "analysis" else "frame-to-incident latency"
        rows.append((label, "metric absent" if lat is None else
                     f"mean {fmt(lat.get('mean_window'), 3)} s over {fmt(lat.get('count_window'), 0)} in window, "
                     f"max {fmt(lat.get('recent_max_in_window'), 3)} s in window, "
                     f"{fmt(lat.get('max_since_start'), 3)} s since start"))
    events = res["incident_events"]
    rows.append(("incident events (window/since start)", ", ".join(
        f"{k} {fmt(v['window'], 0)}/{fmt(v['since_start'], 0)}" for k, v in sorted(events.items())) or "none"))
    if "saturation" in res:
        sat = res["saturation"]
        rows.append(("analysed frames at isolated cost", f"{fmt(sat['analysis_cores_at_isolated_cost'])} cores = "
                     f"{fmt(100 * sat['share_of_all_cores'], 1)}% of all cores, "
                     f"{fmt(100 * (sat['share_of_cores_left'] or 0), 1)}% of the "
                     f"{fmt(sat['cores_left_by_rtsp_server_and_harness'])} cores the RTSP server and harness leave"
                     f" (reused frames at decode cost; {fmt(sat['analysis_cores_if_every_frame_inferred'])} cores "
                     f"if every analysed frame were inferred)"))
    rows.append(("RTSP server CPU", f"{fmt(res['rtsp_server_cpu_cores'], 3)} cores = "
                 f"{fmt(res['rtsp_server_ms_per_s_per_session'], 3)} ms/s per session"))
    rows.append(("harness CPU / load avg", f"{fmt(res['harness_cpu_cores'], 3)} cores / "
                 + " ".join(f"{x:.2f}" for x in res["loadavg_end"])))
    print_rows(rows)


def print_rows(rows):
    width = max(len(r[0]) for r in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}" if value != "" else f"== {key} ==")
    sys.stdout.flush()


def print_comparison(ffmpeg, gateway):
    rows = [("Frigate-style comparison (720p 2 Mbit/s H.264 main streams)", "")]
    for v in ffmpeg:
        rows.append((FFMPEG_VARIANT_TEXT[v["variant"]],
                     f"{fmt(v['ms_per_s_per_camera'], 2)} ms/s per camera ({v['processes']} procs, "
                     f"{fmt(v['cpu_cores'], 3)} cores; RTSP server {fmt(v['rtsp_server_cpu_cores'], 3)})"))
    if gateway is not None:
        g = gateway["ingest_decode_ms_per_s_per_camera"]
        rows.append(("gateway ingest+decode (2 s, keyframes)", f"{fmt(g, 3)} ms/s per camera"))
        rows.append(("gateway decode pool only", f"{fmt(gateway['decode_pool_ms_per_s_per_camera'], 3)} ms/s per camera"))
        for v in ffmpeg:
            ratio = v["ms_per_s_per_camera"] / g if g else None
            rows.append((f"ratio {v['variant']} / gateway", f"{fmt(ratio, 1)}"
                         + (" (target >= 15)" if v["variant"] == "decode" else "")))
    print_rows(rows)


# --------------------------------------------------------------------------


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog=__doc__.split("\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", "-n", type=int, default=None,
                    help="N cameras in the capacity phase (default 20; 0 with --compare: no "
                    "capacity phase)")
    ap.add_argument("--stream", choices=["sub", "main"], default="sub",
                    help="plain and incident cameras read substreams (640x360 512k, default) "
                    "or main streams (1280x720 2M)")
    ap.add_argument("--interval-ms", type=int, default=10000,
                    help="analysis interval of the plain cameras (10000)")
    ap.add_argument("--fall-watch", "-k", type=int, default=None,
                    help="K of the N cameras are fall-watch cameras: every_frame decode, 1 s, "
                    "substream (default min(30, N // 20))")
    ap.add_argument("--incident-cameras", type=int, default=5,
                    help="this many of the N cameras get a no-parking zone on persons with a 5 s "
                    "dwell, so incidents open (5)")
    ap.add_argument("--incident-interval-ms", type=int, default=2000,
                    help="their analysis interval (2000: incidents open within seconds, so the "
                    "window sees frame-to-incident latencies)")
    ap.add_argument("--h265-share", type=float, default=0.2,
                    help="share of the cameras (of each role) on H.265 mounts (0.2; 0: none)")
    ap.add_argument("--mounts", type=int, default=4,
                    help="shared H.264 mounts per stream kind; H.265 gets a quarter, at least 1 (4)")
    ap.add_argument("--warmup", type=float, default=20, help="seconds before the window (20)")
    ap.add_argument("--window", type=float, default=60, help="measured seconds per phase (60)")
    ap.add_argument("--sample-every", type=float, default=2, help="sampling period, s (2)")
    ap.add_argument("--frigate", type=int, default=0, metavar="M",
                    help="also run M Frigate-style ffmpeg processes per variant (after the "
                    "capacity phase)")
    ap.add_argument("--compare", type=int, default=0, metavar="M",
                    help="Frigate-style ffmpeg on M main streams, then the gateway with M "
                    "main-stream cameras at 2 s in keyframes mode; prints the ratio")
    ap.add_argument("--ffmpeg-warmup", type=float, default=5,
                    help="seconds the ffmpeg processes run before their window (5)")
    ap.add_argument("--gateway-option", "-o", action="append", default=[], metavar="SECTION.KEY=TOML",
                    help='extra config, e.g. -o decode.workers=2 -o detector.sessions=2 '
                    '-o \'ingest.no_frame_timeout_ms=30000\' (value is raw TOML)')
    ap.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (configs, logs, state)")
    ap.add_argument("--no-build", action="store_true",
                    help="do not run cargo build --release even if the binary is stale")
    args = ap.parse_args()
    if args.cameras is None:
        args.cameras = 0 if args.compare else 20
    if args.fall_watch is None:
        args.fall_watch = min(30, args.cameras // 20)
    if not 0 <= args.h265_share <= 1:
        ap.error("--h265-share must be in [0, 1]")
    for opt in args.gateway_option:
        if "=" not in opt or "." not in opt.split("=", 1)[0]:
            ap.error(f"--gateway-option {opt!r}: expected SECTION.KEY=VALUE")
    if args.cameras <= 0 and not args.compare and not args.frigate:
        ap.error("nothing to do: give --cameras N, --frigate M or --compare M")
    return args


def main():
    args = parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in background
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    workdir = tempfile.mkdtemp(prefix="gateway-capacity-")
    results = {"args": vars(args), "nproc": os.cpu_count(), "workdir": workdir}
    finished = False
    try:
        make_streams()
        if args.cameras or args.compare:
            ensure_gateway(not args.no_build)
        if args.cameras or args.compare:
            costs = calibrate(calibrate_models(dict(opt.split("=", 1) for opt in args.gateway_option)))
            results["calibrate"] = costs
            print_rows([("Isolated cost of one analysed frame (gateway calibrate, CPU ms)", "")] + [
                (f"{kind} {variant} ({c['model_input']})",
                 f"decode {c['decode_ms']:.2f} + preprocess {c['preprocess_ms']:.2f} + "
                 f"inference {c['inference_ms']:.2f} = {c['total_ms']:.2f} ms "
                 f"({c['frames']} keyframes)")
                for kind, by_variant in costs.items() for variant, c in by_variant.items()])
        server = RtspServer(args.mounts, max(1, args.mounts // 4), workdir)
        for kind in (("sub", "h265"), ("main", "h264")):
            ok, frames = probe(server.url(*kind, 0), seconds=2)
            if not ok or frames == 0:
                sys.exit(f"capacity: RTSP mount {server.mounts[kind][0]} does not stream:\n{tail(server.log_path)}")
        if args.cameras:
            cameras = plan_cameras(args, server, args.cameras, args.stream, args.fall_watch,
                                   args.incident_cameras, args.interval_ms)
            res = run_gateway_phase(args, server, cameras, workdir, "capacity")
            res["stream"] = args.stream
            res["saturation"] = saturation(res, cameras, costs, os.cpu_count())
            results["capacity"] = res
            print_gateway(res, f"Capacity: {args.cameras} cameras, {args.stream} streams, "
                          f"plain every {args.interval_ms} ms")
        m = args.compare or args.frigate
        if m:
            ffmpeg = [run_ffmpeg_phase(args, server, m, v, workdir) for v in FFMPEG_VARIANTS]
            results["frigate"] = ffmpeg
            gateway = None
            if args.compare:
                cams = [dict(id=f"main-{i:03d}", role="plain", url=server.url("main", "h264", i),
                             codec="h264", stream="main", interval_ms=2000, decode="keyframes",
                             zones=[PLAIN_ZONE])
                        for i in range(m)]
                gateway = run_gateway_phase(args, server, cams, workdir, "compare")
                results["compare_gateway"] = gateway
                print_gateway(gateway, f"Comparison, gateway side: {m} main-stream cameras, 2 s, keyframes")
                g = gateway["ingest_decode_ms_per_s_per_camera"]
                results["compare_ratio"] = {v["variant"]: (v["ms_per_s_per_camera"] / g if g else None)
                                            for v in ffmpeg}
            print_comparison(ffmpeg, gateway)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2, default=str)
            log(f"figures written to {args.json}")
        finished = True
    finally:
        stop_all()
        if args.keep or not finished:
            log(f"kept {workdir} (configs, logs)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; child processes stopped")
        sys.exit(130)
