#!/usr/bin/env python3
"""One-shot set-up for Neural Style for GIMP.

Creates ``.venv/`` beside this file, installs the project (editable) with its test extras into it, and
makes sure the VGG19 weights are available.  Run it again at any time: every step is idempotent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
VENV_DIR = REPO_ROOT / ".venv"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, help="use this local VGG19 weights file instead of downloading")
    args = parser.parse_args(argv)

    create_venv()
    install_project()
    weights_ok = fetch_weights(args.weights)
    step("Done." if weights_ok else "Done, except for the weights (see above).")
    print(f"Stylise from a shell: {venv_python()} -m nst_engine CONTENT STYLE -o OUT.png")
    print(f"Run the tests:        {venv_python()} -m pytest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
