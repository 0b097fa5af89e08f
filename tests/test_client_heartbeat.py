"""Heartbeats that do not wait for the caller (#27 finding 13).

GIMP paints each live preview inside the progress callback, which takes 0.96–1.46 s at full size
(docs/benchmarks.md), and the daemon cancels the job of a client silent for 1.5 s.  Here a real daemon runs jobs for
real clients, directly and through a real bridge process, whose callback paints (sleeps) 2 s on each preview: the
jobs complete.  A cancel, and a callback that raises, still reach the daemon at once.
"""

from __future__ import annotations

import re
import sys
import threading
import time

import pytest

from daemon.client.bridge import BridgeClient
from daemon.client.contract import DaemonJobError

from .daemon_harness import LONG_SETTINGS, rgb_image, start_daemon

PAINTING_S = 2.0  # longer than the daemon's 1.5 s bound on a client's silence
SIDE = 96  # previews at the output's size: 96×96 RGB float32 is 110,592 bytes, more than a pipe holds (64 KiB)
ITERATIONS = 8  # a preview each: the job runs on while the first ones are painted, the test takes 8 × 2 s
SETTINGS = {"size": 48, "scales": 1, "iterations": ITERATIONS, "optimizer": "adam", "seed": 1}
# Each iteration lasts at least 0.5 s (the daemon's test fault "slow"), so the job runs on for 4 s while its first
# previews are painted, on a machine of any speed: a client silent while it paints would have the job cancelled.
OPTIONS = {"preview_every": 1, "output_size": (SIDE, SIDE), "fault": "slow"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("heartbeat-daemon"), weights_file)
    yield running
    running.stop()


@pytest.fixture
def bridge(daemon, monkeypatch):
    monkeypatch.setenv("NEURAL_STYLE_CONNECTION", str(daemon.connection_file))
    with BridgeClient([sys.executable, "-m", "daemon.client.bridge"]) as client:
        yield client


class Painter:
    """A progress callback that paints each preview for PAINTING_S, as GIMP would a large one."""

    def __init__(self) -> None:
        self.previews: list[int] = []

    def __call__(self, progress) -> None:
        if progress.preview is not None:
            self.previews.append(progress.iteration)
            time.sleep(PAINTING_S)


def cancellations(daemon, job_id: str) -> list[str]:
    """Why the daemon cancelled the job on its own (a client's disconnection or silence), from its log."""
    return re.findall(rf"Client \w+ (.+): cancelling job {job_id}", daemon.log())


@pytest.mark.parametrize("transport", ["zeromq", "bridge"])
def test_a_job_whose_callback_paints_each_preview_for_2_s_completes(daemon, request, transport):
    client = daemon.client() if transport == "zeromq" else request.getfixturevalue("bridge")
    painter = Painter()
    with client:
        result = client.stylize(rgb_image(SIDE, SIDE, 1), [rgb_image(SIDE, SIDE, 2)], SETTINGS, on_progress=painter,
                                **OPTIONS)
    assert (result.image.spec.width, result.image.spec.height) == (SIDE, SIDE)
    assert painter.previews == list(range(1, ITERATIONS + 1))
    assert cancellations(daemon, result.job_id) == []


def test_a_cancel_set_while_the_callback_paints_reaches_the_daemon_at_once(daemon):
    """The cancel goes out while the callback still paints: the job ends cancelled, not abandoned as silent."""
    cancel = threading.Event()

    def paint_and_cancel(progress) -> None:
        if progress.preview is not None:
            threading.Timer(0.1, cancel.set).start()
            time.sleep(PAINTING_S)

    with daemon.client() as client:
        job_id = client.submit(rgb_image(SIDE, SIDE, 1), [rgb_image(SIDE, SIDE, 2)], LONG_SETTINGS, **OPTIONS)
        with pytest.raises(DaemonJobError) as raised:
            client.wait(job_id, on_progress=paint_and_cancel, cancel=cancel)
        assert raised.value.code == "cancelled"
        assert cancellations(daemon, job_id) == []
        assert not client.status().running()


def test_a_callback_that_raises_cancels_its_job_at_once(daemon):
    class Stop(Exception):
        pass

    def stop_at_the_third(progress) -> None:
        if progress.iteration >= 3:
            raise Stop

    with daemon.client() as client, daemon.client() as observer:
        job_id = client.submit(rgb_image(48, 40, 1), [rgb_image(40, 40, 2)], {**LONG_SETTINGS, "size": 32})
        with pytest.raises(Stop):
            client.wait(job_id, on_progress=stop_at_the_third)
        raised = time.monotonic()
        deadline = raised + 10
        while observer.status().running():
            assert time.monotonic() < deadline, "the job ran on after its callback raised"
            time.sleep(0.05)
        assert time.monotonic() - raised < 2.0
        assert cancellations(daemon, job_id) == []  # cancelled by the client, not for its silence
        assert client.status().queue == []  # and the client goes on working
