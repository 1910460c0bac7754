#!/usr/bin/env python3
"""Derives the detector variants (issue 14) from the shipped YOLOX-nano, reproducibly.

    scripts/derive_models.py [VARIANT...]    derive what is missing (default: the variants setup
                                             derives; scripts/setup runs this)
    scripts/derive_models.py --calibrate     recompute the INT8 ranges from ../shared/media
    scripts/derive_models.py --update-manifests   write the derived files' sha256 into the manifests

Runs in the pinned virtual environment scripts/setup makes (.cache/venv, versions in
scripts/models-requirements.txt). Source: models/yolox_nano.onnx, checked against the sha256 of
models/yolox_nano.toml (the bytes of ../shared/models/yolox_nano.onnx).

Variants (each with its committed manifest models/<name>.toml, its .onnx never committed):
  - yolox_nano_416x256: the same weights with a 416x256 input. The graph is fully convolutional
    and its head's reshapes are [1, 85, -1], its upsampling by scale factors, so only the input
    and output shapes change (output rows 52*32 + 26*16 + 13*8 = 2184). The box decode is not in
    the graph: the gateway lays out its grid from the manifest's input size.
  - yolox_nano_416x256_int8, yolox_nano_int8 (416x416): converted to opset 13, then statically
    quantised, QDQ, int8 weights per channel, uint8 activations, ONNX Runtime's quantiser. The activation ranges
    (MinMax) are a committed table (models/calibration/<name>.json) that --calibrate computes
    from a fixed list of frames of ../shared/media; deriving from the table needs no media and
    no inference, so the bytes do not depend on this CPU's float arithmetic. The head's outputs
    (its last 1x1 convolutions, sigmoids, concatenations, reshapes, transpose) stay float: one
    uint8 scale across box offsets and probabilities would coarsen the scores.
    On this CPU (AVX2, no VNNI) they are neither faster than fp32 nor close to its detections
    (BENCHMARKS.md, "Detector variants"), so scripts/setup does not derive them; name them to
    derive them: scripts/derive_models.py yolox_nano_416x256_int8 yolox_nano_int8.
Idempotent: a variant whose file already has the manifest's sha256 is skipped.
"""

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SOURCE_MANIFEST = MODELS / "yolox_nano.toml"
STRIDES = (8, 16, 32)

# name: (input width, input height, int8)
VARIANTS = {
    "yolox_nano_416x256": (416, 256, False),
    "yolox_nano_416x256_int8": (416, 256, True),
    "yolox_nano_int8": (416, 416, True),
}
# What scripts/setup derives (what the gateway may be configured with).
DEFAULT_VARIANTS = ["yolox_nano_416x256"]


def say(message):
    print(f"[derive_models] {message}", file=sys.stderr)


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_value(path, key):
    match = re.search(rf'^{key} = "(.*)"$', path.read_text(), re.MULTILINE)
    if not match:
        raise SystemExit(f"{path}: no {key} line")
    return match.group(1)


def source_model():
    path = MODELS / manifest_value(SOURCE_MANIFEST, "file")
    expected = manifest_value(SOURCE_MANIFEST, "sha256")
    if not path.is_file() or sha256_of(path) != expected:
        raise SystemExit(f"{path} is missing or does not have sha256 {expected}: run scripts/setup")
    return onnx.load(str(path))


