"""Sequence jobs on a real daemon (issue #28): an animation's frames stream in as one job and their results
stream out one by one, in order; cancel and a refused frame end the job; two clients' sequences stay apart."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from daemon.client.contract import DaemonJobError
from daemon.wire.messages import DType, Frame, Image, ImageSpec, MessageType
from nst_engine.cli.animation_files import read_animation, write_animation
from nst_engine.cli.image_files import read_image, write_image

from . import test_temporal as temporal
from .daemon_harness import REPO_ROOT, image_array, rgb_image, start_daemon, wait_until
from .stand_ins import smooth_image

HEIGHT, WIDTH = 24, 32
# fp32 pinned: the same arithmetic on any CPU.
SETTINGS = {"size": 0, "iterations": 4, "scales": 1, "precision": "fp32"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, weights_file):
    running = start_daemon(tmp_path_factory.mktemp("sequences"), weights_file, "--queue", "2")
    yield running
    running.stop()


def sliding_frames(count: int, seed: int) -> list[Image]:
    """A window sliding 4 px right per frame over a larger picture."""
    source = image_array(rgb_image(HEIGHT, WIDTH + 4 * count, seed=seed))
    return [Image(ImageSpec(WIDTH, HEIGHT, 3, DType.U8),
                  memoryview(np.ascontiguousarray(source[:, 4 * t: 4 * t + WIDTH])).cast("B")) for t in range(count)]


def style() -> Image:
    return rgb_image(32, 32, seed=2)


def pixels(image: Image) -> np.ndarray:
    return image_array(image).astype(np.float32)


def test_a_sequence_job_yields_each_frame_in_order_with_frame_progress(daemon):
    frames = sliding_frames(4, seed=1)
    records = []
    with daemon.client() as client:
        results = list(client.stylize_sequence(frames, len(frames), [style()], SETTINGS, frame_iterations=2,
                                               on_progress=records.append))
        assert client.status().running() == []
    assert [result.frame for result in results] == [1, 2, 3, 4]
    assert len({result.job_id for result in results}) == 1  # one job
    assert all((result.image.spec.width, result.image.spec.height) == (WIDTH, HEIGHT) for result in results)
    assert {record.frames for record in records} == {4}
    assert [record.frame for record in records] == sorted(record.frame for record in records)
    assert {record.frame: record.stage_iterations for record in records} == {1: 4, 2: 2, 3: 2, 4: 2}


def test_two_clients_sequences_do_not_mix(daemon):
    """Run at once on one worker (the second waits in the queue with its next frame held): each client gets its
    own frames' results, each nearest its own frame."""
    sequences = {seed: sliding_frames(3, seed=seed) for seed in (3, 4)}
    results: dict[int, list] = {}
    errors = []

    def run(seed: int) -> None:
        try:
            with daemon.client() as client:
                results[seed] = list(client.stylize_sequence(sequences[seed], 3, [style()], SETTINGS,
                                                             frame_iterations=2, result_dtype=DType.F32))
        except Exception as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in sequences]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors
    every_frame = [(seed, index, pixels(frame) / 255.0) for seed, frames in sequences.items()
                   for index, frame in enumerate(frames)]
    for seed, got in results.items():
        assert [result.frame for result in got] == [1, 2, 3]
        for index, result in enumerate(got):
            picture = pixels(result.image)
            nearest = min(every_frame, key=lambda item: float(np.square(picture - item[2]).mean()))
            assert nearest[:2] == (seed, index)


def test_cancel_mid_sequence_ends_the_job(daemon):
    frames = sliding_frames(4, seed=5)
    cancel = threading.Event()
    received = []

    def on_progress(record) -> None:
        if record.frame == 2:
            cancel.set()

    with daemon.client() as client:
        with pytest.raises(DaemonJobError) as raised:
            for result in client.stylize_sequence(frames, len(frames), [style()], SETTINGS,
                                                  frame_iterations=50, on_progress=on_progress, cancel=cancel):
                received.append(result.frame)
        assert raised.value.code == "cancelled"
        assert received == [1]
        # the daemon goes on: a next sequence runs whole
        assert len(list(client.stylize_sequence(frames[:2], 2, [style()], SETTINGS, frame_iterations=1))) == 2


