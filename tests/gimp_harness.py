"""Real GIMP 3 for the end-to-end tests: a Debian trixie chroot with gimp, python3-gi and gir1.2-gimp-3.0,
built by .ci/gimp-chroot.sh (kept outside the repository), driven with gimp-console in batch mode, or with
GIMP's user interface on Xvfb and keys pressed by xdotool."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROOT = Path(os.environ.get("NST_GIMP_ROOT", "/var/cache/nst-gimp3-root"))
GIMP_PYTHON = "3.13"  # Debian trixie's python3, which GIMP 3.0.4 runs plug-ins with
XVFB_SCREEN = (1366, 768)  # the virtual screen GIMP's user interface runs on: a common laptop's
PLUGIN_DIR = CHROOT / "root" / ".config" / "GIMP" / "3.0" / "plug-ins"


def chroot_ready() -> bool:
    tools = ("gimp-console", "gimp", "Xvfb", "xdotool")
    return all((CHROOT / "usr" / "bin" / tool).exists() for tool in tools) and shutil.which("chroot") is not None


def install_plugin() -> None:
    subprocess.run([sys.executable, str(REPO_ROOT / "install.py"), "--plugin-only", "--plugin-dir", str(PLUGIN_DIR),
                    "--gimp-python", GIMP_PYTHON], check=True, capture_output=True)


def inside_path(path: Path) -> str:
    """``path`` (on the host, within the chroot) as the chroot sees it."""
    return "/" + str(path.relative_to(CHROOT))


@contextmanager
def proc_mounted() -> Iterator[None]:
    proc = CHROOT / "proc"
    subprocess.run(["mount", "--bind", "/proc", str(proc)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(proc)], check=False)


def run_batch(work_dir: Path, script: str, env: dict[str, str],
              timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (a path inside the chroot) in gimp-console; ``work_dir`` lies inside the chroot."""
    with proc_mounted():
        command = ["chroot", str(CHROOT), "env", "HOME=/root", f"NST_E2E_DIR={inside_path(work_dir)}",
                   *(f"{key}={value}" for key, value in env.items()),
                   "gimp-console", "-i", "--batch-interpreter=python-fu-eval",
                   "-b", f"exec(open({script!r}).read())",
                   "-b", "Gimp.get_pdb().lookup_procedure('gimp-quit').run(None)"]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)


@dataclass(frozen=True)
class KeyPress:
    """When ``work_dir/ready-<step>`` appears, press ``key`` in the window whose title matches ``window``;
    press it again every few seconds until ``work_dir/done-<step>`` appears (GIMP ignores a key that
    arrives before the window can act on it, e.g. Ctrl+Z before Edit → Undo is enabled)."""

    step: str
    window: str
    key: str
    screenshot: str | None = None  # first save that window as this PNG in the work directory


# Runs inside the chroot (python3-gi's Gdk): saves the window named argv[1] (the whole screen for "") as
# the PNG argv[2].
_SCREENSHOT = """
import subprocess, sys
import gi
gi.require_version("Gdk", "3.0")
from gi.repository import Gdk
root = Gdk.get_default_root_window()
if sys.argv[1]:
    window_id = subprocess.run(["xdotool", "search", "--sync", "--name", sys.argv[1]], capture_output=True,
                               text=True, check=True).stdout.split()[0]
    geometry = dict(line.strip().split("=") for line in subprocess.run(
        ["xdotool", "getwindowgeometry", "--shell", window_id], capture_output=True, text=True, check=True).stdout.split())
    box = (int(geometry["X"]), int(geometry["Y"]), int(geometry["WIDTH"]), int(geometry["HEIGHT"]))
else:
    box = (0, 0, root.get_width(), root.get_height())
Gdk.pixbuf_get_from_window(root, *box).savev(sys.argv[2], "png", [], [])
"""  # noqa: E501  (a script run inside the chroot, kept as written)


_KEY_RETRIES = 5
_KEY_RETRY_S = 5.0


