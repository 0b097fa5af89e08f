#!/usr/bin/env python3
"""Daemon latency and transfer figures, in one run.

Prints: submit → first iteration on a warm daemon against the engine alone on the same inputs (the
difference is the daemon's overhead), the cold path (a new process: import, load weights, first
iteration), a second job with the same style (style-cache hit) against the first, and the transfer
throughput of a 4096×4096 RGBA float32 image to the daemon on its default local transport (submit →
accepted), and through the protocol's framing both ways, on that transport (an ipc socket) and over
TCP with CURVE (the transport for Windows and sandboxed GIMPs); and the round trip of an ``estimate``
request (client call → typed reply) at a few sizes, before and after the daemon has measured its speed;
and the compact pixel formats: a 4096×4096 RGBA source sent as u8, u16 and f32 frames (submit →
accepted), and a 4096×4096 result received as u16, f16 and f32, interleaved in the same run; and what a
live preview of a 4096×3072 layer costs at that size and scaled to fit a screen.

    .venv/bin/python benchmarks/daemon_latency.py --random-weights      # or --weights FILE
    .venv/bin/python benchmarks/daemon_latency.py --random-weights --estimate-only
    .venv/bin/python benchmarks/daemon_latency.py --random-weights --transfer-only
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import zmq

REPO_ROOT = Path(__file__).resolve().parents[1]
TRANSFERS = 5  # 4096² transfers timed, each way (this VM's loopback speed varies from one to the next)
CURVE_TRANSFERS = 2  # CURVE encrypts every byte: slow enough that two tell
sys.path.insert(0, str(REPO_ROOT))

from daemon.client.contract import DaemonJobError  # noqa: E402
from daemon.client.zeromq import DaemonClient  # noqa: E402
from daemon.server.auth import IssuedKeys, KeyPair, ZapHandler, make_curve_server  # noqa: E402
from daemon.server.images import rgb_to_frame  # noqa: E402
from daemon.wire.framing import Codec  # noqa: E402
from daemon.wire.limits import TCP_MAX_FRAME_BYTES, MessageCaps  # noqa: E402
from daemon.wire.messages import DType, Image, ImageSpec, MessageType  # noqa: E402
from nst_engine import CancelledError, CancelToken, StyleSettings, StyleTransfer  # noqa: E402
from tests.daemon_harness import start_daemon  # noqa: E402
from tests.stand_ins import write_random_vgg19_features  # noqa: E402

COLD_SCRIPT = """
import sys, time
started = time.perf_counter()
import torch
from nst_engine import StyleTransfer, StyleSettings, CancelToken, CancelledError
engine = StyleTransfer.from_weights(sys.argv[1], "cpu")
side = int(sys.argv[2])
content, style = torch.rand(3, side, side), torch.rand(3, side, side)
token = CancelToken()
def first(progress):
    print(f"{time.perf_counter() - started:.3f}", flush=True)
    token.cancel()
try:
    engine.stylize(content, [style], StyleSettings(size=side, scales=1, iterations=10), on_progress=first, cancel=token)
except CancelledError:
    pass
