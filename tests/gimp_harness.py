"""Real GIMP 3 for the end-to-end tests: a Debian trixie chroot with gimp, python3-gi and gir1.2-gimp-3.0,
built by .ci/gimp-chroot.sh (kept outside the repository), driven with gimp-console in batch mode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROOT = Path(os.environ.get("NST_GIMP_ROOT", "/var/cache/nst-gimp3-root"))
GIMP_PYTHON = "3.13"  # Debian trixie's python3, which GIMP 3.0.4 runs plug-ins with
PLUGIN_DIR = CHROOT / "root" / ".config" / "GIMP" / "3.0" / "plug-ins"


def chroot_ready() -> bool:
    return (CHROOT / "usr" / "bin" / "gimp-console").exists() and shutil.which("chroot") is not None


def install_plugin() -> None:
    subprocess.run([sys.executable, str(REPO_ROOT / "install.py"), "--plugin-only", "--plugin-dir", str(PLUGIN_DIR),
                    "--gimp-python", GIMP_PYTHON], check=True, capture_output=True)


def run_batch(work_dir: Path, script: Path, env: dict[str, str], timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (a path inside the chroot) in gimp-console; ``work_dir`` lies inside the chroot."""
    inside = "/" + str(work_dir.relative_to(CHROOT))
    proc = CHROOT / "proc"
    subprocess.run(["mount", "--bind", "/proc", str(proc)], check=True)
    try:
        command = ["chroot", str(CHROOT), "env", "HOME=/root", f"NST_E2E_DIR={inside}",
                   *(f"{key}={value}" for key, value in env.items()),
                   "gimp-console", "-i", "--batch-interpreter=python-fu-eval",
                   "-b", f"exec(open({str(script)!r}).read())",
                   "-b", "Gimp.get_pdb().lookup_procedure('gimp-quit').run(None)"]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    finally:
        subprocess.run(["umount", str(proc)], check=False)
