#!/usr/bin/env python3
"""One-shot set-up for Neural Style for GIMP.

Creates ``.venv/`` beside this file, installs the project (editable) with its test extras into it,
makes sure the VGG19 weights are available, and installs the GIMP 3 plug-in (with pyzmq and msgpack
built for GIMP's own Python) into GIMP's user plug-in folder.  Run it again at any time: every step is
idempotent.  ``--uninstall`` removes the plug-in.

It picks the torch build for the machine (:func:`choose_torch`), installs for a Flatpak GIMP (the
connection file in the app's own folder, the daemon started on the host) and, with ``--connect FILE``,
points the plug-in at a daemon on another machine (a file from ``python -m daemon invite``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
VENV_DIR = REPO_ROOT / ".venv"
PLUGIN_NAME = "neural_style"  # GIMP loads plug-ins/<name>/<name>.py
PLUGIN_FILES = tuple(sorted(path.name for path in (REPO_ROOT / "gimp_plugin").glob("*.py")
                            if path.name != "__init__.py"))
# Torch-free code the plug-in imports: the daemon's wire format and clients (whole folders), and the
# engine's settings schema.
CLIENT_PACKAGES = ("wire", "client")
SCHEMA_MODULES = ("__init__.py", "errors.py", "layers.py", "geometry.py", "schema.py", "settings.py")
GIMP_WHEELS = ("pyzmq", "msgpack")
GIMP_WHEEL_MODULES = ("zmq", "msgpack")
SAMPLES = REPO_ROOT / "samples"  # drawn by samples/make_samples.py; public domain (CC0)
TORCH_INDEX_ENV_VAR = "NEURAL_STYLE_TORCH_INDEX_URL"

sys.path.insert(0, str(REPO_ROOT))
from daemon.client import launch  # noqa: E402  (standard library only: importable before .venv exists)


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


@dataclass(frozen=True)
class TorchChoice:
    build: str  # "pypi" (PyPI's default for the platform), "cuda", "rocm" or "cpu"
    index_url: str | None  # the package index to take torch from; None: PyPI, or the user's pip configuration
    reason: str

    def pip_command(self, python: str) -> list[str] | None:
        """The command that installs torch from ``index_url`` before the project; None: the project's own
        install brings torch (from PyPI or from the user's pip configuration)."""
        if self.index_url is None:
            return None
        return [python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "torch", "torchvision",
                "--index-url", self.index_url]


def choose_torch(platform: str, *, requested: str = "auto", nvidia_gpu: bool = False, amd_gpu: bool = False,
                 index_url: str | None = None, pip_config_indexes: tuple[str, ...] = ()) -> TorchChoice:
    """The torch build for a machine.  PyPI's wheels carry CUDA on Linux and MPS on macOS, but on Windows
    they are CPU-only, and ROCm builds are not on PyPI: those come from a PyTorch package index, whose
    address the user gives (--torch-index-url or $NEURAL_STYLE_TORCH_INDEX_URL) or has in pip's own
    configuration.  This repository names no index host."""
    if requested not in ("auto", "cpu", "cuda", "rocm"):
        raise ValueError(f"--torch must be auto, cpu, cuda or rocm, not {requested!r}")
    windows, mac = platform == "win32", platform == "darwin"
    if requested == "auto":
        if windows and nvidia_gpu:
            requested = "cuda"
        elif platform.startswith("linux") and amd_gpu and not nvidia_gpu:
            requested = "rocm"
        else:
            what = "CPU" if windows else "MPS" if mac else "CUDA where there is an NVIDIA GPU"
            return TorchChoice("pypi", index_url, f"PyPI's torch for this platform ({what})" if index_url is None
                               else "torch from the index you gave")
    needs_index = (requested == "rocm" or (requested == "cuda" and windows)
                   or (requested == "cpu" and not windows and not mac))
    if not needs_index:
        return TorchChoice("pypi" if index_url is None else requested, index_url,
                           f"PyPI's torch already is the {requested} build here" if index_url is None
                           else f"the {requested} build from the index you gave")
    if index_url is not None:
        return TorchChoice(requested, index_url, f"the {requested} build from the index you gave")
    if pip_config_indexes:
        return TorchChoice(requested, None, f"the {requested} build from your pip configuration's index "
                           f"({', '.join(pip_config_indexes)})")
    return TorchChoice("pypi", None, f"PyPI's torch, which is not the {requested} build here: give PyTorch's "
                       f"{requested} package index with --torch-index-url URL (or ${TORCH_INDEX_ENV_VAR}, or in "
                       "pip's configuration) to get it")


def pip_config_indexes(pip_config_list: str) -> tuple[str, ...]:
    """The index URLs in ``pip config list`` output (lines like ``global.index-url='…'``)."""
    found = []
    for line in pip_config_list.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith((".index-url", ".extra-index-url")):
            found += value.strip().strip("'\"").split()
    return tuple(found)


def detect_torch_machine() -> dict[str, object]:
    """What choose_torch needs to know about this machine (besides the platform)."""
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                            check=False)
    return {
        "nvidia_gpu": shutil.which("nvidia-smi") is not None,
        "amd_gpu": shutil.which("rocminfo") is not None or Path("/opt/rocm").is_dir(),
        "pip_config_indexes": pip_config_indexes(config.stdout if config.returncode == 0 else ""),
    }


