"""install.py's plug-in installation and its main job, on temporary folders."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from nst_engine.cli.image_files import read_image

from .daemon_harness import REPO_ROOT, load_script


def test_plugin_install_is_complete_idempotent_and_removable(tmp_path):
    command = [sys.executable, str(REPO_ROOT / "install.py"), "--plugin-only", "--plugin-dir", str(tmp_path),
               "--gimp-python", "3.13"]
    for _ in range(2):  # idempotent
        subprocess.run(command, check=True, capture_output=True)
    folder = tmp_path / "neural_style"
    script = folder / "neural_style.py"
    assert script.stat().st_mode & stat.S_IXUSR, "GIMP only runs an executable script"
    for name in ("pixels.py", "progress_text.py", "arguments.py", "daemon/wire/messages.py", "daemon/wire/framing.py",
                 "daemon/client/zeromq.py", "daemon/wire/connection.py", "daemon/client/bridge.py",
                 "nst_engine/settings.py", "install.json"):
        assert (folder / name).is_file(), name
    assert_self_contained_and_torch_free(folder)
    for module in ("zmq", "msgpack"):
        assert (folder / "lib" / module).is_dir(), module
    # Built for GIMP's Python (3.13 here), not for the Python running install.py.
    (msgpack_wheel,) = (folder / "lib").glob("msgpack-*.dist-info/WHEEL")
    assert "cp313" in msgpack_wheel.read_text()
    record = json.loads((folder / "install.json").read_text())
    assert record["start_command"][1:] == ["-m", "daemon", "start"]
    assert record["bridge_command"][1:] == ["-m", "daemon.client.bridge"]
    assert not any("torch" in path.name for path in folder.rglob("*") if path.is_dir())
    subprocess.run([*command[:2], "--uninstall", "--plugin-dir", str(tmp_path)], check=True, capture_output=True)
    assert not folder.exists()


def assert_self_contained_and_torch_free(folder):
    """The plug-in's modules import from its own folder (as in GIMP, where the repository is not on the
    path), and none of them loads torch.  (The wheels in lib/ are for GIMP's Python: this one's are used.)"""
    code = f"""