"""


def image_of(array: np.ndarray) -> Image:
    height, width, channels = array.shape
    return Image(ImageSpec(width, height, channels, DType.F32),
                 memoryview(np.ascontiguousarray(array, dtype="<f4")).cast("B"))


def time_to_first_iteration(client: DaemonClient, content: Image, style: Image, settings: dict) -> tuple[float, float]:
    """(submit → first progress as the client sees it, the part of that spent outside the engine)."""
    started = time.perf_counter()
    job_id = client.submit(content, [style], settings)
    first: list[tuple[float, float]] = []
    cancel = threading.Event()

    def on_progress(progress) -> None:
        if not first:
            latency = time.perf_counter() - started
            first.append((latency, latency - progress.elapsed_s))  # elapsed_s: the engine's own clock
            cancel.set()

    try:
        client.wait(job_id, on_progress=on_progress, cancel=cancel)
    except DaemonJobError:
        pass
    return first[0]


def engine_time_to_first_iteration(engine: StyleTransfer, content: torch.Tensor, style: torch.Tensor,
                                   settings: StyleSettings) -> float:
    token = CancelToken()
    first: list[float] = []

    def on_progress(progress) -> None:
        first.append(progress.elapsed_s)
        token.cancel()

    try:
        engine.stylize(content, [style], settings, on_progress=on_progress, cancel=token)
    except CancelledError:
        pass
    return first[0]


def protocol_round_trip(frame: memoryview, transport: str) -> float:
    """Seconds to send ``frame`` through a DEALER → ROUTER hop and back, framed and checked as the
    daemon and its clients do: over an ipc socket ("ipc"), or over TCP with CURVE and the daemon's ZAP
    handler ("curve", images in 256 KiB frames)."""
    context = zmq.Context()
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    directory, zap = None, None
    if transport == "ipc":
        directory = Path(tempfile.mkdtemp())
        endpoint = f"ipc://{directory / 'bench.sock'}"
        caps = MessageCaps.for_images()
        router.bind(endpoint)
    else:
        keys = IssuedKeys()
        zap = ZapHandler(context, keys, lambda reason: None)
        zap.start()
        server, client = KeyPair.generate(), keys.issue("benchmark")
        make_curve_server(router, server)
        dealer.curve_serverkey, dealer.curve_publickey = server.public.encode(), client.public.encode()
        dealer.curve_secretkey = client.secret.encode()
        caps = MessageCaps.for_images(max_frame_bytes=TCP_MAX_FRAME_BYTES)
        endpoint = f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}"
    for socket in (router, dealer):
        socket.setsockopt(zmq.MAXMSGSIZE, caps.socket_max_bytes)
    dealer.connect(endpoint)
    server_codec, client_codec = Codec(caps), Codec(caps)

    def echo() -> None:
        identity, *parts = router.recv_multipart(copy=False)
        message = server_codec.decode([part.buffer for part in parts])
        router.send_multipart([identity, *server_codec.encode(MessageType.RESULT, {}, message.frames)], copy=False)

    thread = threading.Thread(target=echo)
    thread.start()
    started = time.perf_counter()
    dealer.send_multipart(client_codec.encode(MessageType.SUBMIT, {}, [frame]), copy=False)
    reply = client_codec.decode([part.buffer for part in dealer.recv_multipart(copy=False)])
    elapsed = time.perf_counter() - started
    thread.join()
    assert memoryview(reply.frames[0]).nbytes == frame.nbytes
    router.close(0)
    dealer.close(0)
    if zap is not None:
        zap.stop()
    context.term()
    if directory is not None:
        shutil.rmtree(directory)
    return elapsed


def compact_transfers(client: DaemonClient, rng: np.random.Generator) -> None:
    """Median times of a 4096² RGBA source in each source dtype (submit → accepted: sent, received and
    checked by the daemon), and of a 4096² result in each result dtype (submit → result of a one-iteration
    64² job resized to 4096², less the job's own time, which includes the resize and the conversion to
    the result dtype: what is left is the result's transfer and the job's queueing); the dtypes
    interleaved, so that the machine's load falls alike on each."""
    rgba = rng.random((4096, 4096, 4), dtype=np.float32)
    sources = {DType.U8: np.round(rgba * 255).astype("<u1"), DType.U16: np.round(rgba * 65535).astype("<u2"),
               DType.F32: rgba.astype("<f4")}
    images = {dtype: Image(ImageSpec(4096, 4096, 4, dtype), memoryview(np.ascontiguousarray(array)).cast("B"))
              for dtype, array in sources.items()}
    style = image_of(rng.random((64, 64, 3), dtype=np.float32))
    tiny = {"size": 64, "scales": 1, "iterations": 1}
    sent: dict[DType, list[float]] = {dtype: [] for dtype in images}
    for _ in range(TRANSFERS):
        for dtype, image in images.items():
            started = time.perf_counter()
            job_id = client.submit(image, [style], tiny)
            sent[dtype].append(time.perf_counter() - started)
            client.wait(job_id)
    for dtype, times in sent.items():
        nbytes = images[dtype].spec.nbytes
        print(f"4096×4096 RGBA source as {dtype.value} ({nbytes / 1e6:.0f} MB), submit → accepted: median "
              f"{statistics.median(times) * 1000:.0f} ms ({nbytes / 1e9 / statistics.median(times):.2f} GB/s; "
              f"{' '.join(f'{t * 1000:.0f}' for t in times)} ms)")
    content = image_of(rng.random((64, 64, 3), dtype=np.float32))
    totals: dict[DType, list[float]] = {dtype: [] for dtype in (DType.U16, DType.F16, DType.F32)}
    outside: dict[DType, list[float]] = {dtype: [] for dtype in totals}
    for _ in range(TRANSFERS):
        for dtype in totals:
            started = time.perf_counter()
            result = client.stylize(content, [style], tiny, output_size=(4096, 4096), result_dtype=dtype)
            total = time.perf_counter() - started
            assert result.image.spec.dtype is dtype
            totals[dtype].append(total)
            outside[dtype].append(total - result.elapsed_s)
    for dtype in totals:
        nbytes = 4096 * 4096 * 3 * dtype.itemsize
        print(f"4096×4096 RGB result as {dtype.value} ({nbytes / 1e6:.0f} MB): submit → result median "
              f"{statistics.median(totals[dtype]) * 1000:.0f} ms, of which outside the job (transfer, queue) "
              f"{statistics.median(outside[dtype]) * 1000:.0f} ms "
              f"({' '.join(f'{t * 1000:.0f}' for t in outside[dtype])} ms)")
    result = torch.rand(3, 4096, 4096)
    for dtype in totals:
        times = []
        for _ in range(TRANSFERS):
            started = time.perf_counter()
            rgb_to_frame(result, dtype)
            times.append(time.perf_counter() - started)
        print(f"the daemon's conversion of a 4096×4096 result to {dtype.value} (rgb_to_frame), in this process: "
              f"median {statistics.median(times) * 1000:.0f} ms")


