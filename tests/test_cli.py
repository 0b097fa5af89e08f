"""The command line end to end: files in, files out, readable errors, no tracebacks."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from nst_engine.cli import main
from nst_engine.cli.image_files import ImageFileError, read_image, write_image
from nst_engine.weights import WEIGHTS_ENV_VAR

from .icc import adobe_rgb_like_profile
from .stand_ins import smooth_image

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def image_pair(tmp_path):
    content, style = tmp_path / "content.png", tmp_path / "style.png"
    write_image(content, smooth_image(60, 80, seed=3), torch.linspace(0, 1, 80).expand(1, 60, 80), bits=16)
    write_image(style, smooth_image(64, 64, seed=4), bits=8)
    return content, style


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != WEIGHTS_ENV_VAR}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "nst_engine", *args], capture_output=True, text=True, env=full_env,
                          cwd=REPO_ROOT, timeout=300)


def test_16_bit_in_gives_16_bit_out_with_alpha(image_pair, weights_file, tmp_path):
    content, style = image_pair
    out = tmp_path / "out.png"
    result = run_cli(str(content), str(style), "-o", str(out), "--size", "64", "--iterations", "4",
                     "--weights", str(weights_file), "--seed", "0")
    assert result.returncode == 0, result.stderr
    written = read_image(out)
    assert written.bits == 16 and written.rgb.shape == (3, 48, 64)
    assert written.alpha is not None and written.alpha.shape == (1, 48, 64)
    # 16-bit precision: values that are not multiples of 1/255 survive.
    assert ((written.rgb * 255) - (written.rgb * 255).round()).abs().max() > 0.01


def test_weights_from_the_torch_hub_cache(image_pair, weights_dir, tmp_path):
    """The issue's example command, with the default weights found in the torch hub cache."""
    content, style = image_pair
    cache = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cache.parent.mkdir(parents=True)
    cache.symlink_to(weights_dir / "vgg19-full.pth")
    out = tmp_path / "out.png"
    result = run_cli(str(content), str(style), "-o", str(out), "--size", "64", "--iterations", "3", "--seed", "0",
                     "--bits", "8", env={"TORCH_HOME": str(tmp_path / "torch")})
    assert result.returncode == 0, result.stderr
    assert read_image(out).bits == 8


def test_fetch_weights_reports_success(weights_file):
    result = run_cli("--fetch-weights", "--weights", str(weights_file))
    assert result.returncode == 0 and "available" in result.stdout


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda c, s, t: [str(t / "missing.png"), str(s), "-o", str(t / "o.png")], "missing.png: no such file"),
        (lambda c, s, t: [str(c), str(t / "bad.png"), "-o", str(t / "o.png")], "bad.png: not a readable image"),
        (lambda c, s, t: [str(c), str(s), "-o", str(t / "o.tif"), "--bits", "16"], "16-bit output is written as PNG"),
        (lambda c, s, t: [str(c), str(s), "-o", str(t / "o.png"), "--iterations", "0"], "iterations must be"),
    ],
)
def test_errors_are_one_readable_line(image_pair, weights_file, tmp_path, make_args, expected):
    content, style = image_pair
    (tmp_path / "bad.png").write_bytes(b"this is not a picture")
    args = make_args(content, style, tmp_path) + ["--size", "32", "--weights", str(weights_file)]
    if "--iterations" not in args:
        args += ["--iterations", "1"]
    result = run_cli(*args)
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_weights_explain_the_fix(image_pair, tmp_path, monkeypatch, capsys):
    content, style = image_pair
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    assert main([str(content), str(style), "-o", str(tmp_path / "o.png"), "--size", "32", "-q"]) == 1
    error = capsys.readouterr().err
    assert "VGG19 weights are not available" in error and "--weights FILE" in error


def test_progress_bar_draws_on_a_terminal():
    from nst_engine.cli.progress_bar import TerminalProgressBar
    from nst_engine.progress import LossTerms, Progress

    stream = io.StringIO()
    bar = TerminalProgressBar(stream, force=True)
    bar(Progress(1, 2, 64, 48, 5, 10, 5, 20, LossTerms(1.0, 2.0, 0.0, 3.0), 1.5))
    bar.close()
    assert "stage 1/2" in stream.getvalue() and "5/20" in stream.getvalue()


