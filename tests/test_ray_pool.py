"""Jobs on a Ray cluster (issue #29).  The cluster scenarios run in tests/ray_cluster.py inside a network namespace
this test makes (``unshare --net``), where 127.0.0.1 is the only address: Ray left to itself listens on every
interface.  The queue's preference for a worker that holds a job's style needs no Ray."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading

import pytest

from daemon.server.jobs import Client, Job, JobQueue
from daemon.wire.messages import Submit

from .daemon_harness import REPO_ROOT

RAY_MISSING = "Ray is not installed here (python3 install.py --ray adds it; CI does)"


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=RAY_MISSING)
@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of the test's own (unshare --net) needs root")
@pytest.mark.parametrize("scenario", ["two_jobs_at_once", "killed_worker", "cancelled", "cluster_lost"])
def test_ray_cluster(scenario, weights_file):
    completed = subprocess.run(["unshare", "--net", sys.executable, "-m", "tests.ray_cluster", scenario,
                                str(weights_file)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert completed.returncode == 0, completed.stderr[-4000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])[scenario]
    assert figures


def queued(job_id: str) -> Job:
    return Job(id=job_id, client=Client(b"c"), submit=Submit.__new__(Submit), frames=[])


def test_a_waiting_worker_leaves_a_job_to_a_waiting_worker_that_holds_its_style():
    queue = JobQueue(4)
    taken: dict[str, str] = {}
    started = threading.Barrier(3)

    def worker(name: str, held: str | None) -> None:
        started.wait()
        job = queue.take(lambda job: job.id == held)
        taken[name] = job.id

    threads = [threading.Thread(target=worker, args=("plain", None)),
               threading.Thread(target=worker, args=("holder", "b"))]
    for thread in threads:
        thread.start()
    started.wait()
    while len(queue._holders) < 2:  # both wait in take()
        threading.Event().wait(0.01)
    assert queue.put(queued("b")) == 0
    threads[1].join(5)
    assert taken == {"holder": "b"}  # not the plain worker, though it was waiting first
    queue.put(queued("a"))
    threads[0].join(5)
    assert taken == {"holder": "b", "plain": "a"}


def serve_with_ray(tmp_path, address: str, *, hide_ray: bool = False) -> subprocess.CompletedProcess[str]:
    directory = tmp_path / "server"
    directory.mkdir(mode=0o700, parents=True)
    path = str(REPO_ROOT)
    if hide_ray:  # a package named ray that cannot be imported stands in for Ray not installed
        (tmp_path / "hidden" / "ray").mkdir(parents=True)
        (tmp_path / "hidden" / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
        path = f"{tmp_path / 'hidden'}{os.pathsep}{path}"
    return subprocess.run([sys.executable, "-m", "daemon", "serve", "--lazy", "--ray", address], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": path,
                               "NEURAL_STYLE_CONNECTION": str(directory / "connection.json")})


def test_serve_with_ray_but_without_ray_says_how_to_add_it_in_one_line(tmp_path):
    completed = serve_with_ray(tmp_path, "127.0.0.1:1", hide_ray=True)
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines()[-1] == (
        "error: --ray needs Ray in the daemon's environment; add it with: python3 install.py --ray")
    assert "Traceback" not in completed.stderr


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=RAY_MISSING)
def test_an_unreachable_cluster_is_one_clear_line_at_start(tmp_path):
    completed = serve_with_ray(tmp_path, "127.0.0.1:1")  # nothing listens on port 1
    assert completed.returncode != 0 and "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines()[-1].startswith("error: Cannot reach the Ray cluster at 127.0.0.1:1")
    assert serve_with_ray(tmp_path / "local", "local").stderr.strip().endswith("(docs/scaling.md)")