PREVIEW_LAYER = (4096, 3072)  # a 12-megapixel photo's layer
PREVIEW_SIDES = (0, 2560, 1920)  # 0: at the layer's size, as the plug-in asked before; then two screens'
PREVIEWS = 6  # a preview every iteration of a 6-iteration job


def preview_transfers(client: DaemonClient, rng: np.random.Generator) -> None:
    """What a live preview of a 4096×3072 layer costs, u16, at the layer's size and scaled to fit two
    screens: a tiny job with a preview every iteration against the same job without previews, the
    difference over the previews' count (the daemon's resize and conversion, the transfer and the
    client's receipt); interleaved, medians of TRANSFERS."""
    content = image_of(rng.random((64, 48, 3), dtype=np.float32))
    style = image_of(rng.random((64, 64, 3), dtype=np.float32))
    job = {"size": 64, "scales": 1, "iterations": PREVIEWS}
    runs: dict[int | None, list[float]] = {side: [] for side in (None, *PREVIEW_SIDES)}
    sizes: dict[int, tuple[int, int]] = {}
    for _ in range(TRANSFERS):
        for side in runs:
            seen = []
            started = time.perf_counter()
            client.stylize(content, [style], job, output_size=PREVIEW_LAYER, result_dtype=DType.U16,
                           preview_every=0 if side is None else 1, preview_max_side=side or 0,
                           on_progress=lambda progress, seen=seen: seen.append(progress.preview))
            runs[side].append(time.perf_counter() - started)
            previews = [preview for preview in seen if preview is not None]
            if side is not None:
                assert len(previews) == PREVIEWS
                sizes[side] = (previews[0].spec.width, previews[0].spec.height)
    without = statistics.median(runs[None])
    for side in PREVIEW_SIDES:
        width, height = sizes[side]
        each = (statistics.median(runs[side]) - without) / PREVIEWS
        print(f"live preview of a {PREVIEW_LAYER[0]}×{PREVIEW_LAYER[1]} layer, "
              f"{'at its size' if side == 0 else f'fit to {side} px'}: {width}×{height} u16 "
              f"({width * height * 3 * 2 / 1e6:.1f} MB), {each * 1000:.0f} ms each (median of {TRANSFERS} jobs)")

ESTIMATE_SIZES = ((512, 384), (3000, 2000), (8192, 8192))
ESTIMATES = 200  # requests timed per size