def _wait_for(path: Path, process: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@dataclass(frozen=True)
class InterfaceRun:
    """What a run of GIMP with its interface gave: its output, and where it stuck if it did."""

    output: str
    stuck: str | None = None  # what the run was waiting for when it stopped early
    windows: tuple[str, ...] = ()  # the titles of the windows shown then
    screenshot: str | None = None  # the whole screen then, a PNG in the work directory

    def failure(self) -> str:
        """One message for an assertion: where it stuck, what the screen showed, GIMP's last lines."""
        tail = "\n".join(self.output.splitlines()[-40:])
        return (f"GIMP {self.stuck}; windows shown: {list(self.windows)}; screen: {self.screenshot}\n"
                f"GIMP's output:\n{tail}")


class _Screen:
    """The Xvfb display inside the chroot."""

    def __init__(self, display: str) -> None:
        self.display = display

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["chroot", str(CHROOT), "env", f"DISPLAY={self.display}", *command],
                              check=check, timeout=timeout, capture_output=True, text=True)

    def press(self, press: KeyPress, wait: bool) -> None:
        """Focus the window (``wait``: until it exists; else only if it still does) and press the key.
        Then release the key's keys again from a process of their own: when a Ctrl+Z undoes in GIMP, the
        releases that xdotool sent with it do not always reach the X server (its XI2 raw events showed
        Ctrl and Z pressed, Z auto-repeating, no release), so Ctrl stayed down and the next dialog's
        Return arrived as Ctrl+Return, which no dialog binds to OK."""
        search = ["xdotool", "search", "--onlyvisible", "--name", press.window]
        if wait:
            self.run(*search[:2], "--sync", *search[2:])
        # Unchecked: a key that closes its window (Ctrl+W in Playback) leaves xdotool a BadWindow error
        # for the key's release; whether the key was acted on, the step's done mark tells.
        self.run(*search, "windowfocus", "--sync", "key", press.key, check=False)
        self.run("xdotool", "keyup", press.key, check=False)

    def window_titles(self) -> tuple[str, ...]:
        found = self.run("xdotool", "search", "--onlyvisible", "--name", ".", check=False).stdout.split()
        titles = (self.run("xdotool", "getwindowname", window, check=False).stdout.strip() for window in found)
        return tuple(title for title in titles if title)

    def save(self, window: str, path: Path) -> None:
        """The window whose title matches ``window`` (or the whole screen for "") as a PNG."""
        self.run("python3", "-c", _SCREENSHOT, window, inside_path(path))


def run_with_interface(work_dir: Path, script: str, env: dict[str, str], presses: Sequence[KeyPress],
                       timeout_s: float = 300) -> InterfaceRun:
    """Run ``script`` in GIMP with its user interface on an Xvfb display, pressing keys with xdotool.
    The script must end GIMP itself (gimp-quit with force).  When GIMP does not get to a step in time,
    or a key press is not acted on, the run stops there and says what the screen showed."""
    with proc_mounted():
        xvfb = subprocess.Popen(["chroot", str(CHROOT), "Xvfb", "-displayfd", "1", "-screen", "0",
                                 f"{XVFB_SCREEN[0]}x{XVFB_SCREEN[1]}x24",
                                 "-nolisten", "tcp"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        gimp = None
        try:
            screen = _Screen(f":{xvfb.stdout.readline().strip()}")
            gimp = subprocess.Popen(
                ["chroot", str(CHROOT), "env", "HOME=/root", f"DISPLAY={screen.display}",
                 f"NST_E2E_DIR={inside_path(work_dir)}", *(f"{key}={value}" for key, value in env.items()),
                 "gimp", "--no-splash", "--batch-interpreter=python-fu-eval", "-b", f"exec(open({script!r}).read())"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
            deadline = time.monotonic() + timeout_s

            def stuck(what: str) -> InterfaceRun:
                if gimp.poll() is not None:
                    return InterfaceRun(gimp.communicate(timeout=30)[0], f"ended while {what}")
                windows = screen.window_titles()
                shot = work_dir / "stuck.png"
                screen.save("", shot)
                os.killpg(gimp.pid, signal.SIGKILL)
                return InterfaceRun(gimp.communicate(timeout=30)[0], f"stuck while {what}", windows, str(shot))

            for press in presses:
                if not _wait_for(work_dir / f"ready-{press.step}", gimp, deadline - time.monotonic()):
                    return stuck(f"waiting to get to step {press.step!r}")
                if press.screenshot:
                    time.sleep(2.0)  # let the dialog draw itself (and its status line fill in)
                    screen.save(press.window, work_dir / press.screenshot)
                screen.press(press, wait=True)
                for _ in range(_KEY_RETRIES):
                    if _wait_for(work_dir / f"done-{press.step}", gimp, _KEY_RETRY_S):
                        break
                    screen.press(press, wait=False)  # not acted on: again, if the window is still there
                else:
                    return stuck(f"at step {press.step!r}, {press.key} pressed {_KEY_RETRIES + 1} times in "
                                 f"{press.window!r} and not acted on")
            return InterfaceRun(gimp.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        finally:
            for process in (gimp, xvfb):  # with whatever they started (plug-ins)
                if process is not None:
                    try:
                        os.killpg(process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    process.wait()
