"""Check: the seed study's five RobustBench models, full size, through `wsol robustness study` without their weights.

Writes random-weight checkpoints of the five models in RobustBench's file layout (their key names; Bai2023's three
files as RobustBench saves them: the standard part with a ``module.`` prefix, the robust part, the mixing network
and its batch norm), a CIFAR-10 python tree of 40 noise images and a ``models.yaml``, about 4.6 GB in all under OUT.
Then run the study on them (the models' loading, up-front checks, memory, the tables and the skip on rerun):

    PYTHONPATH=. python tools/check_study_models.py OUT
    cd OUT && wsol robustness study models.yaml --dataset cifar10 --root cifar --n 10 --ladder apgd-ce --n-iter 1 \
        --n-restarts 1 --eps-sweep 0:1 --batch-size 10 --out out

Random weights classify noise at chance, so the numbers mean nothing; the check is that every step runs.
"""
import pickle
import sys
from pathlib import Path

import numpy as np
import torch

from wsol.models.robustbench import bai2023_edm, dm_wide_resnet, ra_wide_resnet_70_16

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
for name, build in (("Peng2023Robust", ra_wide_resnet_70_16), ("Wang2023Better_WRN-70-16", lambda: dm_wide_resnet(70, 16)),
                    ("Wang2023Better_WRN-28-10", lambda: dm_wide_resnet(28, 10)), ("Cui2023Decoupled_WRN-28-10", lambda: dm_wide_resnet(28, 10))):
    torch.save(build().state_dict(), out / f"{name}.pt")
    print("wrote", name, flush=True)
bai = bai2023_edm()
torch.save({f"module.{k}": v for k, v in bai.std_model.state_dict().items()}, out / "Bai2023Improving_edm.pt_m0.pt")
torch.save(bai.rob_model.state_dict(), out / "Bai2023Improving_edm.pt_m1.pt")
torch.save({"model": bai.policy_net.state_dict(), "bn": bai.bn.state_dict()}, out / "Bai2023Improving_edm.pt_m2.pt")
del bai
names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
base = out / "cifar" / "cifar-10-batches-py"
base.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
def batch(labels):
    data = np.stack([rng.integers(0, 256, size=3072) for c in labels]).astype(np.uint8)
    return {b"labels": list(labels), b"data": data, b"filenames": [f"{i}.png".encode() for i in range(len(labels))], b"batch_label": b"b"}
for name, obj in [("batches.meta", {b"label_names": names}), *[(f"data_batch_{i}", batch([i])) for i in range(1, 6)],
                  ("test_batch", batch([i % 10 for i in range(40)]))]:
    with open(base / name, "wb") as fh:
        pickle.dump(obj, fh)
(out / "models.yaml").write_text("models:\n" + "".join(
    f"  - name: {n}\n    model: {n}\n    weights: {w}\n" for n, w in (
        ("Peng2023Robust", "Peng2023Robust.pt"), ("Wang2023Better_WRN-70-16", "Wang2023Better_WRN-70-16.pt"),
        ("Wang2023Better_WRN-28-10", "Wang2023Better_WRN-28-10.pt"), ("Cui2023Decoupled_WRN-28-10", "Cui2023Decoupled_WRN-28-10.pt"))) +
    "  - name: Bai2023Improving_edm\n    model: Bai2023Improving_edm\n    weights: [Bai2023Improving_edm.pt_m0.pt, Bai2023Improving_edm.pt_m1.pt, Bai2023Improving_edm.pt_m2.pt]\n")
print("done")