def output_rows(width, height):
    return sum((width // s) * (height // s) for s in STRIDES)


def resized(model, width, height, batch=1):
    """The model with a `batch`x3x`height`x`width` input (batch None: dynamic)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    (images,) = graph.input
    dims = images.type.tensor_type.shape.dim
    for dim, value in zip(dims, [batch, 3, height, width]):
        dim.Clear()
        if value is None:
            dim.dim_param = "batch"
        else:
            dim.dim_value = value
    (output,) = graph.output
    for dim, value in zip(output.type.tensor_type.shape.dim, [batch, output_rows(width, height), 85]):
        dim.Clear()
        if value is None:
            dim.dim_param = "batch"
        else:
            dim.dim_value = value
    if batch != 1:
        # The head flattens each level with Reshape [1, 85, -1]: 0 keeps the batch instead.
        initializers = {i.name: i for i in graph.initializer}
        for node in graph.node:
            if node.op_type == "Reshape" and node.input[1] in initializers:
                shape = numpy_helper.to_array(initializers[node.input[1]])
                if shape.tolist() == [1, 85, -1]:
                    initializers[node.input[1]].CopyFrom(
                        numpy_helper.from_array(np.array([0, 85, -1], dtype=np.int64), node.input[1])
                    )
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    inferred = [d.dim_value or d.dim_param for d in model.graph.output[0].type.tensor_type.shape.dim]
    expected = [batch or "batch", output_rows(width, height), 85]
    if inferred != expected:
        raise SystemExit(f"shape inference gives output {inferred}, expected {expected}")
    return model


def head_nodes(model):
    """The nodes from the head's last convolutions to the output: kept in float."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    kept = set()
    for node in graph.node:
        from_reshape = any(producer.get(i) is not None and producer[i].op_type == "Reshape" for i in node.input)
        if node.op_type in ("Reshape", "Transpose") or from_reshape:
            kept.add(node.name)
        if node.op_type == "Reshape":
            level = producer[node.input[0]]  # Concat [reg, sigmoid(obj), sigmoid(cls)]
            kept.add(level.name)
            for branch in level.input:
                node_b = producer[branch]
                kept.add(node_b.name)
                if node_b.op_type == "Sigmoid":
                    kept.add(producer[node_b.input[0]].name)
    return sorted(kept)


# --- calibration frames (a fixed list, in a fixed order) ---------------------------------

def calibration_sources(media):
    """(kind, path, time in s or None) for every calibration frame: the plaza clip every 2 s,
    each fall clip at 0.5 s, 1.5 s, ... (at most 8; the match report uses whole seconds), and the
    odd-numbered bin photos in name order (the images folder is left to the match report)."""
    sources = [("clip", media / "vtest_plaza_768x576_10fps_gop20.mp4", 1.0 + 2 * k) for k in range(20)]
    for clip in sorted((media / "falls").glob("*.mp4")):
        duration = float(
            subprocess.run(
                ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(clip)],
                check=True, capture_output=True, text=True,
            ).stdout.strip()
        )
        sources += [("clip", clip, k + 0.5) for k in range(8) if k + 0.5 < duration - 0.2]
    bins = sorted((media / "bins").glob("*.jpg"))
    sources += [("photo", path, None) for path in bins[1::2]]
    return sources


def read_frame(kind, path, seconds, scratch):
    from PIL import Image

    if kind == "clip":
        out = scratch / "frame.png"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-ss", f"{seconds:.3f}", "-i", str(path), "-frames:v", "1",
             "-sws_flags", "bitexact+accurate_rnd+full_chroma_int", "-pix_fmt", "rgb24", str(out)],
            check=True,
        )
        path = out
    with Image.open(path) as image:
        return image.convert("RGB")


def letterbox(image, width, height):
    """As the gateway: scale to fit, paste top-left on 114, planar BGR float 0-255."""
    from PIL import Image

    scale = min(width / image.width, height / image.height)
    scaled = image.resize(
        (min(width, max(1, round(image.width * scale))), min(height, max(1, round(image.height * scale)))),
        Image.Resampling.BILINEAR,
    )
    tensor = np.full((1, 3, height, width), 114.0, dtype=np.float32)
    pixels = np.asarray(scaled, dtype=np.float32)  # H, W, RGB
    tensor[0, :, : pixels.shape[0], : pixels.shape[1]] = pixels[:, :, ::-1].transpose(2, 0, 1)
    return tensor


def significant(value):
    """A one-element range bound as a float of 6 significant digits: the table's values do not
    carry the last bits of this CPU's arithmetic."""
    (number,) = np.asarray(value, dtype=np.float64).reshape(-1)
    return float(f"{number:.6g}")