def estimate_latency(client: DaemonClient, label: str) -> None:
    """Round trips of the estimate request: what the plug-in's dialog pays each time a value changes."""
    for width, height in ESTIMATE_SIZES:
        settings = {"size": 0}
        client.estimate(settings, width, height, style_sizes=[(512, 512)])  # warm-up
        times = []
        for _ in range(ESTIMATES):
            started = time.perf_counter()
            reply = client.estimate(settings, width, height, style_sizes=[(512, 512)])
            times.append(time.perf_counter() - started)
        times.sort()
        print(f"estimate {width}×{height} ({label}): median {statistics.median(times) * 1000:.2f} ms, "
              f"99th percentile {times[int(0.99 * len(times))] * 1000:.2f} ms, max {times[-1] * 1000:.2f} ms "
              f"({ESTIMATES} requests; {'tiled, ' + str(reply.tiles) + ' tiles' if reply.tiled else 'whole'}, "
              f"{reply.memory_bytes / 2**20:.0f} MiB, runnable {reply.runnable}, seconds {reply.seconds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", type=Path)
    weights.add_argument("--random-weights", action="store_true",
                         help="seeded random VGG19 (timing does not depend on the values)")
    parser.add_argument("--megapixels", type=float, default=1.0, help="content and style size for the latency figures")
    parser.add_argument("--repeats", type=int, default=3, help="jobs per latency figure (median)")
    parser.add_argument("--estimate-only", action="store_true", help="only the estimate request's round trips")
    parser.add_argument("--transfer-only", action="store_true", help="only the compact pixel formats' transfer times")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nst-bench-"))
    weights_file = write_random_vgg19_features(work / "vgg19-random.pth") if args.random_weights else args.weights

    side = int(round((args.megapixels * 1e6) ** 0.5))
    rng = np.random.default_rng(0)
    content_array = rng.random((side, side, 3), dtype=np.float32)
    settings = {"size": side, "scales": 1, "iterations": 10}
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}; images {side}×{side}")

    daemon = start_daemon(work, weights_file)
    if args.transfer_only:
        try:
            with daemon.client(timeout_s=60) as client:
                compact_transfers(client, rng)
                preview_transfers(client, rng)
        finally:
            daemon.stop()
        return
    if args.estimate_only:
        try:
            with daemon.client(timeout_s=60) as client:
                estimate_latency(client, "nothing measured yet")
                client.stylize(image_of(rng.random((64, 64, 3), dtype=np.float32)),
                               [image_of(rng.random((64, 64, 3), dtype=np.float32))],
                               {"size": 64, "scales": 1, "iterations": 5})
                estimate_latency(client, "after one job")
        finally:
            daemon.stop()
        return
    try:
        with daemon.client(timeout_s=60) as client:
            estimate_latency(client, "nothing measured yet")
            styles = [rng.random((side, side, 3), dtype=np.float32) for _ in range(args.repeats)]
            engine = StyleTransfer.from_weights(weights_file, "cpu")
            as_tensor = lambda array: torch.from_numpy(array).permute(2, 0, 1).contiguous()  # noqa: E731
            engine_first = statistics.median(
                engine_time_to_first_iteration(engine, as_tensor(content_array), as_tensor(style),
                                               StyleSettings.from_values(settings))
                for style in styles
            )
            del engine
            time_to_first_iteration(client, image_of(content_array),
                                    image_of(rng.random((64, 64, 3), dtype=np.float32)),
                                    {"size": 64, "scales": 1, "iterations": 2})  # warm-up
            # Interleaved, each style new to the daemon once (first) and then again (cache hit).
            first_runs, cached_runs = [], []
            for style in styles:
                first_runs.append(time_to_first_iteration(client, image_of(content_array), image_of(style), settings))
                cached_runs.append(time_to_first_iteration(client, image_of(content_array), image_of(style), settings))
            first_job = statistics.median(latency for latency, _ in first_runs)
            cached_job = statistics.median(latency for latency, _ in cached_runs)
            overhead = statistics.median(outside for _, outside in first_runs + cached_runs)
            print(f"warm daemon, new style: submit → first iteration {first_job * 1000:.0f} ms "
                  f"(median of {args.repeats}); engine alone in this process {engine_first * 1000:.0f} ms")
            print(f"daemon overhead (latency minus the engine's own elapsed time at its first report): "
                  f"{overhead * 1000:.0f} ms (median of {2 * args.repeats} jobs)")
            print(f"warm daemon, same style again (cache hit): {cached_job * 1000:.0f} ms "
                  f"({first_job / cached_job:.2f}× faster); status: {client.status().style_cache}")

            big = rng.random((4096, 4096, 4), dtype=np.float32)  # touched pages, as an image read from GIMP has
            big_image = image_of(big)
            small_style = image_of(rng.random((64, 64, 3), dtype=np.float32))
            rates = []
            for _ in range(TRANSFERS):
                started = time.perf_counter()
                job_id = client.submit(big_image, [small_style], {"size": 64, "scales": 1, "iterations": 1})
                rates.append(big.nbytes / 1e9 / (time.perf_counter() - started))
                try:
                    client.wait(job_id)
                except DaemonJobError:
                    pass
            print(f"4096×4096 RGBA f32 ({big.nbytes / 1e6:.0f} MB) to the daemon "
                  f"({client.info.endpoint.split(':')[0]}), "
                  f"submit → accepted: {' '.join(f'{rate:.2f}' for rate in rates)} GB/s "
                  f"({TRANSFERS} jobs; median {statistics.median(rates):.2f})")
            compact_transfers(client, rng)
            preview_transfers(client, rng)
    finally:
        daemon.stop()
    for transport, count in (("ipc", TRANSFERS), ("curve", CURVE_TRANSFERS)):
        round_trips = [2 * big.nbytes / 1e9 / protocol_round_trip(big_image.data, transport) for _ in range(count)]
        print(f"protocol framing over {'an ipc socket' if transport == 'ipc' else 'TCP with CURVE'}, there and back: "
              f"{' '.join(f'{rate:.2f}' for rate in round_trips)} GB/s (median {statistics.median(round_trips):.2f})")

    cold = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(weights_file), str(side)], cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True, env=dict(os.environ))
    cold_s = float(cold.stdout.strip().splitlines()[-1])
    print(f"cold path (new process: import, load weights, first iteration): {cold_s * 1000:.0f} ms "
          f"vs warm {first_job * 1000:.0f} ms")


if __name__ == "__main__":
    main()