import sys
sys.path.insert(0, {str(folder)!r})
import arguments, pixels, progress_text, daemon.client.bridge, daemon.client.zeromq, nst_engine.settings
modules = [arguments, pixels, progress_text, daemon.client.bridge, daemon.client.zeromq, nst_engine.settings]
outside = [m.__name__ for m in modules if not m.__file__.startswith({str(folder)!r})]
assert not outside, outside
assert not any(m.partition(".")[0] == "torch" for m in sys.modules), "torch was imported"
"""
    subprocess.run([sys.executable, "-I", "-c", code], check=True, cwd=folder)


def test_without_wheels_for_gimps_python_the_plugin_is_installed_for_the_bridge(tmp_path):
    # No pyzmq or msgpack wheel exists for Python 2.6's tags (pyzmq had some for 2.7): the install goes on without them.
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "install.py"), "--plugin-only", "--plugin-dir",
                                str(tmp_path), "--gimp-python", "2.6"], capture_output=True, text=True, check=True)
    folder = tmp_path / "neural_style"
    assert (folder / "neural_style.py").is_file() and (folder / "daemon" / "client" / "bridge.py").is_file()
    assert not (folder / "lib").exists()
    assert "bridge" in completed.stdout
    bridge_python = json.loads((folder / "install.json").read_text())["bridge_command"][0]
    assert subprocess.run([bridge_python, "-c", "import daemon.client.bridge, zmq"], check=False).returncode == 0


def test_the_main_job_stylises_the_bundled_samples(tmp_path, weights_file, monkeypatch):
    monkeypatch.setenv("NEURAL_STYLE_CONNECTION", str(tmp_path / "connection.json"))
    install = load_script("install.py")
    try:
        output = install.run_sample_job(weights_file, tmp_path / "sample.png", size=64, iterations=2)
        result = read_image(output)
        assert result.rgb.shape == (3, 48, 64)
    finally:
        subprocess.run([sys.executable, "-m", "daemon", "stop"], cwd=REPO_ROOT, env=dict(os.environ), check=False,
                       capture_output=True)


def test_torch_build_for_each_machine():
    install = load_script("install.py")
    choose = install.choose_torch
    url = "https://index.example/whl/cu124"  # a stand-in: the repository itself names no index
    assert choose("linux").index_url is None and choose("linux").build == "pypi"  # PyPI's Linux wheels carry CUDA
    assert choose("darwin", nvidia_gpu=False).build == "pypi"  # MPS
    assert choose("win32").build == "pypi"  # no NVIDIA GPU: PyPI's CPU wheel is right
    cuda = choose("win32", nvidia_gpu=True, index_url=url)
    assert (cuda.build, cuda.index_url) == ("cuda", url)
    assert cuda.pip_command("py") == ["py", "-m", "pip", "install", "--disable-pip-version-check", "-q", "torch",
                                      "torchvision", "--index-url", url]
    from_config = choose("win32", nvidia_gpu=True, pip_config_indexes=("https://mirror.example/simple",))
    assert from_config.build == "cuda" and from_config.pip_command("py") is None  # pip's own configuration applies
    assert "mirror.example" in from_config.reason
    missing = choose("win32", nvidia_gpu=True)
    assert missing.build == "pypi" and missing.pip_command("py") is None
    assert "--torch-index-url" in missing.reason and "NEURAL_STYLE_TORCH_INDEX_URL" in missing.reason
    rocm = choose("linux", amd_gpu=True, index_url=url)
    assert rocm.build == "rocm" and rocm.index_url == url
    assert choose("linux", amd_gpu=True, nvidia_gpu=True).build == "pypi"  # NVIDIA first
    assert choose("linux", requested="cpu", index_url=url).build == "cpu"
    assert choose("win32", requested="cpu", nvidia_gpu=True).build == "pypi"  # PyPI's Windows wheel is the CPU one
    assert choose("linux", requested="cuda").build == "pypi"
    with pytest.raises(ValueError):
        choose("linux", requested="tpu")


def test_pip_configuration_indexes_are_read_from_pip_config_list():
    install = load_script("install.py")
    listed = "global.index-url='https://a.example/simple'\ninstall.extra-index-url='https://b.example/x https://c.example/y'\nglobal.timeout='60'\n"
    assert install.pip_config_indexes(listed) == ("https://a.example/simple", "https://b.example/x", "https://c.example/y")
    assert install.pip_config_indexes("") == ()


def test_install_names_no_package_index_host():
    text = (REPO_ROOT / "install.py").read_text()
    assert "http://" not in text and "https://" not in text and "pytorch.org" not in text


def test_connect_records_the_remote_file_and_refuses_an_unsafe_one(tmp_path, monkeypatch, capsys):
    import zmq

    from daemon.wire.connection import ConnectionInfo, CurveKeys, write_connection_file

    install = load_script("install.py")
    keys = CurveKeys(*(zmq.curve_keypair()[0].decode() for _ in range(3)))
    remote = write_connection_file(ConnectionInfo("tcp://gpu-box:5557", curve=keys, invitation="laptop"),
                                   tmp_path / "keys" / "laptop.json")
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: type("Done", (), {"returncode": 1})())  # no pip
    plugin_dir = tmp_path / "plug-ins"
    assert install.main(["--plugin-only", "--plugin-dir", str(plugin_dir), "--gimp-python", "3.13",
                         "--connect", str(remote)]) == 0
    record = json.loads((plugin_dir / "neural_style" / "install.json").read_text())
    assert record["connection_file"] == str(remote.resolve())
    assert "never starts one" in capsys.readouterr().out
    os.chmod(remote, 0o644)
    assert install.main(["--plugin-only", "--plugin-dir", str(plugin_dir), "--connect", str(remote)]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_each_installed_file_is_replaced_whole_or_not_at_all(tmp_path):
    """A full disk (here a 4 KiB file-size limit) while a plug-in file is rewritten leaves the old file as it was."""
    existing = tmp_path / "neural_style.py"
    existing.write_text("the previous version\n")
    child = f"""
import resource, signal, sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from tests.daemon_harness import load_script
install = load_script("install.py")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    install.write_whole(install.Path({str(existing)!r}), b"x" * 65536)
except OSError as error:
    sys.exit(3)
"""
    written = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert written.returncode == 3, written.stderr
    assert existing.read_text() == "the previous version\n"
    assert [path.name for path in tmp_path.iterdir()] == ["neural_style.py"]