def test_a_frame_of_another_size_is_refused_and_ends_the_job(daemon):
    frames = sliding_frames(3, seed=6)
    frames[1] = rgb_image(HEIGHT, WIDTH + 8, seed=7)
    with daemon.client() as client:
        with pytest.raises(DaemonJobError) as raised:
            list(client.stylize_sequence(frames, len(frames), [style()], SETTINGS, frame_iterations=1))
        assert raised.value.code == "invalid_request"
        assert f"frame 2 is {WIDTH + 8}×{HEIGHT} pixels, but the sequence's frames are {WIDTH}×{HEIGHT}" in str(
            raised.value)
        # the worker stops within an iteration of the first frame, after the refusal was sent
        wait_until(lambda: client.status().running() == [], 5, "the worker idle again")


def test_frames_out_of_turn_or_for_another_clients_job_are_refused(daemon):
    frames = sliding_frames(2, seed=8)
    with daemon.client() as owner, daemon.client() as intruder:
        sequence = owner.stylize_sequence(iter(frames), 5, [style()], SETTINGS, frame_iterations=1)
        first = next(sequence)  # frame 2 went with it; frames 3 to 5 never come
        intruder._send(MessageType.FRAME, Frame(first.job_id, 3, frames[0].spec), [frames[0].data])
        reply = intruder._receive(10)
        assert reply is not None and reply.type is MessageType.ERROR
        assert reply.body["code"] == "invalid_request" and "no sequence job" in reply.body["message"]
        with pytest.raises(DaemonJobError, match="the sequence has 2 frames, not 5"):
            next(sequence)
        # leaving it cancelled the job: a frame sent for it now is dropped, and the daemon answers as ever
        owner.ping()


def test_a_sequence_refuses_an_init_image(daemon):
    frames = sliding_frames(2, seed=9)
    with daemon.client() as client, pytest.raises(DaemonJobError, match="takes no init image"):
        next(client.stylize_sequence(frames, 2, [style()], SETTINGS, init=frames[0]))


def test_a_failure_during_a_frame_ends_the_job_with_its_error(daemon):
    frames = sliding_frames(3, seed=10)
    with daemon.client() as client, pytest.raises(DaemonJobError) as raised:
        list(client.stylize_sequence(frames, 3, [style()], SETTINGS, frame_iterations=1, fault="fail"))
    assert raised.value.code == "internal" and "injected failure" in str(raised.value)


# -- python -m daemon run with an animation ------------------------------------------------------------
def daemon_run(daemon, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NEURAL_STYLE_CONNECTION=str(daemon.connection_file))
    return subprocess.run([sys.executable, "-m", "daemon", "run", *args, "--size", "0", "--scales", "1",
                           "--iterations", "3", "--frame-iterations", "1", "--precision", "fp32", "-q"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def nearest_frames(results: list[torch.Tensor], frames: list[torch.Tensor]) -> list[int]:
    return [min(range(len(frames)), key=lambda index: (result - frames[index]).square().mean().item())
            for result in results]


def test_daemon_run_takes_a_folder_of_frames(daemon, tmp_path):
    frames_dir, out, style_file = tmp_path / "frames", tmp_path / "out", tmp_path / "style.png"
    frames_dir.mkdir()
    frames = temporal.sliding_frames(3, step=(4, 8))
    names = ["f8.png", "f9.png", "f10.png"]
    for name, frame in zip(names, frames):
        write_image(frames_dir / name, frame)
    write_image(style_file, smooth_image(32, 32, seed=2))
    run = daemon_run(daemon, str(frames_dir), str(style_file), "-o", str(out), "--temporal-weight", "1")
    assert run.returncode == 0, run.stderr
    assert sorted(path.name for path in out.iterdir()) == sorted(names)
    assert nearest_frames([read_image(out / name).rgb for name in names], frames) == [0, 1, 2]


def test_daemon_run_takes_an_animated_png_and_keeps_its_timing(daemon, tmp_path):
    animation, out, style_file = tmp_path / "in.png", tmp_path / "out.png", tmp_path / "style.png"
    frames = temporal.sliding_frames(3, step=(4, 8))
    write_animation(animation, [(frame, None) for frame in frames], [70, 110, 150], loop=2)
    write_image(style_file, smooth_image(32, 32, seed=2))
    run = daemon_run(daemon, str(animation), str(style_file), "-o", str(out))
    assert run.returncode == 0, run.stderr
    written = read_animation(out)
    assert written.durations == [70, 110, 150] and written.loop == 2
    assert nearest_frames([frame.rgb for frame in written.frames], frames) == [0, 1, 2]
