"""The bf16 quality check of tests/test_transfer.py, also runnable as a process of its own:

    python -m tests.bf16_check        # prints the report as JSON

A process of its own lets the test hold oneDNN to an instruction set without native bf16
(ONEDNN_MAX_CPU_ISA=AVX2 must be set before torch loads), so that the emulated bf16 path is checked on
every machine, the native one where the CPU has it.
"""

from __future__ import annotations

import json
import sys

import torch

from nst_engine import Precision, StyleSettings, StyleTransfer
from nst_engine.quality import PrecisionQuality, measure_precision
from nst_engine.vgg import VGGFeatures

from .stand_ins import features_state_dict, make_vgg19_state_dict, smooth_image

# 64 px and 30 L-BFGS iterations: fp32's loss still falls 8 % over the last fifth of the run, which is
# what makes the check's bound wider than fp32's own spread (about ±1.3 %) at a few seconds per run.
CHECK_SETTINGS = StyleSettings(size=64, iterations=30, scales=1, precision=Precision.BF16)


def check_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return smooth_image(48, 64, seed=1), smooth_image(64, 64, seed=2)


def bf16_quality(engine: StyleTransfer) -> PrecisionQuality:
    content, style = check_inputs()
    return measure_precision(engine, content, [style], CHECK_SETTINGS)


def main() -> int:
    engine = StyleTransfer(VGGFeatures(features_state_dict(make_vgg19_state_dict())), torch.device("cpu"))
    json.dump(bf16_quality(engine).to_dict(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
