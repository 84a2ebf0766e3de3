"""A torchrun worker ends when its launcher is killed with SIGKILL (which torchrun cannot forward)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WORKER = r'''
import os, sys, time
from pathlib import Path
import wsol.utils.distributed as dist
dist.init_from_env("gloo")
Path(sys.argv[1], f"{os.environ['RANK']}.pid").write_text(str(os.getpid()))
time.sleep(120)
'''


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def test_workers_end_when_the_launcher_is_killed(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                 str(script), str(tmp_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline and launcher.poll() is None:
            pids = [int(p.read_text()) for p in tmp_path.glob("*.pid") if p.read_text()]
            time.sleep(0.2)
        assert len(pids) == 2, "the two workers did not start"
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in pids), "a worker outlived its killed launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
