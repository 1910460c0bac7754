#!/usr/bin/python3
"""Small RTSP test server for the gateway's integration tests and benchmarks.

Serves one or more H.264 / H.265 Annex B elementary-stream files over RTSP,
looping each file forever *without re-encoding*:

    appsrc (AUs from memory) ! h264parse|h265parse ! rtph26Xpay name=pay0

Each file is read and split into access units (AUs) once at startup; every
RTSP session gets its own media pipeline (factory.set_shared(False)) that
pushes those shared, immutable buffers with its own monotonically increasing
timestamps (pts = frame_index * frame_duration, also across loops).  The
RTSP server's sinks sync on the clock, so delivery is paced in real time
from the PLAY response on (no initial burst).

With --shared, each mount has one media pipeline that serves all of its
clients at once (factory.set_shared(True)), as a camera serves several
viewers: a client that joins later starts mid-stream, at the next keyframe
it waits for.  That is what the capacity benchmark (benches/capacity/) uses,
hundreds of sessions on a few mounts; the default, one pipeline per
session, is what the integration tests use.

Usage:
    rtsp_server.py --port 0 [--bind 127.0.0.1] [--fps 25] [--shared]
                   [--user U --password P]
                   --mount /h264=clip.h264:h264 [--mount /h265=clip.h265:h265]

Once listening it prints exactly one line ``READY port=<port>`` to stdout.
With --user/--password every request must use RTSP Digest authentication
(or Basic, with --auth-method basic)
(wrong or missing credentials get 401).  SIGTERM/SIGINT exit with status 0.

Must run with Debian's /usr/bin/python3 (python3-gi + gir1.2-gst-rtsp-server).
"""
import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")  # appsrc wrapped as AppSrc: push_buffer()
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtsp, GstRtspServer  # noqa

BATCH = 8  # access units queued per appsrc need-data callback (see below)

# Per codec: (caps name, parser, payloader, nal-type fn, AUD type,
#             VCL-type predicate, keyframe predicate, header length,
#             suffix non-VCL types that belong to the *preceding* AU).
CODECS = {
    "h264": dict(caps="video/x-h264", parse="h264parse", pay="rtph264pay",
                 ntype=lambda b: b[0] & 0x1F, aud=9, hdr=1,
                 vcl=lambda t: 1 <= t <= 5, key=lambda t: t == 5,
                 suffix={10, 11, 12, 19}),  # end-of-seq/stream, filler, aux
    "h265": dict(caps="video/x-h265", parse="h265parse", pay="rtph265pay",
                 ntype=lambda b: (b[0] >> 1) & 0x3F, aud=35, hdr=2,
                 vcl=lambda t: t < 32, key=lambda t: 16 <= t <= 23,  # IRAP
                 suffix={36, 37, 38, 40}),  # EOS, EOB, filler, suffix SEI
}


def split_nals(data):
    """Return the NAL unit payloads (start codes, trailing zeros removed)."""
    starts, pos = [], data.find(b"\x00\x00\x01")
    while pos >= 0:
        starts.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    nals = []
    for i, s in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nal = data[s:end].rstrip(b"\x00")  # zero of a 4-byte start code etc.
        if nal:
            nals.append(nal)
    return nals


def split_access_units(nals, c):
    """Group NAL units into access units.

    If the stream has access unit delimiters, each AUD starts a new AU.
    Otherwise a VCL NAL that begins a new picture (H.264 first_mb_in_slice
    == 0, i.e. ue(v) starting with a 1 bit; H.265
    first_slice_segment_in_pic_flag == 1, also the first bit after the NAL
    header) starts a new AU, taking the non-VCL NALs (SPS/PPS/VPS/SEI...)
    that directly precede it along.
    """
    aus, cur, pending, cur_has_vcl = [], [], [], False
    use_aud = any(c["ntype"](n) == c["aud"] for n in nals)
    for nal in nals:
        t = c["ntype"](nal)
        if use_aud:
            if t == c["aud"] and cur:
                aus.append(cur)
                cur = []
            cur.append(nal)
            continue
        if c["vcl"](t):
            first = len(nal) > c["hdr"] and nal[c["hdr"]] & 0x80
            if first and cur_has_vcl:
                aus.append(cur)
                cur = []
            cur += pending + [nal]
            pending, cur_has_vcl = [], True
        elif t in c["suffix"] and cur_has_vcl and not pending:
            cur.append(nal)
        else:
            pending.append(nal)
    cur += pending
    if cur:
        aus.append(cur)
    return aus