def test_icc_profile_is_converted_to_srgb(tmp_path):
    # Saturated Adobe RGB green lies outside sRGB; a mid grey stays (nearly) grey.
    image = Image.new("RGB", (2, 1))
    image.putpixel((0, 0), (40, 200, 40))
    image.putpixel((1, 0), (128, 128, 128))
    tagged, plain = tmp_path / "adobe.png", tmp_path / "plain.png"
    image.save(tagged, icc_profile=adobe_rgb_like_profile())
    image.save(plain)
    converted, raw = read_image(tagged).rgb, read_image(plain).rgb
    assert (converted[:, 0, 0] - raw[:, 0, 0]).abs().max() > 0.05
    grey = converted[:, 0, 1]
    assert (grey.max() - grey.min()) < 0.02


def test_16_bit_grayscale_tiff_keeps_precision(tmp_path):
    import numpy as np

    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000 + 7).astype(np.uint16)
    path = tmp_path / "gray16.tif"
    Image.fromarray(values).save(path)
    loaded = read_image(path)
    assert loaded.bits == 16 and loaded.rgb.shape == (3, 8, 8)
    assert torch.allclose(loaded.rgb[1], torch.from_numpy(values.astype("float32")) / 65535, atol=1e-7)


def test_unreadable_profile_is_reported(tmp_path):
    path = tmp_path / "broken-profile.png"
    Image.new("RGB", (4, 4)).save(path, icc_profile=b"garbage profile bytes")
    with pytest.raises(ImageFileError, match="colour profile"):
        read_image(path)


_FULL_DISK_CHILD = """
import resource, signal, sys, torch
from nst_engine.cli.image_files import ImageFileError, write_image
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_image(sys.argv[1], torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(1)), bits=16)
except ImageFileError as error:
    print(error)
    sys.exit(3)
"""


@pytest.mark.parametrize("name", ["existing.png", "link.png"])
def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, name):
    """The disk fills up while the result is written: the previous image stays as it was, with no leftover
    (a 96×96 16-bit PNG of noise is far over the 4 KiB the writing process may write)."""
    existing = tmp_path / "existing.png"
    write_image(existing, smooth_image(32, 32, seed=5), bits=8)
    before = existing.read_bytes()
    if name == "link.png":
        (tmp_path / name).symlink_to(existing)
    written = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, str(tmp_path / name)], capture_output=True,
                             text=True, cwd=REPO_ROOT, timeout=120)
    assert written.returncode == 3, written.stderr
    assert "cannot be written" in written.stdout
    assert existing.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted({"existing.png", name})


def test_a_written_image_replaces_the_old_one_and_keeps_its_mode(tmp_path):
    out = tmp_path / "out.png"
    write_image(out, smooth_image(16, 16, seed=1), bits=8)
    out.chmod(0o640)
    write_image(out, smooth_image(20, 24, seed=2), bits=16)
    assert read_image(out).rgb.shape == (3, 20, 24) and read_image(out).bits == 16
    assert out.stat().st_mode & 0o777 == 0o640
    assert [path.name for path in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize(("output", "message"), [
    ("missing/out.png", "the folder"),
    ("out.webq", "unknown image format"),
    ("out.jpg", "16-bit output is written as PNG only"),
    (".", "is a folder"),
])
def test_an_unwritable_output_is_refused_before_the_model_loads(image_pair, tmp_path, output, message):
    """No weights are given: the output's error must come first, before any model is looked for."""
    content, style = image_pair  # a 16-bit content: 16-bit output by default
    result = run_cli(str(content), str(style), "-o", str(tmp_path / output), "--size", "32",
                     "--weights", str(tmp_path / "no-such-weights.pth"))
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_read_only_folder_is_refused_before_the_model_loads(image_pair):
    """As another user (root writes anywhere), in a folder that user can read but not write."""
    shared = Path(tempfile.mkdtemp(prefix="nst-read-only-"))
    try:
        shared.chmod(0o755)
        for path in image_pair:
            shutil.copy(path, shared / path.name)
            (shared / path.name).chmod(0o644)
        command = [sys.executable, "-m", "nst_engine", str(shared / "content.png"), str(shared / "style.png"), "-o",
                   str(shared / "out.png"), "--size", "32", "--weights", str(shared / "no-such-weights.pth")]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        else:
            shared.chmod(0o555)
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                                env={**os.environ, "HOME": str(shared)})
    finally:
        shared.chmod(0o755)
        shutil.rmtree(shared)
    assert result.returncode == 1
    assert "cannot be written" in result.stderr and "Traceback" not in result.stderr, result.stderr
