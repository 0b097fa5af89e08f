#!/usr/bin/env python3
"""How close the daemon's `estimate` seconds come to the time a job then takes, job after job.

A real daemon (CPU unless --device) runs the jobs given by --jobs, each SIZE:ITERATIONS:SCALES on a
square random content and style; before each job the script asks for its estimate and prints it beside
the job's measured time (the daemon's own elapsed figure), and the daemon's fitted speed after it.
The first job has no estimate: the daemon measures from the jobs it runs.

    .venv/bin/python benchmarks/estimate_seconds.py --random-weights
    .venv/bin/python benchmarks/estimate_seconds.py --random-weights --jobs 64:20:1 128:50:1 192:80:1 256:40:1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from daemon.wire.messages import DType, Image, ImageSpec  # noqa: E402
from tests.daemon_harness import start_daemon  # noqa: E402
from tests.stand_ins import write_random_vgg19_features  # noqa: E402


def square(side: int, seed: int) -> Image:
    pixels = np.random.default_rng(seed).random((side, side, 3), dtype=np.float32)
    return Image(ImageSpec(side, side, 3, DType.F32), memoryview(pixels).cast("B"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", type=Path)
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random VGG19 (timing does not depend on the values)")
    parser.add_argument("--jobs", nargs="+", default=["64:20:1", "128:50:1", "192:80:1", "256:40:1", "192:40:2"],
                        help="SIZE:ITERATIONS:SCALES of each job, in order")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nst-bench-"))
    weights_file = write_random_vgg19_features(work / "vgg19-random.pth") if args.random_weights else args.weights
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    daemon = start_daemon(work, weights_file)
    try:
        with daemon.client(timeout_s=60) as client:
            for number, job in enumerate(args.jobs):
                side, iterations, scales = (int(part) for part in job.split(":"))
                settings = {"size": side, "scales": scales, "iterations": iterations, "coarse_iterations": iterations}
                estimate = client.estimate(settings, side, side, style_sizes=[(side, side)]).seconds
                result = client.stylize(square(side, 2 * number), [square(side, 2 * number + 1)], settings)
                status = client.status()
                predicted = "no estimate yet" if estimate is None else \
                    f"estimated {estimate:6.1f} s ({estimate / result.elapsed_s:.2f}×)"
                print(f"{side:4} px, {iterations:3} iterations, {scales} stage(s): took {result.elapsed_s:6.1f} s, "
                      f"{predicted}; fit now {status['seconds_per_iteration']:.4f} s per iteration + "
                      f"{status['seconds_per_megapixel_iteration']:.2f} s per megapixel-iteration", flush=True)
    finally:
        daemon.stop()


if __name__ == "__main__":
    main()
