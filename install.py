#!/usr/bin/env python3
"""One-shot set-up for Neural Style for GIMP.

Creates ``.venv/`` beside this file, installs the project (editable) with its test extras into it,
makes sure the VGG19 weights are available, and installs the GIMP 3 plug-in (with pyzmq, msgpack and blake3
built for GIMP's own Python) into GIMP's user plug-in folder.  Run it again at any time: every step is
idempotent.  ``--uninstall`` removes the plug-in.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
VENV_DIR = REPO_ROOT / ".venv"
PLUGIN_NAME = "neural_style"  # GIMP loads plug-ins/<name>/<name>.py
PLUGIN_FILES = ("neural_style.py", "arguments.py", "pixels.py", "progress_text.py", "presets.py", "result_record.py",
                "dialog.py", "items.py", "plan.py", "stylise.py", "user_error.py", "cost_text.py")
# Torch-free modules the plug-in imports: the daemon's client, and the engine's settings schema.
CLIENT_MODULES = ("__init__.py", "records.py", "limits.py", "private_files.py", "protocol.py", "client.py", "messages.py",
                  "client_protocol.py",
                  "connection.py", "bridge.py")
SCHEMA_MODULES = ("__init__.py", "errors.py", "layers.py", "geometry.py", "schema.py", "settings.py")
GIMP_WHEELS = ("pyzmq", "msgpack", "blake3")
GIMP_WHEEL_MODULES = ("zmq", "msgpack", "blake3")
SAMPLES = REPO_ROOT / "samples"  # drawn by samples/make_samples.py; public domain (CC0)


def venv_python() -> Path:
    if sys.platform == "win32":
        return VENV_DIR / "Scripts" / "python.exe"
    return VENV_DIR / "bin" / "python"


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def create_venv() -> None:
    if venv_python().exists():
        step(f"Using the existing virtual environment {VENV_DIR}")
        return
    step(f"Creating the virtual environment {VENV_DIR}")
    venv.EnvBuilder(with_pip=True).create(VENV_DIR)


def install_project() -> None:
    step("Installing the project and its dependencies (torch is large: this can take a few minutes)")
    subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "-e", f"{REPO_ROOT}[test]"],
        check=True,
    )


def fetch_weights(weights_file: Path | None) -> bool:
    """Ask the engine to make the weights available; returns False (with advice printed) when it cannot."""
    command = [str(venv_python()), "-m", "nst_engine", "--fetch-weights"]
    if weights_file is not None:
        command += ["--weights", str(weights_file)]
    step("Checking the VGG19 weights")
    return subprocess.run(command).returncode == 0


def daemon_start_command(weights: Path | None) -> list[str]:
    command = [str(venv_python()), "-m", "daemon", "start"]
    return command + ["--weights", str(weights.resolve())] if weights is not None else command


def bridge_command() -> list[str]:
    """How the plug-in reaches the daemon where GIMP's Python cannot load pyzmq (see daemon/bridge.py)."""
    return [str(venv_python()), "-m", "daemon.bridge"]


def run_sample_job(weights: Path | None, output: Path | None = None, size: int = 256, iterations: int = 100) -> Path:
    """The main job: start the daemon (if none runs) and stylise the bundled sample pair through it."""
    output = output or SAMPLES / "out" / "sample-result.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    step("Starting the daemon and stylising the bundled sample pair through it")
    subprocess.run(daemon_start_command(weights), check=True)
    subprocess.run([str(venv_python()), "-m", "daemon", "run", str(SAMPLES / "content.png"), str(SAMPLES / "style.png"),
                    "-o", str(output), "--size", str(size), "--iterations", str(iterations)], check=True)
    return output


def default_plugin_dir() -> Path:
    """GIMP 3's user plug-in folder on this platform (Flatpak's when that GIMP is installed)."""
    home = Path.home()
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", home / "AppData" / "Roaming")) / "GIMP" / "3.0" / "plug-ins"
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins"
    flatpak = home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0"
    if flatpak.is_dir():
        return flatpak / "plug-ins"
    return home / ".config" / "GIMP" / "3.0" / "plug-ins"