def install_project(torch: TorchChoice | None = None, ray: bool = False) -> None:
    if torch is not None:
        step(f"torch: {torch.reason}")
        if (command := torch.pip_command(str(venv_python()))) is not None:
            subprocess.run(command, check=True)
    step("Installing the project and its dependencies (torch is large: this can take a few minutes)")
    subprocess.run(
        [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q",
         "-e", f"{REPO_ROOT}[{'test,ray' if ray else 'test'}]"],
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
    command = launch.daemon_command("start", python=venv_python())
    return command + ["--weights", str(weights.resolve())] if weights is not None else command


def bridge_command() -> list[str]:
    """How the plug-in reaches the daemon where GIMP's Python cannot load pyzmq (see daemon/client/bridge.py)."""
    return [str(venv_python()), "-m", "daemon.client.bridge"]  # a module of its own, not a daemon subcommand


def run_sample_job(weights: Path | None, output: Path | None = None, size: int = 256, iterations: int = 100,
                   connect: Path | None = None) -> Path:
    """The main job: start the daemon (if none runs) and stylise the bundled sample pair through it; with
    ``connect``, through the remote daemon that file names instead, starting nothing."""
    output = output or SAMPLES / "out" / "sample-result.png"
    output.parent.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ)
    if connect is not None:
        step(f"Stylising the bundled sample pair through the daemon that {connect} names")
        environment[launch.CONNECTION_ENV_VAR] = str(connect.resolve())
    else:
        step("Starting the daemon and stylising the bundled sample pair through it")
        subprocess.run(daemon_start_command(weights), check=True)
    subprocess.run([*launch.daemon_command("run", python=venv_python()),
                    str(SAMPLES / "content.png"), str(SAMPLES / "style.png"),
                    "-o", str(output), "--size", str(size), "--iterations", str(iterations)],
                   check=True, env=environment)
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


def detect_gimp_python(flatpak: bool = False) -> str:
    """GIMP on Linux runs plug-ins with the system's python3 (a Flatpak GIMP, with its runtime's); elsewhere
    we cannot tell (use --gimp-python)."""
    probe = ["-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"]
    command = (["flatpak", "run", "--command=python3", launch.GIMP_FLATPAK_APP, *probe] if flatpak
               else ["python3", *probe])
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
        return result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"{sys.version_info[0]}.{sys.version_info[1]}"


