#!/usr/bin/env python3
"""Batching and session/thread layout of the detector on this CPU (issue 14, item 4).

    .cache/venv/bin/python benches/models/layout.py [--seconds 20] [--width 416 --height 256]

Runs the pinned ONNX Runtime (the same version as the gateway's library) from the virtual
environment scripts/setup makes. Two questions, each answered in frames per CPU-second (the
process's CPU time, so that other load on the machine does not count, and ORT's spinning
threads do):
  - batching: the same model with a dynamic batch dimension (derived here in memory: the
    head's Reshape [1, 85, -1] becomes [0, 85, -1]), batch 1, 2, 4 and 8 on one session with one
    intra-op thread;
  - layout: S sessions x T intra-op threads (each session on its own Python thread, running
    batch 1 back to back), for (1x1, 2x1, 1x2, 2x2).
Also prints frames per wall-second, which depends on what else runs.
"""

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "scripts"))
import derive_models  # noqa: E402


def session(model_bytes, intra):
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def frames_input(batch, height, width):
    rng = np.random.default_rng(7)
    return rng.uniform(0, 255, size=(batch, 3, height, width)).astype(np.float32)


def run_for(sessions, batch, height, width, seconds):
    """Runs every session on its own thread for `seconds`; (frames, wall s, CPU s)."""
    data = frames_input(batch, height, width)
    for s in sessions:  # warm-up
        s.run(None, {"images": data})
    counts = [0] * len(sessions)
    stop = time.monotonic() + seconds

    def work(index):
        while time.monotonic() < stop:
            sessions[index].run(None, {"images": data})
            counts[index] += batch

    cpu, wall = time.process_time(), time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.monotonic() - wall, time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--width", type=int, default=416)
    parser.add_argument("--height", type=int, default=256)
    args = parser.parse_args()
    source = derive_models.source_model()
    width, height = args.width, args.height
    print(f"onnxruntime {ort.__version__}, input {width}x{height}, {args.seconds:.0f} s per row")
    print("| what | frames | wall s | CPU s | frames per CPU-s | frames per wall-s |")
    print("|---|---|---|---|---|---|")

    def report(what, result):
        frames, wall, cpu = result
        print(f"| {what} | {frames} | {wall:.1f} | {cpu:.1f} | {frames / cpu:.1f} | {frames / wall:.1f} |", flush=True)

    dynamic = derive_models.resized(source, width, height, batch=None).SerializeToString()
    for batch in (1, 2, 4, 8):
        report(f"1 session x 1 thread, batch {batch}", run_for([session(dynamic, 1)], batch, height, width, args.seconds))
    fixed = derive_models.resized(source, width, height).SerializeToString()
    for count, intra in ((1, 1), (2, 1), (1, 2), (2, 2)):
        sessions = [session(fixed, intra) for _ in range(count)]
        report(f"{count} session(s) x {intra} thread(s), batch 1", run_for(sessions, 1, height, width, args.seconds))


if __name__ == "__main__":
    main()
