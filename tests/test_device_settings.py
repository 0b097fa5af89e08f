"""Process-wide device settings under concurrent runs (a daemon runs one job per device at once).

cuDNN's and cuBLAS's float32 mode is a flag of the process; torch lets it be set without a GPU, so these
tests drive the real flags on the CPU, through a ``cuda`` device object."""

from __future__ import annotations

import threading

import pytest
import torch

from nst_engine.device import fp32_arithmetic
from nst_engine.errors import CancelledError
from nst_engine.progress import CancelToken
from nst_engine.settings import Precision

CUDA = torch.device("cuda")
WAIT_S = 10.0  # every wait is bounded; none of them should take more than a moment


def modes() -> tuple[str, str]:
    return torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision


class Run(threading.Thread):
    """A run that holds ``precision``'s mode until told to end, recording the modes it saw."""

    def __init__(self, precision: Precision) -> None:
        super().__init__(daemon=True)
        self.precision = precision
        self.inside = threading.Event()
        self.end = threading.Event()
        self.seen: list[tuple[str, str]] = []

    def run(self) -> None:
        with fp32_arithmetic(CUDA, self.precision):
            self.seen.append(modes())
            self.inside.set()
            self.end.wait(WAIT_S)
            self.seen.append(modes())

    def begin(self, wait_s: float = WAIT_S) -> bool:
        """Start; whether the run has its mode within ``wait_s``."""
        self.start()
        return self.inside.wait(wait_s)

    def finish(self) -> None:
        self.end.set()
        self.join(WAIT_S)


def test_runs_in_the_same_mode_share_it_and_the_last_to_end_restores_the_processs():
    before = modes()
    first, second = Run(Precision.TF32), Run(Precision.TF32)
    assert first.begin()
    assert second.begin(), "a run in the same mode waits for nothing"
    first.finish()
    assert modes() == ("tf32", "tf32"), "the first run's end does not take the mode from the second"
    second.finish()
    assert first.seen == second.seen == [("tf32", "tf32")] * 2
    assert modes() == before


def test_a_run_in_another_mode_waits_until_the_running_ones_end():
    before = modes()
    tf32, ieee = Run(Precision.TF32), Run(Precision.FP32)
    assert tf32.begin()
    assert not ieee.begin(0.5), "IEEE float32 was switched on under a TF32 run"
    tf32.finish()
    assert ieee.inside.wait(WAIT_S), "the waiting run goes on once the other has ended"
    ieee.finish()
    assert tf32.seen == [("tf32", "tf32")] * 2
    assert ieee.seen == [("ieee", "ieee")] * 2
    assert modes() == before


def test_a_run_waiting_for_its_mode_can_be_cancelled():
    before = modes()
    tf32 = Run(Precision.TF32)
    assert tf32.begin()
    cancel = CancelToken()
    outcome: list[BaseException | None] = []

    def waiting_run() -> None:
        try:
            with fp32_arithmetic(CUDA, Precision.FP32, cancel):
                outcome.append(None)
        except CancelledError as error:
            outcome.append(error)

    waiter = threading.Thread(target=waiting_run, daemon=True)
    waiter.start()
    cancel.cancel()
    waiter.join(WAIT_S)
    assert not waiter.is_alive() and isinstance(outcome[0], CancelledError), "the cancel ends the wait"
    assert modes() == ("tf32", "tf32"), "the cancelled run changed nothing"
    tf32.finish()
    assert modes() == before


def test_a_failing_run_gives_the_mode_back():
    before = modes()
    with pytest.raises(RuntimeError), fp32_arithmetic(CUDA, Precision.FP32):
        raise RuntimeError("out of memory")
    assert modes() == before
    tf32 = Run(Precision.TF32)
    assert tf32.begin(), "nothing still holds the other mode"
    tf32.finish()


def test_other_devices_leave_the_modes_alone():
    before = modes()
    with fp32_arithmetic(torch.device("cpu"), Precision.TF32):
        assert modes() == before