def flatpak_may_spawn_on_host(app_id: str = launch.GIMP_FLATPAK_APP) -> bool:
    """Whether the Flatpak app may run commands on the host (flatpak-spawn --host), from its permissions."""
    try:
        shown = subprocess.run(["flatpak", "info", "--show-permissions", app_id], capture_output=True, text=True,
                               check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    return launch.flatpak_permissions_allow_spawn(shown.stdout)


class ConnectError(Exception):
    """The file given to --connect is not a usable connection file."""


def check_connection_file(path: Path) -> dict:
    """A client connection file from ``daemon invite``: private (0600, ours) and naming an endpoint and keys."""
    try:
        found = path.stat()
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConnectError(f"{path} cannot be read as a connection file ({error}).") from None
    if os.name == "posix" and (found.st_mode & 0o077 or found.st_uid != os.geteuid()):
        raise ConnectError(f"{path} must be yours and private: chmod 600 {path}.")
    if not isinstance(data, dict) or not str(data.get("endpoint", "")).startswith("tcp://") or "curve" not in data:
        raise ConnectError(f"{path} is not a client connection file (make one with python -m daemon invite).")
    return data


def plugin_record(*, weights: Path | None, flatpak: bool, home: Path, may_spawn: bool,
                  connection_file: Path | None) -> dict:
    """What the plug-in reads from install.json (daemon/client/launch.py's plan_launch)."""
    start = daemon_start_command(weights)
    record: dict = {"start_command": start, "bridge_command": bridge_command(), "repository": str(REPO_ROOT)}
    if flatpak:
        shared = connection_file or launch.flatpak_connection_file(home)
        host = launch.host_start_command(start[0], shared, start[4:])
        record.update(connection_file=str(shared), host_start_command=host, bridge_command=None,
                      start_command=launch.spawn_on_host(host, shared) if may_spawn else None)
    elif connection_file is not None:
        record["connection_file"] = str(connection_file)
    return record


def install_plugin(plugin_dir: Path, gimp_python: str, weights: Path | None = None, *, connect: Path | None = None,
                   home: Path | None = None, may_spawn: bool | None = None) -> Path:
    home = home or Path.home()
    flatpak = launch.is_flatpak_plugin_dir(plugin_dir, home)
    target = plugin_dir / PLUGIN_NAME
    step(f"Installing the GIMP plug-in into {target} (for GIMP's Python {gimp_python}"
         f"{', Flatpak' if flatpak else ''})")
    connection_file = None
    if connect is not None:
        check_connection_file(connect)
        connection_file = connect.resolve()
        if flatpak:  # the sandbox sees the app's own folder, not the file where it is
            connection_file = launch.flatpak_connection_file(home).with_name("remote.json")
            connection_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_whole(connection_file, connect.read_bytes(), mode=0o600)
        step(f"The plug-in will use the daemon that {connection_file} names; it never starts one on this machine")
    target.mkdir(parents=True, exist_ok=True)
    for name in PLUGIN_FILES:
        copy_whole(REPO_ROOT / "gimp_plugin" / name, target / name)
    (target / "neural_style.py").chmod(0o755)
    shutil.rmtree(target / "daemon", ignore_errors=True)  # no module of an earlier layout stays behind
    (target / "daemon").mkdir()
    copy_whole(REPO_ROOT / "daemon" / "__init__.py", target / "daemon" / "__init__.py")
    for package in CLIENT_PACKAGES:
        shutil.copytree(REPO_ROOT / "daemon" / package, target / "daemon" / package,
                        ignore=shutil.ignore_patterns("__pycache__"), copy_function=copy_whole)
    (target / "nst_engine").mkdir(exist_ok=True)
    for name in SCHEMA_MODULES:
        copy_whole(REPO_ROOT / "nst_engine" / name, target / "nst_engine" / name)
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
    if flatpak and not lib.is_dir():
        step("A Flatpak GIMP cannot run the bridge (a host program): install wheels that fit its Python "
             "(--gimp-python VERSION) for the plug-in to work")
    if flatpak and may_spawn is None:
        may_spawn = flatpak_may_spawn_on_host()
    record = plugin_record(weights=weights, flatpak=flatpak, home=home, may_spawn=bool(may_spawn),
                           connection_file=connection_file)
    if flatpak and record["start_command"] is None and connect is None:
        step("This Flatpak GIMP may not start programs on the host: start the daemon yourself with "
             + launch.shell_command(record["host_start_command"], Path(record["connection_file"])))
    write_whole(target / "install.json", json.dumps(record, indent=2).encode())
    return target


def write_whole(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write beside ``path`` and rename over it: an interrupted install or a full disk leaves each file whole."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def copy_whole(source: Path | str, target: Path | str) -> None:
    write_whole(Path(target), Path(source).read_bytes(), mode=Path(source).stat().st_mode & 0o777)


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
    parser.add_argument("--plugin-dir", type=Path,
                        help="GIMP's plug-in folder (default: the user's, found per platform)")
    parser.add_argument("--gimp-python", help="GIMP's Python version, e.g. 3.13 (default: the system python3's)")
    parser.add_argument("--plugin-only", action="store_true",
                        help="only (re)install the plug-in, with the existing .venv")
    parser.add_argument("--uninstall", action="store_true", help="remove the plug-in")
    parser.add_argument("--connect", type=Path, metavar="FILE",
                        help="use the daemon on another machine that this client connection file names (made there "
                        "with python -m daemon invite); the plug-in then never starts a local one")
    parser.add_argument("--torch", choices=("auto", "cpu", "cuda", "rocm"), default="auto",
                        help="which torch build to install (default: the one for this machine)")
    parser.add_argument("--torch-index-url", metavar="URL", default=os.environ.get(TORCH_INDEX_ENV_VAR) or None,
                        help=f"PyTorch's package index for the chosen build (default: ${TORCH_INDEX_ENV_VAR}, "
                        "else pip's configuration); needed for CUDA on Windows and for ROCm")
    parser.add_argument("--ray", action="store_true",
                        help="also install Ray, for a daemon that runs jobs on a Ray cluster (daemon serve --ray)")
    args = parser.parse_args(argv)
    plugin_dir = args.plugin_dir or default_plugin_dir()
    if args.uninstall:
        uninstall_plugin(plugin_dir)
        return 0
    if args.connect is not None:
        try:
            check_connection_file(args.connect)
        except ConnectError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    if not args.plugin_only:
        create_venv()
        install_project(choose_torch(sys.platform, requested=args.torch, index_url=args.torch_index_url,
                                     **detect_torch_machine()), ray=args.ray)
    flatpak = launch.is_flatpak_plugin_dir(plugin_dir, Path.home())
    installed = install_plugin(plugin_dir, args.gimp_python or detect_gimp_python(flatpak), args.weights,
                               connect=args.connect)
    print(f"The plug-in is in {installed}: restart GIMP and use Filters → Neural Style….")
    if args.plugin_only:
        return 0
    # With --connect the weights are the remote daemon's business.
    if args.connect is None and not fetch_weights(args.weights):
        step("Done, except for the weights (see above): with them, run python3 install.py again for the sample.")
    else:
        try:
            result = run_sample_job(args.weights, connect=args.connect)
        except subprocess.CalledProcessError:
            step("Done, but the sample job failed (see above).")
            return 1
        step(f"Done. The sample result is {result}")
    print(f"Stylise from a shell: {venv_python()} -m nst_engine CONTENT STYLE -o OUT.png")
    print(f"Run the tests:        {venv_python()} -m pytest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