def load_access_units(path, codec):
    """Read an Annex B file once and return a list of immutable Gst.Buffers,
    one per AU, flagged DELTA_UNIT unless the AU holds an IDR/IRAP slice."""
    c = CODECS[codec]
    try:
        with open(path, "rb") as f:
            nals = split_nals(f.read())
    except OSError as e:
        sys.exit(f"rtsp_server: cannot read {path}: {e}")
    buffers = []
    for au in split_access_units(nals, c):
        if not any(c["vcl"](c["ntype"](n)) for n in au):
            continue  # e.g. a trailing lone AUD: no picture, skip it
        data = b"".join(b"\x00\x00\x00\x01" + n for n in au)
        buf = Gst.Buffer.new_wrapped(data)
        if not any(c["key"](c["ntype"](n)) for n in au):
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        buffers.append(buf)
    if not buffers:
        sys.exit(f"rtsp_server: no access units found in {path}")
    return buffers


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """Media factory whose appsrc loops a shared list of AU buffers."""

    def __init__(self, buffers, codec, fps, shared=False):
        super().__init__()
        c = CODECS[codec]
        self.buffers, self.frame_ns = buffers, int(Gst.SECOND / fps)
        # alignment=au: every pushed buffer is exactly one access unit, so
        # the parser needs no look-ahead.  format=time: we timestamp buffers
        # and the RTSP server's clock-syncing sinks pace them in real time.
        # is-live=false on purpose: with a live source the pipeline clock
        # already runs between SETUP and PLAY, so the first frames (pts 0..)
        # arrive "late" and go out as a burst (one frame per 40 ms of
        # setup delay, several seconds' worth under load).  Non-live, the
        # running time starts at PLAY and the first frame is on time.
        self.set_launch(
            f"( appsrc name=src is-live=false format=time do-timestamp=false "
            f"caps={c['caps']},stream-format=byte-stream,alignment=au,"
            f"framerate={fps}/1 "
            f"! {c['parse']} "
            f"! {c['pay']} name=pay0 pt=96 config-interval=-1 )")
        # Default: every client gets its own pipeline.  Shared: one pipeline
        # per mount, all clients get the same packets (media-configure and
        # so the frame counter below then run once per mount, not per client).
        self.set_shared(shared)
        self.connect("media-configure", self._on_media_configure)

    def do_gen_key(self, url):
        # A shared media is looked up by this key.  The default key is the
        # whole request URL, host and port included, so clients that reach
        # the same mount through different addresses (the gateway's
        # per-camera loopback relay, src/ingest/relay.rs, sends
        # rtsp://127.0.0.1:<relay port>/<mount>) would each get a pipeline
        # of their own.  A camera serves a path whatever address it was
        # asked under: key on the path.
        return url.abspath

    def _on_media_configure(self, _factory, media):
        appsrc = media.get_element().get_child_by_name("src")  # GstApp.AppSrc
        bufs, frame_ns = self.buffers, self.frame_ns
        state = {"frame": 0}  # per-session frame counter, captured below

        def need_data(src, _length):
            # appsrc asks when its queue is empty.  Queue a small batch so the
            # Python callback (and GIL hand-off) runs a few times per second
            # per session rather than once per frame; pacing is unaffected,
            # since the clock-synced sinks downstream pace by timestamp.
            n = state["frame"]
            for i in range(n, n + BATCH):
                # Shallow copy: own metadata, memory shared with the original.
                buf = bufs[i % len(bufs)].copy()
                buf.pts = buf.dts = i * frame_ns
                buf.duration = frame_ns
                if src.push_buffer(buf) != Gst.FlowReturn.OK:
                    break  # flushing / shutting down
            state["frame"] = n + BATCH

        appsrc.connect("need-data", need_data)


def parse_mount(spec):
    """'PATH=FILE:CODEC' -> (path, file, codec)."""
    try:
        path, rest = spec.split("=", 1)
        fname, codec = rest.rsplit(":", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --mount {spec!r}, "
                                         "expected PATH=FILE:CODEC")
    codec = codec.lower()
    if codec not in CODECS:
        raise argparse.ArgumentTypeError(f"codec must be h264 or h265: {spec}")
    return ("/" + path.lstrip("/"), fname, codec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True, help="0 = any free")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--auth-method", choices=["digest", "basic"], default="digest",
                    help="RTSP authentication the server demands (digest)")
    ap.add_argument("--fps", type=int, default=25, help="frame rate (25)")
    ap.add_argument("--shared", action="store_true",
                    help="one media pipeline per mount serving all its "
                    "clients (default: one pipeline per client session)")
    ap.add_argument("--mount", type=parse_mount, action="append",
                    required=True, metavar="PATH=FILE:CODEC",
                    help="e.g. /cam1=clip.h264:h264 (codec h264|h265); "
                    "repeatable")
    args = ap.parse_args()
    if (args.user is None) != (args.password is None):
        ap.error("--user and --password go together")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.bind)
    server.set_service(str(args.port))
    server.set_backlog(1024)  # default 5: bursts of concurrent connects

    role = None
    if args.user is not None:
        # Token carries a role name; each factory maps that role to the
        # permissions needed to open (access) and build (construct) media.
        # No default token => anonymous requests are answered 401.
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "tester")
        auth = GstRtspServer.RTSPAuth()
        if args.auth_method == "basic":
            # Basic: the credentials travel base64-encoded; some older cameras only do this.
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password, token)
        server.set_auth(auth)
        role, _ = Gst.Structure.from_string(
            "tester, media.factory.access=(boolean)true, "
            "media.factory.construct=(boolean)true")

    cache = {}  # (file, codec) -> buffers: each file is read only once
    mounts = server.get_mount_points()
    for path, fname, codec in args.mount:
        if (fname, codec) not in cache:
            cache[fname, codec] = load_access_units(fname, codec)
        bufs = cache[fname, codec]
        factory = LoopingFactory(bufs, codec, args.fps, shared=args.shared)
        if role is not None:
            factory.add_role_from_structure(role)
        mounts.add_factory(path, factory)
        print(f"rtsp_server: {path} <- {fname} ({codec}, {len(bufs)} AUs)",
              file=sys.stderr)

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        sys.exit(f"rtsp_server: cannot listen on {args.bind}:{args.port}")
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY port={server.get_bound_port()}", flush=True)
    loop.run()
    # Streaming threads of live sessions may still call into Python; skip
    # interpreter teardown (which can deadlock/crash with them) and exit now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
