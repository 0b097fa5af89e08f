"""install.py's plug-in installation and its main job, on temporary folders."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys

from nst_engine.cli.image_files import read_image

from .daemon_harness import REPO_ROOT


def load_install():
    spec = importlib.util.spec_from_file_location("install", REPO_ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugin_install_is_complete_idempotent_and_removable(tmp_path):
    command = [sys.executable, str(REPO_ROOT / "install.py"), "--plugin-only", "--plugin-dir", str(tmp_path),
               "--gimp-python", "3.13"]
    for _ in range(2):  # idempotent
        subprocess.run(command, check=True, capture_output=True)
    folder = tmp_path / "neural_style"
    script = folder / "neural_style.py"
    assert script.stat().st_mode & stat.S_IXUSR, "GIMP only runs an executable script"
    for name in ("pixels.py", "progress_text.py", "arguments.py", "daemon/records.py", "daemon/protocol.py",
                 "daemon/client.py", "daemon/connection.py", "daemon/bridge.py", "nst_engine/settings.py", "install.json"):
        assert (folder / name).is_file(), name
    assert_self_contained_and_torch_free(folder)
    for module in ("zmq", "msgpack", "blake3"):
        assert (folder / "lib" / module).is_dir(), module
    # Built for GIMP's Python (3.13 here), not for the Python running install.py.
    (msgpack_wheel,) = (folder / "lib").glob("msgpack-*.dist-info/WHEEL")
    assert "cp313" in msgpack_wheel.read_text()
    record = json.loads((folder / "install.json").read_text())
    assert record["start_command"][1:] == ["-m", "daemon", "start"]
    assert record["bridge_command"][1:] == ["-m", "daemon.bridge"]
    assert not any("torch" in path.name for path in folder.rglob("*") if path.is_dir())
    subprocess.run([*command[:2], "--uninstall", "--plugin-dir", str(tmp_path)], check=True, capture_output=True)
    assert not folder.exists()


def assert_self_contained_and_torch_free(folder):
    """The plug-in's modules import from its own folder (as in GIMP, where the repository is not on the
    path), and none of them loads torch.  (The wheels in lib/ are for GIMP's Python: this one's are used.)"""
    code = f"""
import sys
sys.path.insert(0, {str(folder)!r})
import arguments, pixels, progress_text, daemon.bridge, daemon.client, nst_engine.settings
modules = [arguments, pixels, progress_text, daemon.bridge, daemon.client, nst_engine.settings]
outside = [m.__name__ for m in modules if not m.__file__.startswith({str(folder)!r})]
assert not outside, outside
assert not any(m.partition(".")[0] == "torch" for m in sys.modules), "torch was imported"
"""
    subprocess.run([sys.executable, "-I", "-c", code], check=True, cwd=folder)


def test_without_wheels_for_gimps_python_the_plugin_is_installed_for_the_bridge(tmp_path):
    # No pyzmq, msgpack or blake3 wheel exists for Python 2.7's tags: the install goes on without them.
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "install.py"), "--plugin-only", "--plugin-dir",
                                str(tmp_path), "--gimp-python", "2.7"], capture_output=True, text=True, check=True)
    folder = tmp_path / "neural_style"
    assert (folder / "neural_style.py").is_file() and (folder / "daemon" / "bridge.py").is_file()
    assert not (folder / "lib").exists()
    assert "bridge" in completed.stdout
    bridge_python = json.loads((folder / "install.json").read_text())["bridge_command"][0]
    assert subprocess.run([bridge_python, "-c", "import daemon.bridge, zmq"], check=False).returncode == 0


def test_the_main_job_stylises_the_bundled_samples(tmp_path, weights_file, monkeypatch):
    monkeypatch.setenv("NEURAL_STYLE_CONNECTION", str(tmp_path / "connection.json"))
    install = load_install()
    try:
        output = install.run_sample_job(weights_file, tmp_path / "sample.png", size=64, iterations=2)
        result = read_image(output)
        assert result.rgb.shape == (3, 48, 64)
    finally:
        subprocess.run([sys.executable, "-m", "daemon", "stop"], cwd=REPO_ROOT, env=dict(os.environ), check=False,
                       capture_output=True)
