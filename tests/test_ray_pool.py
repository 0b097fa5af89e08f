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
@pytest.mark.parametrize("scenario", ["two_jobs_at_once", "killed_worker", "cancelled"])
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
    while queue._takers < 2:  # both wait in take()
        threading.Event().wait(0.01)
    assert queue.put(queued("b")) == 0
    threads[1].join(5)
    assert taken == {"holder": "b"}  # not the plain worker, though it was waiting first
    queue.put(queued("a"))
    threads[0].join(5)
    assert taken == {"holder": "b", "plain": "a"}
