"""DDP on CPU (2 gloo processes under torchrun) gives the weights of one process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys

import torch

from wsol.models import build_model
from wsol.models.checkpoint import load_state_file
from wsol.utils.seeding import seed_everything

SCRIPT = r'''
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset

from wsol.config import load_config
from wsol.data.sample import Sample
from wsol.jobs.train import train


class Toy(Dataset):
    def __init__(self, n, seed):
        gen = torch.Generator().manual_seed(seed)
        self.labels = [i % 3 for i in range(n)]
        self.images = torch.rand(n, 3, 16, 16, generator=gen) * 0.5
        for i, label in enumerate(self.labels):
            self.images[i, label, :8] += 0.5
        self.class_names, self.num_classes = ["a", "b", "c"], 3
        self.mean, self.std, self.native_size, self.has_masks = (0.5,) * 3, (0.25,) * 3, 16, False

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return Sample(image=self.images[i].clone(), label=self.labels[i], image_id=i)


def run(out):
    for method in ("natural", "art"):
        config = load_config(None, {
            "method": method, "arch": "small-cnn", "epochs": 2, "batch_size": 8, "eval_batch_size": 6,
            "optim.lr": 0.05, "art.steps": 2, "eval.pgd.steps": 1,
        })
        train(config, Path(out) / method, train_set=Toy(16, 0), test_set=Toy(10, 1), device="cpu")


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(sys.argv[1])
'''


def test_ddp_matches_single_process(tmp_path) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WSOL_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    namespace: dict = {"__name__": "single"}
    exec(compile(SCRIPT, str(script), "exec"), namespace)
    namespace["run"](tmp_path / "single")

    seed_everything(0)
    initial = build_model("small-cnn", 3, mean=(0.5,) * 3, std=(0.25,) * 3, input_size=16).state_dict()
    for method in ("natural", "art"):
        ddp = load_state_file(tmp_path / "ddp" / method / "model.safetensors")
        single = load_state_file(tmp_path / "single" / method / "model.safetensors")
        assert ddp.keys() == single.keys()
        for key in single:
            assert torch.allclose(ddp[key], single[key], rtol=0, atol=1e-5), (method, key, (ddp[key] - single[key]).abs().max())
        assert max((single[k] - initial[k]).abs().max().item() for k in single) > 1e-3  # it trained
        # only rank 0 wrote: exactly one metrics line per epoch
        assert len((tmp_path / "ddp" / method / "metrics.jsonl").read_text().splitlines()) == 2