def calibrate(name, width, height, media):
    """MinMax ranges of every float tensor over the calibration frames, 6 significant digits."""
    import onnxruntime
    from onnxruntime.quantization.calibrate import create_calibrator, CalibrationDataReader, CalibrationMethod

    class Frames(CalibrationDataReader):
        def __init__(self, sources, scratch):
            self.sources = iter(sources)
            self.scratch = scratch

        def get_next(self):
            source = next(self.sources, None)
            if source is None:
                return None
            return {"images": letterbox(read_frame(*source, self.scratch), width, height)}

    sources = calibration_sources(media)
    say(f"{name}: calibrating on {len(sources)} frames of {media}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_path = scratch / "float.onnx"
        onnx.save(resized(source_model(), width, height), str(model_path))
        calibrator = create_calibrator(
            model_path, [], augmented_model_path=str(scratch / "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax, providers=["CPUExecutionProvider"],
        )
        calibrator.collect_data(Frames(sources, scratch))
        ranges = calibrator.compute_data()
    del onnxruntime
    table = {
        "comment": f"MinMax activation ranges of {name}, from scripts/derive_models.py --calibrate",
        "frames": [f"{p.relative_to(media)}" + ("" if t is None else f"@{t:.1f}s") for _, p, t in sources],
        "ranges": {
            tensor: [significant(r.range_value[0]), significant(r.range_value[1])] for tensor, r in sorted(ranges.items())
        },
    }
    path = MODELS / "calibration" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(table, indent=1) + "\n")
    say(f"{name}: wrote {path.relative_to(ROOT)} ({len(table['ranges'])} tensors)")


def quantised(model, name, scratch):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, save_tensors_data

    table = json.loads((MODELS / "calibration" / f"{name}.json").read_text())
    ranges = TensorsData(
        CalibrationMethod.MinMax,
        {
            tensor: TensorData(lowest=np.array(low, dtype=np.float32), highest=np.array(high, dtype=np.float32))
            for tensor, (low, high) in table["ranges"].items()
        },
    )
    cache = scratch / "ranges.json"
    save_tensors_data(ranges, cache)
    float_path, out_path = scratch / "float.onnx", scratch / "int8.onnx"
    # Per-channel DequantizeLinear (its `axis`) needs opset 13; the export is opset 11.
    model = onnx.version_converter.convert_version(model, 13)
    onnx.save(model, str(float_path))
    quantize_static(
        str(float_path), str(out_path), calibration_data_reader=None, calibration_cache_path=str(cache),
        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=head_nodes(model),
    )
    return onnx.load(str(out_path))


def derive(name, update_manifest):
    width, height, int8 = VARIANTS[name]
    manifest = MODELS / f"{name}.toml"
    target = MODELS / manifest_value(manifest, "file")
    expected = manifest_value(manifest, "sha256")
    if target.is_file() and sha256_of(target) == expected:
        say(f"{target.relative_to(ROOT)}: up to date")
        return True
    model = resized(source_model(), width, height)
    if int8:
        with tempfile.TemporaryDirectory() as scratch:
            model = quantised(model, name, Path(scratch))
    model.doc_string = f"{name}: derived from yolox_nano.onnx by scripts/derive_models.py"
    data = model.SerializeToString()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected and not update_manifest:
        say(f"ERROR {name}: derived bytes have sha256 {actual}, {manifest.relative_to(ROOT)} expects {expected} "
            "(other tool versions than scripts/models-requirements.txt?)")
        return False
    tmp = target.with_suffix(".onnx.tmp")
    tmp.write_bytes(data)
    tmp.replace(target)
    if actual != expected:
        text = re.sub(r'^sha256 = ".*"$', f'sha256 = "{actual}"', manifest.read_text(), flags=re.MULTILINE)
        manifest.write_text(text)
        say(f"{manifest.relative_to(ROOT)}: sha256 updated to {actual}")
    say(f"{target.relative_to(ROOT)}: derived ({len(data):,} bytes)")
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calibrate", action="store_true", help="recompute the INT8 range tables from the media")
    parser.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    parser.add_argument("--update-manifests", action="store_true")
    parser.add_argument("variants", nargs="*", default=DEFAULT_VARIANTS, help=f"any of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {list(VARIANTS)}")
    if args.calibrate:
        for name in args.variants:
            width, height, int8 = VARIANTS[name]
            if int8:
                calibrate(name, width, height, args.media)
    ok = all([derive(name, args.update_manifests) for name in args.variants])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