def detect_gimp_python() -> str:
    """GIMP on Linux runs plug-ins with the system's python3; elsewhere we cannot tell (use --gimp-python)."""
    try:
        result = subprocess.run(["python3", "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                                capture_output=True, text=True, check=True)
        return result.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{sys.version_info[0]}.{sys.version_info[1]}"


def install_plugin(plugin_dir: Path, gimp_python: str, weights: Path | None = None) -> Path:
    target = plugin_dir / PLUGIN_NAME
    step(f"Installing the GIMP plug-in into {target} (for GIMP's Python {gimp_python})")
    target.mkdir(parents=True, exist_ok=True)
    for name in PLUGIN_FILES:
        shutil.copy2(REPO_ROOT / "gimp_plugin" / name, target / name)
    (target / "neural_style.py").chmod(0o755)
    for package, modules in (("daemon", CLIENT_MODULES), ("nst_engine", SCHEMA_MODULES)):
        (target / package).mkdir(exist_ok=True)
        for name in modules:
            shutil.copy2(REPO_ROOT / package / name, target / package / name)
    lib = target / "lib"
    if not all((lib / module).is_dir() for module in GIMP_WHEEL_MODULES):
        command = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--upgrade",
                   "--only-binary=:all:", "--target", str(lib), "--python-version", gimp_python,
                   "--implementation", "cp"]
        if sys.platform.startswith("linux"):
            for platform_tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                 "manylinux_2_28_aarch64", "manylinux_2_17_aarch64"):
                command += ["--platform", platform_tag]
        if subprocess.run([*command, *GIMP_WHEELS], check=False).returncode != 0:
            shutil.rmtree(lib, ignore_errors=True)
            step(f"No {', '.join(GIMP_WHEELS)} wheels fit GIMP's Python {gimp_python}: the plug-in will reach the "
                 "daemon through a bridge process run by this project's Python (slower for large images)")
    record = {"start_command": daemon_start_command(weights), "bridge_command": bridge_command(),
              "repository": str(REPO_ROOT)}
    (target / "install.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return target


def uninstall_plugin(plugin_dir: Path) -> None:
    target = plugin_dir / PLUGIN_NAME
    if target.is_dir():
        shutil.rmtree(target)
        step(f"Removed the GIMP plug-in {target}")
    else:
        step(f"No plug-in at {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="use this local VGG19 weights file instead of downloading")
    parser.add_argument("--plugin-dir", type=Path, help="GIMP's plug-in folder (default: the user's, found per platform)")
    parser.add_argument("--gimp-python", help="GIMP's Python version, e.g. 3.13 (default: the system python3's)")
    parser.add_argument("--plugin-only", action="store_true", help="only (re)install the plug-in, with the existing .venv")
    parser.add_argument("--uninstall", action="store_true", help="remove the plug-in")
    args = parser.parse_args(argv)
    plugin_dir = args.plugin_dir or default_plugin_dir()
    if args.uninstall:
        uninstall_plugin(plugin_dir)
        return 0
    if not args.plugin_only:
        create_venv()
        install_project()
    installed = install_plugin(plugin_dir, args.gimp_python or detect_gimp_python(), args.weights)
    print(f"The plug-in is in {installed}: restart GIMP and use Filters → Neural Style….")
    if args.plugin_only:
        return 0
    if not fetch_weights(args.weights):
        step("Done, except for the weights (see above): with them, run python3 install.py again for the sample.")
    else:
        try:
            result = run_sample_job(args.weights)
        except subprocess.CalledProcessError:
            step("Done, but the sample job failed (see above).")
            return 1
        step(f"Done. The sample result is {result}")
    print(f"Stylise from a shell: {venv_python()} -m nst_engine CONTENT STYLE -o OUT.png")
    print(f"Run the tests:        {venv_python()} -m pytest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
