#!/usr/bin/env python3
"""Match report and per-frame cost of the detector variants (issue 14), with the gateway itself.

    benches/models/match.py [--gateway target/release/gateway] [--cost] [--runs 3] [MANIFEST...]

Both use the gateway itself, the variant picked by a config's `[detector] model` key (so an
older build without `--model` works too).

Match: every confident box of the reference (the shipped square fp32 model,
models/yolox_nano.toml; confident = what `gateway detect` reports, i.e. score >=
detector.score_threshold, 0.4 by default) counts as matched when the variant reports a box of
the same class with IoU >= 0.7 (one-to-one, best IoU first). On ../shared/media/images, one
frame per whole second of each fall clip (extracted with ffmpeg) and the bin photos.
Also counted: the variant's boxes the reference does not have.

Cost (--cost): `gateway calibrate --json` on a 640x360 H.264 clip made from
the plaza clip as the capacity harness makes its substreams (and on the 768x576 plaza clip
itself), `--runs` times each; the minimum is reported, because other processes load the CPU.
Needs ffmpeg and a built gateway; ORT_DYLIB_PATH as for the tests.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
MEDIA = Path(os.environ.get("GATEWAY_SHARED_DIR", ROOT.parent / "shared")) / "media"
REFERENCE = "models/yolox_nano.toml"
VARIANTS = ["models/yolox_nano_416x256.toml", "models/yolox_nano_416x256_int8.toml", "models/yolox_nano_int8.toml"]
IOU = 0.7


def iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def model_config(manifest, scratch):
    """A config that picks `manifest` by the `[detector] model` key, as a deployment does."""
    config = scratch / f"{Path(manifest).stem}.toml"
    config.write_text(f'[detector]\nmodel = "{ROOT / manifest}"\n')
    return config


def detect(gateway, manifest, files, scratch):
    result = subprocess.run([gateway, "detect", "--json", "--config", str(model_config(manifest, scratch)),
                             *map(str, files)], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"gateway detect with {manifest} failed:\n{result.stderr}")
    return {line["file"]: line for line in map(json.loads, result.stdout.splitlines())}


def pair_up(reference, variant, threshold):
    """One-to-one same-class pairs at IoU >= threshold, best IoU first: (reference, variant) used."""
    pairs = sorted(((iou(r["box"], v["box"]), i, j) for i, r in enumerate(reference)
                    for j, v in enumerate(variant) if r["class_id"] == v["class_id"]), reverse=True)
    used_r, used_v = set(), set()
    for overlap, i, j in pairs:
        if overlap < threshold:
            break
        if i not in used_r and j not in used_v:
            used_r.add(i)
            used_v.add(j)
    return used_r, used_v


def match(reference, variant):
    """(reference boxes, matched, variant boxes left unmatched, persons, persons matched,
    matched at IoU >= 0.5)."""
    reference, variant = reference["detections"], variant["detections"]
    used_r, used_v = pair_up(reference, variant, IOU)
    loose, _ = pair_up(reference, variant, 0.5)
    persons = [i for i, r in enumerate(reference) if r["class"] == "person"]
    return (len(reference), len(used_r), len(variant) - len(used_v),
            len(persons), sum(1 for i in persons if i in used_r), len(loose))


def fall_frames(scratch):
    frames = []
    for clip in sorted((MEDIA / "falls").glob("*.mp4")):
        duration = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration",
                                         "-of", "csv=p=0", str(clip)], check=True, capture_output=True,
                                        text=True).stdout)
        for second in range(1, int(duration - 0.2) + 1):
            out = scratch / f"{clip.stem}_{second:02d}s.png"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(second), "-i", str(clip), "-frames:v", "1",
                            "-sws_flags", "bitexact+accurate_rnd+full_chroma_int", "-pix_fmt", "rgb24", str(out)],
                           check=True)
            frames.append(out)
    return frames


def substream_clip(scratch):
    """640x360 H.264 at 10 fps, a keyframe every 5 s, as benches/capacity makes its substream."""
    out = scratch / "sub_640x360.h264"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1",
                    "-i", str(MEDIA / "vtest_plaza_768x576_10fps_gop20.mp4"), "-t", "40", "-an",
                    "-vf", "fps=10,scale=640:360", "-pix_fmt", "yuv420p", "-b:v", "512k", "-c:v", "libx264",
                    "-preset", "veryfast", "-g", "10", "-keyint_min", "10", "-sc_threshold", "0", "-bf", "0",
                    "-f", "h264", str(out)], check=True)
    return out


def input_size(manifest):
    text = (ROOT / manifest).read_text()
    value = {key: re.search(rf"^{key} = (\d+)$", text, re.MULTILINE).group(1) for key in ("input_width", "input_height")}
    return f"{value['input_width']}x{value['input_height']}"


def cost(gateway, manifest, footage, runs, frames, scratch):
    """The run with the least inference time; the model is picked by a config's
    `[detector] model` key, as a deployment picks it."""
    config = model_config(manifest, scratch)
    best = None
    for _ in range(runs):
        result = subprocess.run([gateway, "calibrate", "--json", "--frames", str(frames), "--config", str(config),
                                 str(footage)], capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            sys.exit(f"gateway calibrate with {manifest} failed:\n{result.stderr}")
        line = json.loads(result.stdout.strip().splitlines()[-1])
        if best is None or line["inference_ms"] < best["inference_ms"]:
            best = line
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    release = ROOT / "target/release/gateway"
    parser.add_argument("--gateway", default=str(release if release.is_file() else ROOT / "target/debug/gateway"))
    parser.add_argument("--cost", action="store_true", help="also measure per-frame cost with gateway calibrate")
    parser.add_argument("--no-match", action="store_true", help="only the cost")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=40, help="keyframes per calibrate run")
    parser.add_argument("manifests", nargs="*", default=VARIANTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if not args.no_match:
            report_match(args, scratch)
        if args.cost:
            clips = {"640x360 sub (made)": substream_clip(scratch),
                     "768x576 plaza": MEDIA / "vtest_plaza_768x576_10fps_gop20.mp4"}
            print(f"\ncost: gateway calibrate --frames {args.frames}, min of {args.runs} runs, CPU ms of one thread")
            print("| model | footage | input | decode | preprocess | inference (+post) | total |")
            print("|---|---|---|---|---|---|---|")
            for manifest in [REFERENCE, *args.manifests]:
                for name, clip in clips.items():
                    c = cost(args.gateway, manifest, clip, args.runs, args.frames, scratch)
                    print(f"| {Path(manifest).stem} | {name} | {input_size(manifest)} | {c['decode_ms']:.2f} | "
                          f"{c['preprocess_ms']:.2f} | {c['inference_ms']:.2f} | {c['total_ms']:.2f} |", flush=True)


def report_match(args, scratch):
    sets = {
        "images": sorted((MEDIA / "images").iterdir()),
        "fall frames (1/s)": fall_frames(scratch),
        "bin photos": sorted((MEDIA / "bins").glob("*.jpg")),
    }
    files = [f for group in sets.values() for f in group]
    reference = detect(args.gateway, REFERENCE, files, scratch)
    print(f"reference {REFERENCE}: {sum(len(d['detections']) for d in reference.values())} confident boxes on "
          f"{len(files)} pictures; matched = same class, IoU >= {IOU}")
    print("| variant | set | pictures | reference boxes | matched | share | persons matched | extra boxes | share at IoU >= 0.5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for manifest in args.manifests:
        found = detect(args.gateway, manifest, files, scratch)
        totals = [0] * 6
        for name, group in sets.items():
            counts = [0] * 6
            for f in group:
                for k, v in enumerate(match(reference[str(f)], found[str(f)])):
                    counts[k] += v
            totals = [a + b for a, b in zip(totals, counts)]
            print(row(manifest, name, len(group), counts))
        print(row(manifest, "**all**", len(files), totals))
        # 16:9 pictures: where the 416x256 input sees the frame at the square model's scale.
        wide = [f for f in files if 1.7 <= reference[str(f)]["width"] / reference[str(f)]["height"] <= 1.8]
        counts = [0] * 6
        for f in wide:
            for k, v in enumerate(match(reference[str(f)], found[str(f)])):
                counts[k] += v
        print(row(manifest, "of which 16:9", len(wide), counts))


def row(manifest, name, pictures, counts):
    boxes, matched, extra, persons, persons_matched, loose = counts
    share = f"{100 * matched / boxes:.1f} %" if boxes else "-"
    loose_share = f"{100 * loose / boxes:.1f} %" if boxes else "-"
    return (f"| {Path(manifest).stem} | {name} | {pictures} | {boxes} | {matched} | {share} | "
            f"{persons_matched}/{persons} | {extra} | {loose_share} |")


if __name__ == "__main__":
    main()
