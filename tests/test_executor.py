"""Worker processes never outlive their stage: SIGKILL of the parent ends them too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from zoofusion.executor import run_tasks

SCRIPT = r"""
import os, sys, time
from zoofusion.executor import run_tasks

def task(i, shared):
    with open(os.path.join(sys.argv[1], f"worker-{os.getpid()}"), "w"):
        pass
    time.sleep(60)  # "training"
    return i

if __name__ == "__main__":
    for _ in run_tasks(task, range(4), workers=2, initializer=None):
        pass
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): read its state
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


def test_sigkill_of_the_stage_leaves_no_orphan_workers(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)])
    try:
        deadline = time.time() + 60
        while len(list(tmp_path.glob("worker-*"))) < 2 and time.time() < deadline:
            time.sleep(0.2)
        workers = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "workers outlived their killed stage"
    finally:
        parent.kill()


def _shift(task: int, shared: dict) -> int:
    return abs(task) + shared["offset"]


def test_results_come_in_task_order_in_and_out_of_process():
    for workers in (1, 2):
        assert list(run_tasks(_shift, [-3, 1, -2], workers, {"offset": 10}, initializer=None)) == [13, 11, 12]
