"""Wrong inputs across every command: exit 2, one `error:` line on stderr, no traceback, nothing written."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from wsol.cli import run

# Placeholders: {file} an existing file, {dir} an existing folder, {missing} a path that does not exist.
CASES: List[List[str]] = [
    # the app and its groups
    ["fly"],
    ["robustness", "per-class", "--dataset", "shapes", "--checkpoint", "{file}", "--out", ""],  # --out "$UNSET": not the current folder
    ["train", "shapes", "--out="],
    ["robustness", "study", "", "--dataset", "shapes", "--out", "{dir}/st"],
    ["--no-such-option"],
    ["data", "fly"],
    ["config", "fly"],
    ["models", "extra"],
    ["models", "--bogus"],
    # config show
    ["config", "show", "--set", "arch=foo"],
    ["config", "show", "--set", "art.lam=nan"],
    ["config", "show", "--set", "dataset=foo"],
    ["config", "show", "--set", "optim.lr=inf"],
    ["config", "show", "--set", "art.eps=-.inf"],
    ["config", "show", "--set", "noequals"],
    ["config", "show", "--set", "art.lamda=1"],
    ["config", "show", "--set", "method=magic"],
    ["config", "show", "--set", "epochs=abc"],
    ["config", "show", "--set"],
    ["config", "show", "--set", "art.lam=0.3", "--set", "art.lam=0.4"],  # one key, two values: the last won silently
    ["config", "show", "{missing}"],
    ["config", "show", "a.yaml", "b.yaml"],
    # a flag and --set giving one key two values: the flag won silently
    ["train", "shapes", "--epochs", "2", "--set", "epochs=3", "--out", "{dir}/t"],
    ["train", "shapes", "--method", "art", "--set", "method=pgd", "--out", "{dir}/t"],
    ["train", "shapes", "--set", "epochs=1", "--set", "epochs=2", "--out", "{dir}/t"],
    # localize --out named as a sidecar of another results file (it replaced preds.json's record)
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/preds.meta.json"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/preds.metrics.json"],
    # data synth
    ["data", "synth"],
    ["data", "synth", "circles", "--out", "{dir}/s"],
    ["data", "synth", "shapes", "--n-train", "abc", "--out", "{dir}/s"],
    ["data", "synth", "shapes", "--out", "{file}/s"],
    ["data", "synth", "shapes", "--out", "{file}"],
    ["data", "synth", "shapes", "--seed", "x", "--out", "{dir}/s"],
    ["data", "synth", "shapes", "--num-classes", "1", "--out", "{dir}/s"],
    # data verify
    ["data", "verify"],
    ["data", "verify", "nosuch", "--root", "{dir}"],
    ["data", "verify", "cub", "--root", "{missing}"],
    ["data", "verify", "cub", "--root", "{dir}", "--option", "noequals"],
    ["data", "verify", "shapes", "--skip-corrupt", "yes"],
    # data show
    ["data", "show"],
    ["data", "show", "shapes", "--n", "0"],
    ["data", "show", "shapes", "--n", "abc"],
    ["data", "show", "shapes", "--out", "{dir}"],
    ["data", "show", "shapes", "--out", "{file}/grid.png"],
    ["data", "show", "nosuch", "--root", "{dir}", "--out", "{dir}/g.png"],
    ["data", "show", "cub", "--root", "{missing}", "--out", "{dir}/g.png"],
    # train
    ["train"],
    ["train", "shapes", "--no-such-option"],
    ["train", "shapes", "--epochs", "abc"],
    ["train", "shapes", "--epochs", "0"],
    ["train", "shapes", "--resume", "true"],
    ["train", "shapes", "--device", "bogus"],
    ["train", "shapes", "--device", "cuda:x"],
    ["train", "shapes", "--out", "{file}"],
    ["train", "shapes", "--out", "{file}/run"],
    ["train", "shapes", "--batch-size", "0"],
    ["train", "shapes", "--lr", "abc"],
    ["train", "shapes", "--seed", "1.5"],
    ["train", "shapes", "--set", "arch=foo"],
    ["train", "shapes", "--method", "magic"],
    ["train", "shapes", "--arch", "foo"],
    ["train", "nosuch"],
    ["train", "shapes", "--method", "art", "--set", "art.lam=nan"],
    ["train", "shapes", "--config", "{missing}"],
    # localize
    ["localize", "--dataset", "shapes"],
    ["localize", "--checkpoint", "m.safetensors", "--out", "p.json"],
    ["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes"],
    ["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "{dir}"],
    ["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "{file}/p.json"],
    ["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "p.json", "--threshold", "abc"],
    ["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "p.json", "--threshold", "1.5"],
    ["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "p.json", "--batch-size", "0"],
    ["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "p.json", "--device", "bogus"],
    ["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "p.json", "--masks", "yes"],
    # evaluate
    ["evaluate"],
    ["evaluate", "--pred", "{file}"],
    ["evaluate", "--pred", "{missing}", "--dataset", "shapes"],
    ["evaluate", "--pred", "{file}/p.json", "--dataset", "shapes"],
    ["evaluate", "--pred", "{file}", "--dataset", "shapes", "extra"],
    # visualize
    ["visualize", "--checkpoint", "m.safetensors"],
    ["visualize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "g.png", "--n", "0"],
    ["visualize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "{dir}"],
    ["visualize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "g.png", "--device", "bogus"],
    ["visualize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "g.png", "--seed", "abc"],
    ["visualize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "g.png", "--threshold", "-0.1"],
    # demo
    ["demo", "--n-train", "5"],
    ["demo", "--n-test", "abc"],
    ["demo", "--epochs", "0"],
    ["demo", "--device", "bogus"],
    # attack and report
    ["attack", "fly"],
    ["attack", "attribution", "--dataset", "shapes", "--out", "a"],
    ["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--objective", "bogus"],
    ["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--attribution", "cam"],
    ["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--eps", "8/x"],
    ["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--eps", "8/0"],
    ["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--n", "0"],
    ["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--preset", "nope"],
    ["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--steps", "0"],
    ["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--out", "{file}"],
    ["attack", "targeted", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "a", "--eps", "abc"],
    ["report", "table1"],
    ["report", "table1", "{dir}"],
    ["report", "figures", "{dir}", "--out", "{file}"],
    ["demo", "--out", "{file}"],
    ["demo", "--out", "{file}/demo"],
    # validated before the banner and the first file: a root without a dataset, NaN, a corrupt test image
    ["train", "cub", "--root", "{dir}", "--out", "{dir}/run"],
    ["train", "shapes", "--lr", "nan", "--out", "{dir}/run"],
    ["train", "cub", "--arch", "small-cnn", "--root", "{badimage}", "--out", "{dir}/run"],
    # boundary validation: boxes past the border, category ids, empty predictions, a mismatched pair
    ["data", "show", "cub", "--root", "{bigbox}", "--out", "{dir}/g.png"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{bigbox}", "--out", "{dir}/p.json"],
    ["evaluate", "--pred", "{pred_cat99}", "--dataset", "cub", "--root", "{cub}"],
    ["evaluate", "--pred", "{pred_cat0}", "--dataset", "cub", "--root", "{cub}"],
    ["evaluate", "--pred", "{pred_empty}", "--dataset", "cub", "--root", "{cub}"],
    ["evaluate", "--pred", "{pred_mixed}", "--dataset", "cub", "--root", "{cub}"],
    # checkpoints that do not fit the dataset, attribution names checked before the pass
    ["visualize", "--checkpoint", "{ckpt3}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/g.png"],
    ["localize", "--checkpoint", "{ckpt3}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/p.json"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/p.json", "--attribution", "magic"],
    # robustness
    ["robustness", "fly"],
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--model", "NoSuchModel", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--attacks", "apgd-ce,bogus", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--ladder", "huge", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--eps", "8/0", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--bf16", "--device", "cpu", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--model", "Wang2023Better_WRN-28-10", "--weights", "{missing}", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--out", "{file}"],
    ["robustness", "per-class", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--eps-sweep", "8:0", "--out", "{dir}/r"],
    ["robustness", "per-class", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--eps-sweep", "a,b", "--out", "{dir}/r"],
    ["robustness", "per-class", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--eps-sweep", "2", "--out", "{dir}/r"],
    ["robustness", "per-class", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--attack", "pgd", "--out", "{dir}/r"],
    ["robustness", "study", "{missing}", "--dataset", "cifar10", "--root", "{dir}", "--out", "{dir}/r"],
    ["robustness", "study", "{file}", "--dataset", "cifar10", "--root", "{dir}", "--ladder", "huge", "--out", "{dir}/r"],
    # attack jobs on real inputs: every refusal comes before the run folder exists
    ["attack", "attribution", "--checkpoint", "{missing}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt_corrupt}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt3}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--k", "5000", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "5", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--eps", "-1", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--eps", "abc", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--eps", "nan", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "-3", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--batch-size", "0", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--attribution", "bogus", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--beta", "0", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--beta", "nan", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--gamma", "nan", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--beta-growth", "10", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--beta-growth", "0:100", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--beta-growth", "a:b", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--beta-growth", "10:100:1000", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--beta", "5", "--beta-growth", "1:20", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--target-index", "9", "--n", "2", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--target-index", "-1", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{file}"],
    # reports over folders that are not attribution-attack runs
    ["report", "table1", "{run_broken}"],
    ["report", "figures", "{run_targeted}", "--out", "{dir}/f"],
    ["report", "table1", "{missing}"],
    # robustness on real inputs and study files
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "5", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt3}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--weights", "{file}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--eps-sweep", "a:b", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--batch-size", "0", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--model", "pyautoattack-resnet18", "--dataset", "cub", "--root", "{cub}", "--n", "1", "--out", "{dir}/r"],
    ["robustness", "study", "{study_empty}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "study", "{study_scalar}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "study", "{study_unknown}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "study", "{study_noweights}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "study", "{study_twice}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "study", "{study_numbers}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "study", "{study_models_twice}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],  # YAML kept the last list
    ["robustness", "study", "{study_slash}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    # session 6: attack/report
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--attribution", "grad", "--preset", "official", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--k", "1024", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--k", "1024", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "1", "--out", "{dir}/a"],
    # session 6: robustness
    ["robustness", "evaluate", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--pgd", "3", "--pgd-loss", "margin", "--out", "{dir}/r"],
    ["robustness", "per-class", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--eps-sweep", "0:300", "--out", "{dir}/r"],
    ["robustness", "per-class", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--eps-sweep", "0:8:0", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--attacks", "apgd-dlr", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--attack", "apgd-t", "--out", "{dir}/r"],
    ["robustness", "study", "{study_typo}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "study", "{study_both}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--ladder", "apgd-ce", "--attacks", "", "--out", "{dir}/r"],
    # session 7: attacks and robustness
    ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--attacks", "apgd-ce,,fab", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--attack", "apgd-ce,,fab", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--eps-sweep", "0,,8", "--out", "{dir}/r"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--eps", "1", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--step-size", "0", "--out", "{dir}/a"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--pgd-step-size", "0", "--out", "{dir}/a"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--lr", "0", "--out", "{dir}/a"],
    ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--attacks", "apgd-ce", "--eps", "1", "--out", "{dir}/r"],
    ["robustness", "study", "{study_one}", "--dataset", "cub", "--root", "{cub}", "--eps", "1.0", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--model", "pyautoattack-resnet18", "--weights", "{evil}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    ["robustness", "evaluate", "--checkpoint", "{ckpt2_json}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    # session 6: training/localization/data
    ["config", "show", "--set", "epochs="],
    ["config", "show", "--set", "=3"],
    ["train", "shapes", "--set", "epochs=", "--out", "{dir}/run"],
    ["train", "shapes", "--lr", "-1", "--out", "{dir}/run"],
    ["train", "shapes", "--device", "tpu", "--out", "{dir}/run"],
    ["train", "cub", "--arch", "small-cnn", "--root", "{notest}", "--epochs", "1", "--out", "{dir}/run"],
    ["train", "cub", "--arch", "small-cnn", "--root", "{bigbox}", "--epochs", "1", "--out", "{dir}/run"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{notest}", "--out", "{dir}/p.json"],
    ["localize", "--checkpoint", "{dir}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/p.json"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/p.json", "--threshold", "nan"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/p.json", "--interval", "0"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}/images.txt", "--out", "{dir}/p.json"],
    ["visualize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{notest}", "--out", "{dir}/g.png"],
    ["evaluate", "--pred", "{dir}", "--dataset", "cub", "--root", "{cub}"],
    ["data", "show", "cub", "--root", "{notest}", "--out", "{dir}/g.png"],
    ["data", "show", "cub", "--root", "{cub}", "--out", "{dir}/g.jpg"],
    ["config", "show", "{dir}"],
    ["train", "shapes", "--config", "{dir}", "--out", "{dir}/run"],
    ["visualize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/grid"],
    # session 7: a new user's first hour
    ["train", "shapes", "--set", "image_size=0", "--out", "{dir}/run"],
    ["train", "shapes", "--set", "max_train_batches=0", "--out", "{dir}/run"],
    ["train", "shapes", "--set", "optim.momentum=2", "--out", "{dir}/run"],
    ["train", "cub", "--arch", "small-cnn", "--root", "{cub}", "--weights", "{pred_cat0}", "--out", "{dir}/run"],
    ["train", "shapes", "--config", "{cifar_config}", "--out", "{dir}/run"],
    ["train", "shapes", "--set", "dataset=cub", "--out", "{dir}/run"],
    ["data", "verify", "cifar10", "--root", "{dir}", "-o", "foo=1"],
    ["data", "verify", "cub", "--root", "{cub}", "-o", "native_size=abc"],
    ["data", "verify", "cub", "--root", "{cub}", "-o", "skip_corrupt=maybe"],
    ["evaluate", "--pred", "{pred_train}", "--dataset", "cub", "--root", "{cub}", "--split", "test"],
    ["evaluate", "--pred", "{pred_other_root}", "--dataset", "cub", "--root", "{cub}"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/preds.csv"],
    ["localize", "--checkpoint", "{ckpt2_meta}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/p.json"],
    # session 8: robustness, l2 sweeps and --out folders of other runs
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--norm", "l2", "--eps-sweep", "0:8", "--out", "{dir}/r"],
    ["robustness", "study", "{study_one}", "--dataset", "cub", "--root", "{cub}", "--ladder", "apgd-ce", "--norm", "l2", "--eps-sweep", "0:8", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--out", "{train_run}"],
    ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--attacks", "apgd-ce", "--out", "{train_run}"],
    ["robustness", "study", "{study_one}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--ladder", "apgd-ce", "--out", "{train_run}"],
    ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--attacks", "apgd-ce", "--out", "{run_targeted}"],
    ["robustness", "study", "{study_one}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--ladder", "apgd-ce", "--out", "{robust_run}"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--out", "{study_run}"],
    ["robustness", "study", "{study_one}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--ladder", "apgd-ce", "--eps", "", "--out", "{dir}/r"],
    # session 8: a new user's first hour (study and config files that are not text)
    ["robustness", "study", "{study_binary}", "--dataset", "cub", "--root", "{cub}", "--out", "{dir}/r"],
    # session 9: a study model named by a number, which YAML reads as one (010 becomes 8); runnable but for the name
    ["robustness", "study", "{study_intname}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--ladder", "apgd-ce", "--n-iter", "1", "--out", "{dir}/r"],
    ["robustness", "study", "{study_octalname}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--ladder", "apgd-ce", "--n-iter", "1", "--out", "{dir}/r"],
    ["config", "show", "{study_binary}"],
    ["train", "shapes", "--config", "{study_binary}", "--out", "{dir}/run"],
    # seeds numpy (negative) or torch (past 64 bits) cannot take
    ["data", "show", "cub", "--root", "{cub}", "--seed", "-1", "--out", "{dir}/g.png"],
    ["visualize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--seed", "-1", "--out", "{dir}/g.png"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--seed", "99999999999999999999", "--out", "{dir}/a"],
    ["train", "cub", "--arch", "small-cnn", "--root", "{cub}", "--set", "seed=-1", "--out", "{dir}/run"],
    # session 8: linf sweeps written as radii
    ["robustness", "per-class", "--dataset", "cifar10", "--root", "{dir}", "--model", "pyautoattack-resnet18", "--eps-sweep", "0,0.01,0.03", "--out", "{dir}/r"],
    # a sweep whose step leaves out its end gets a note, never before the error; a step past the whole range is one error
    ["robustness", "per-class", "--checkpoint", "{ckpt3}", "--dataset", "cub", "--root", "{cub}", "--eps-sweep", "0:7:2", "--out", "{dir}/r"],
    ["robustness", "study", "{study_noweights}", "--dataset", "cub", "--root", "{cub}", "--eps-sweep", "0:7:2", "--out", "{dir}/r"],
    ["robustness", "per-class", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--eps-sweep", "0:8:9", "--out", "{dir}/r"],
    # an option the attacks do not use gets a note, never before the error
    ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--attacks", "apgd-ce",
     "--n-queries", "5", "--out", "{train_run}"],
    ["robustness", "study", "{study_one}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--ladder", "apgd-ce", "--n-queries", "5",
     "--out", "{robust_run}"],
    # session 9: --out a folder holding another command's run, or a file of a run
    ["train", "cub", "--arch", "small-cnn", "--root", "{cub}", "--epochs", "1", "--out", "{run_ifia}"],
    ["train", "cub", "--arch", "small-cnn", "--root", "{cub}", "--epochs", "1", "--out", "{robust_run}"],
    ["train", "cub", "--arch", "small-cnn", "--root", "{cub}", "--epochs", "1", "--out", "{study_run}"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--steps", "1", "--out", "{train_run}"],
    ["attack", "attribution", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--steps", "1", "--out", "{run_targeted}"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--steps", "1", "--out", "{run_ifia}"],
    ["attack", "targeted", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--n", "2", "--steps", "1", "--out", "{robust_run}"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{train_run}/model.json"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{run_ifia}/summary.json"],
    ["localize", "--checkpoint", "{ckpt2}", "--dataset", "cub", "--root", "{cub}", "--out", "{run_ifia}/config.json"],
    ["report", "table1", "{run_ifia}"],
]


class _Payload:
    """A pickled value that needs code (os.system) to load."""

    def __reduce__(self):
        return (os.system, ("true",))


def _cub(root: Path, box: str = "4 4 10 10", corrupt: bool = False, test: bool = True) -> str:
    """A 4-image, 2-class CUB tree of 32x32 images (2 test, or none without ``test``); optionally one box or one test image broken."""
    import cv2
    import numpy as np

    rows = {"images": [], "labels": [], "split": [], "boxes": []}
    for i in range(1, 5):
        rel = f"00{1 + i % 2}.c{1 + i % 2}/{i}.png"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "images" / rel), np.full((32, 32, 3), 40 * i, np.uint8))
        rows["images"].append(f"{i} {rel}")
        rows["labels"].append(f"{i} {1 + i % 2}")
        rows["split"].append(f"{i} {int(i <= 2 or not test)}")
        rows["boxes"].append(f"{i} {box if i == 3 else '4 4 10 10'}")
    if corrupt:
        (root / "images" / rows["images"][3].split()[1]).write_bytes(b"")
    for name, key in (("images", "images"), ("image_class_labels", "labels"), ("train_test_split", "split"), ("bounding_boxes", "boxes")):
        (root / f"{name}.txt").write_text("\n".join(rows[key]) + "\n")
    (root / "classes.txt").write_text("1 001.c1\n2 002.c2\n")
    return str(root)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    """Read-only inputs: CUB trees (good, a box past the border, a corrupt test image), checkpoints and predictions."""
    import json

    from wsol.export.coco import results_digest
    from wsol.models import build_model, save_model

    base = tmp_path_factory.mktemp("assets")
    found = {"cub": _cub(base / "cub"), "bigbox": _cub(base / "bigbox", box="10 10 100 100"), "badimage": _cub(base / "bad", corrupt=True),
             "notest": _cub(base / "notest", test=False)}
    for k in (2, 3):
        found[f"ckpt{k}"] = str(save_model(build_model("small-cnn", k, input_size=32), base / f"model{k}", dataset="cub", method="natural"))
    result = {"image_id": 3, "bbox": [0.0, 0.0, 4.0, 4.0], "score": 0.9}
    for name, results in (("cat99", [{**result, "category_id": 99}]), ("cat0", [{**result, "category_id": 0}]), ("empty", []),
                          ("mixed", [{**result, "category_id": 1}])):
        pred = base / f"{name}.json"
        pred.write_text(json.dumps(results))
        digest = "0" * 64 if name == "mixed" else results_digest(pred)
        (base / f"{name}.meta.json").write_text(json.dumps({"dataset": "cub", "split": "test", "results_sha256": digest}))
        found[f"pred_{name}"] = str(pred)
    for name, meta in (("train", {"split": "train"}), ("other_root", {"num_images": 500})):  # valid results, another split / root
        pred = base / f"{name}.json"
        pred.write_text(json.dumps([{**result, "category_id": 1}]))
        (base / f"{name}.meta.json").write_text(json.dumps({"dataset": "cub", "split": "test", **meta, "results_sha256": results_digest(pred)}))
        found[f"pred_{name}"] = str(pred)
    found["cifar_config"] = str(Path(__file__).resolve().parents[1] / "configs" / "cifar10_wrn28-10_art.yaml")
    found["ckpt2_meta"] = str(Path(found["ckpt2"]).with_suffix(".json"))
    corrupt = base / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    corrupt.with_suffix(".json").write_text(Path(found["ckpt2"]).with_suffix(".json").read_text())
    found["ckpt_corrupt"] = str(corrupt)
    found["ckpt2_json"] = str(Path(found["ckpt2"]).with_suffix(".json"))
    evil = base / "evil.pth"
    evil.write_bytes(pickle.dumps({"weight": _Payload()}, protocol=4))  # a plain pickle: torch warns about its protocol
    found["evil"] = str(evil)
    for name, summary in (("broken", '{"total": 3'), ("targeted", json.dumps({"total": 1, "metrics": {}, "config": {"attack": "targeted"}}))):
        (base / f"run_{name}").mkdir()
        (base / f"run_{name}" / "summary.json").write_text(summary)
        (base / f"run_{name}" / "samples.csv").write_text("index\n0\n")
        found[f"run_{name}"] = str(base / f"run_{name}")
    (base / "run_targeted" / "config.json").write_text(json.dumps({"attack": "targeted"}))
    ifia = base / "run_ifia"  # an attribution-attack run of one sample, as the job writes it
    ifia.mkdir()
    (ifia / "config.json").write_text(json.dumps({"attack": "attribution"}))
    (ifia / "samples.csv").write_text("index,label,pred,attacked,topk_intersection,kendall\n3,0,0,True,0.5,0.5\n")
    (ifia / "summary.json").write_text(json.dumps({"total": 1, "attacked": 1, "metrics": {}, "config": {"attack": "attribution"}}))
    found["run_ifia"] = str(ifia)
    ck = found["ckpt2"]
    for name, text in (("empty", ""), ("scalar", "models: 3\n"), ("unknown", "models:\n  - name: a\n    model: NoSuchModel\n"),
                       ("noweights", f"models:\n  - name: a\n    checkpoint: {ck}\n  - name: b\n    model: Peng2023Robust\n    weights: missing.pt\n"),
                       ("twice", f"models:\n  - name: a\n    checkpoint: {ck}\n  - name: a\n    checkpoint: {ck}\n"),
                       ("numbers", "models:\n  - name: a\n    model: pyautoattack-resnet18\n    weights: [1, 2]\n"),
                       ("slash", f"models:\n  - name: ../a\n    checkpoint: {ck}\n"),
                       ("typo", f"models:\n  - name: a\n    checkpoint: {ck}\n    weight: x.pt\n"),
                       ("both", f"models:\n  - name: a\n    checkpoint: {ck}\n    model: pyautoattack-resnet18\n"),
                       ("one", f"models:\n  - name: a\n    checkpoint: {ck}\n"),
                       ("models_twice", f"models:\n  - name: a\n    checkpoint: {ck}\nmodels:\n  - name: b\n    checkpoint: {ck}\n"),
                       ("intname", f"models:\n  - name: 1\n    checkpoint: {ck}\n"),
                       ("octalname", f"models:\n  - name: 010\n    checkpoint: {ck}\n")):
        (base / f"study_{name}.yaml").write_text(text)
        found[f"study_{name}"] = str(base / f"study_{name}.yaml")
    for name, files in (("train_run", ("model.safetensors", "config.yaml", "metrics.jsonl")), ("robust_run", ("run.json",)),
                        ("study_run", ("models/a/run.json", "report.md"))):
        for file in files:
            (base / name / file).parent.mkdir(parents=True, exist_ok=True)
            (base / name / file).write_text("{}\n")
        found[name] = str(base / name)
    (base / "study_binary.yaml").write_bytes(b"\x00\xff models")
    found["study_binary"] = str(base / "study_binary.yaml")
    return {**found, "base": base}


def _tree(root: Path) -> set:
    return {(str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*")}


@pytest.fixture
def sandbox(tmp_path, monkeypatch) -> dict:
    """A working folder with one file and one folder; the cache points inside it so nothing escapes."""
    work = tmp_path / "work"
    (work / "existing").mkdir(parents=True)
    (work / "a_file.txt").write_text("not a folder\n")
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return {"root": tmp_path, "file": str(work / "a_file.txt"), "dir": str(work / "existing"), "missing": str(work / "missing.yaml")}


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({tuple(c) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c) for c in CASES])
def test_wrong_input_is_one_line_exit_2(argv, sandbox, assets, capsys) -> None:
    args = [a.format(**sandbox, **assets) for a in argv]
    before = _tree(sandbox["root"]) | _tree(assets["base"])
    status = run(args)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert status == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert _tree(sandbox["root"]) | _tree(assets["base"]) == before


def test_an_empty_argument_names_its_option(capsys) -> None:
    assert run(["localize", "--checkpoint", "", "--dataset", "shapes", "--out", "p.json"]) == 2
    assert capsys.readouterr().err == "error: --checkpoint is empty (an unset shell variable?); give it a value\n"
    assert run(["robustness", "study", "", "--dataset", "shapes", "--out", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: an argument is empty")


def test_resume_without_an_earlier_run_says_so_and_starts_fresh(sandbox, assets, capsys) -> None:
    out = Path(sandbox["dir"]) / "run"
    argv = ["train", "cub", "--arch", "small-cnn", "--root", assets["cub"], "--out", str(out), "--epochs", "1", "--batch-size", "2", "--resume"]
    assert run(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("config: ") and f"note: {out} holds no earlier run to resume; starting fresh" in err[1:3], err
    assert err[1].startswith("note: no shipped config for cub with arch small-cnn"), err  # small-cnn has no cub config
    assert (out / "train_state.pt").is_file()


def test_weights_folder_names_the_file_to_pass(sandbox, assets, capsys) -> None:
    argv = ["train", "cub", "--arch", "small-cnn", "--root", assets["cub"], "--weights", sandbox["dir"], "--out", f"{sandbox['dir']}/run"]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and f"{sandbox['dir']}/model.safetensors" in err and err.count("\n") == 1, err


def test_device_error_names_the_choices(sandbox, capsys) -> None:
    assert run(["train", "shapes", "--device", "bogus"]) == 2
    assert capsys.readouterr().err == "error: unknown device 'bogus'; use cpu, cuda or cuda:N\n"


def test_parse_error_names_the_option_and_the_help(sandbox, capsys) -> None:
    assert run(["train", "shapes", "--epochs", "abc"]) == 2
    err = capsys.readouterr().err
    assert "'--epochs'" in err and "wsol train --help" in err


def test_read_only_out_folder_is_refused(sandbox, capsys, monkeypatch) -> None:
    readonly = Path(sandbox["dir"])
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == readonly else real_access(p, mode))
    assert run(["data", "show", "shapes", "--out", str(readonly / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to") and "read-only" in err and err.count("\n") == 1


def test_subprocess_entry_point_prints_one_line(tmp_path) -> None:
    """The console entry point (real argv, real stderr): no traceback from typer's bundled click."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "wsol", "train", "shapes", "--resume", "true"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    assert list(tmp_path.iterdir()) == []


def test_under_torchrun_a_mistake_is_printed_once_not_once_per_rank(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "--", "wsol", "attack", "attribution",
                           "--checkpoint", "missing.safetensors", "--dataset", "shapes", "--out", "a"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.safetensors" in errors[0], done.stderr


def test_a_rank_other_than_0_stays_silent_before_the_ranks_connect(monkeypatch, capsys) -> None:
    monkeypatch.setenv("RANK", "1")
    assert run(["train", "shapes", "--epochs", "-1"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert run(["train", "shapes", "--epochs", "-1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_once_the_work_has_started_another_rank_names_itself(monkeypatch, capsys) -> None:
    from wsol.utils import distributed

    from wsol.cli import _error

    monkeypatch.setenv("RANK", "1")
    distributed.mark_work_started()
    _error("a file of this rank's shard is broken")
    assert capsys.readouterr().err == "error: rank 1: a file of this rank's shard is broken\n"
    assert run(["train", "shapes", "--epochs", "-1"]) == 2  # a new command starts unstarted
    assert capsys.readouterr().err == ""


def test_unreadable_file_inside_an_input_is_one_line(sandbox, assets, capsys, monkeypatch) -> None:
    """chmod 000 on a file the command opens on its own (a checkpoint's sidecar, a dataset's list file): no traceback."""
    sidecar = Path(assets["ckpt2_meta"])
    real_read_text = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self == sidecar:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    argv = ["localize", "--checkpoint", assets["ckpt2"], "--dataset", "cub", "--root", assets["cub"], "--out", f"{sandbox['dir']}/p.json"]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: permission denied: {sidecar}; change its permissions or choose another path\n", err


def test_demo_under_torchrun_is_one_line_before_any_write(sandbox, capsys, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: every rank wrote the same figures and metrics and crashed
    out = Path(sandbox["dir"]) / "demo"
    assert run(["demo", "--out", str(out), "--epochs", "1", "--n-train", "10", "--n-test", "10"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: wsol demo runs in one process"), lines
    assert not out.exists()


def test_ctrl_c_outside_a_command_is_one_line_and_status_130(monkeypatch, capsys) -> None:
    import wsol.cli as cli

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    with pytest.raises(SystemExit) as exc:
        cli.entry_point()
    assert exc.value.code == 130 and capsys.readouterr().err == f"error: {cli.INTERRUPTED}\n"


CTRL_C_IN_TORCH_IMPORT = """
import sys

class Interrupted:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise KeyboardInterrupt  # as a Ctrl-C during the second that `import torch` takes
        return None

sys.meta_path.insert(0, Interrupted())
from wsol.cli import entry_point
sys.argv = ["wsol", "models"]
entry_point()
"""


def test_ctrl_c_while_torch_is_imported_is_one_line_and_status_130() -> None:
    """A Ctrl-C in the first second of any command lands in ``import torch``; the error path imported torch again to
    print its line, and the half-imported torch crashed with a traceback (AttributeError, 'Only a single TORCH_LIBRARY')."""
    repo = Path(__file__).resolve().parents[1]  # `python -c` imports wsol from its working folder: this checkout's
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_TORCH_IMPORT], cwd=repo, capture_output=True, text=True, timeout=60)
    import wsol.cli as cli

    assert (done.returncode, done.stderr) == (130, f"error: {cli.INTERRUPTED}\n")


def test_under_torchrun_another_rank_prints_the_mistake_only_if_rank_0_has_not_ended_the_job(monkeypatch, capsys) -> None:
    """torchrun ends the other ranks once rank 0 has printed and failed; a rank still running after the grace
    period prints the line itself (naming itself), so a slow rank 0 never leaves the user without one."""
    import wsol.cli as cli

    waited = []
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setattr(cli.time, "sleep", waited.append)
    assert run(["train", "shapes", "--epochs", "-1"]) == 2
    err = capsys.readouterr().err
    assert waited == [cli.RANK_0_GRACE_S] and err.startswith("error: rank 1: ") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["attack", "attribution", "--checkpoint", "m.safetensors", "--out", "a"], ["data", "show"],
                                  ["localize", "--checkpoint", "m.safetensors", "--out", "p.json"], ["robustness", "study", "{file}", "--out", "r"]])
def test_a_dataset_name_typo_is_called_unknown_not_asked_for_a_root(argv, sandbox, capsys) -> None:
    """`--dataset shape` (for shapes) was told "dataset 'shape' needs --root DIR", as if the name were right."""
    args = [a.format(**sandbox) for a in argv] + (["shape"] if argv[0] == "data" else ["--dataset", "shape"])
    assert run(args) == 2
    assert capsys.readouterr().err.startswith("error: unknown dataset 'shape'; choose one of: ")


def test_a_training_state_given_as_checkpoint_names_the_model_beside_it(sandbox, assets, capsys) -> None:
    """`--checkpoint run/train_state.pt` (or config.yaml) of a training run: the error points at run/model.safetensors."""
    import shutil

    folder = Path(sandbox["dir"]) / "run"
    folder.mkdir()
    shutil.copy(assets["ckpt2"], folder / "model.safetensors")
    shutil.copy(assets["ckpt2_meta"], folder / "model.json")
    (folder / "train_state.pt").write_bytes(b"state")
    argv = ["attack", "attribution", "--checkpoint", str(folder / "train_state.pt"), "--dataset", "cub", "--root", assets["cub"], "--out", "a"]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(f"the model of that run is {folder / 'model.safetensors'}"), err


def test_a_folder_given_as_predictions_is_called_a_folder_not_missing(sandbox, assets, capsys) -> None:
    assert run(["evaluate", "--pred", sandbox["dir"], "--dataset", "cub", "--root", assets["cub"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder" in err and "not found" not in err, err
    folder = Path(sandbox["dir"])
    for name in ("preds_cam.json", "preds_cam.meta.json", "model.json"):
        (folder / name).write_text("[]")
    assert run(["evaluate", "--pred", str(folder), "--dataset", "cub", "--root", assets["cub"]]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"wrote: it holds {folder / 'preds_cam.json'}"), err  # the results file localize wrote, with its .meta.json


def test_an_out_folder_of_another_command_names_what_it_holds(assets, capsys, monkeypatch) -> None:
    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the --out folder was checked")

    monkeypatch.setattr("wsol.jobs.attack.load_model", no_load)  # the refusal comes first: loading can take minutes
    argv = ["attack", "targeted", "--checkpoint", assets["ckpt2"], "--dataset", "cub", "--root", assets["cub"], "--n", "2", "--out", assets["run_ifia"]]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "holds an attribution attack run" in err and "targeted-attack" in err, err


def test_a_table1_out_on_a_run_file_is_told_its_extension_first(assets, capsys) -> None:
    """table1 --out RUN/summary.json: the extension is checked before the run-file rule, so the first error already
    leads to a name that works (RUN/summary.csv); 'give another file name' alone could lead to RUN/table.json, a second error."""
    out = Path(assets["run_ifia"]) / "summary.json"
    assert run(["report", "table1", assets["run_ifia"], "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: --out {out} must end in .csv (CSV) or .md (Markdown): the extension chooses the format of the table\n"


@pytest.mark.parametrize("argv, meant", [
    (["train", "CUB"], "cub"),
    (["train", "shapes", "--method", "natrual"], "natural"),
    (["train", "shapes", "--method", "ART"], "art"),
    (["train", "shapes", "--method", "atr"], "art"),  # two letters swapped: difflib's ratio alone missed it
    (["config", "show", "--set", "dataset=cbu"], "cub"),
    (["localize", "--checkpoint", "m.safetensors", "--dataset", "Cub", "--out", "p.json"], "cub"),
    (["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--attribution", "gard", "--out", "p.json"], "grad"),
    (["attack", "attribution", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--objective", "top-k", "--out", "a"], "topk"),
    (["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--target", "GT", "--out", "p.json"], "gt"),
    (["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--postprocess", "WSOL", "--out", "p.json"], "wsol"),
])
def test_a_name_in_another_case_or_misspelt_gets_the_name_meant(argv, meant, sandbox, capsys) -> None:
    """A tired user's `CUB`, `ART` or `natrual` was told only the list of choices; the error now ends with the one meant."""
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(f"did you mean {meant!r}?"), err


def test_a_name_far_from_every_choice_gets_no_guess() -> None:
    from wsol.errors import did_you_mean

    assert did_you_mean("xyz", ["topk", "mass-center", "random"]) == ""


def test_a_near_miss_of_a_mixed_case_name_is_found_and_named_as_spelled() -> None:
    from wsol.errors import did_you_mean

    choices = ["Wang2023Better_WRN-28-10", "Peng2023Robust", "RaWideResNet-70-16"]
    assert did_you_mean("peng2023robst", choices) == "; did you mean 'Peng2023Robust'?"
    assert did_you_mean("rawideresnet-70-61", choices) == "; did you mean 'RaWideResNet-70-16'?"  # too far while the case counted
    assert did_you_mean("wang2023better_wrn-28-10", choices) == "; did you mean 'Wang2023Better_WRN-28-10'?"


@pytest.mark.parametrize("command", ["localize", "visualize", "evaluate", "robustness"])
def test_loader_options_reach_the_loader_of_every_command_that_reads_a_dataset(command, sandbox, assets, capsys) -> None:
    """-o KEY=VALUE (cifar10c's corruption, wsolmeta's metadata) is taken by each command that reads a dataset, not only by
    `wsol data`: an option the loader does not have is its one-line error, so the option got there."""
    argv = {"localize": ["localize", "--checkpoint", "{ckpt2}", "--out", "{dir}/p.json"],
            "visualize": ["visualize", "--checkpoint", "{ckpt2}", "--out", "{dir}/g.png"],
            "evaluate": ["evaluate", "--pred", "{pred_cat0}"],
            "robustness": ["robustness", "evaluate", "--checkpoint", "{ckpt2}", "--out", "{dir}/r"]}[command]
    args = [a.format(**sandbox, **assets) for a in [*argv, "--dataset", "cub", "--root", "{cub}", "-o", "bogus=1"]]
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dataset 'cub' has no option 'bogus'" in err, err


@pytest.mark.parametrize("argv, example", [
    (["localize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "{dir}"], "preds.json"),
    (["visualize", "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", "{dir}"], "grid.png"),
    (["data", "show", "shapes", "--out", "{dir}"], "grid.png"),
])
def test_an_out_folder_where_a_file_goes_is_told_a_file_name_that_works(argv, example, sandbox, capsys) -> None:
    """`--out existing/` was told 'e.g. existing/out', which the .json/.png rule refused next: a second error."""
    assert run([a.format(**sandbox) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(f"e.g. {Path(sandbox['dir']) / example}"), err


@pytest.mark.parametrize("command, out", [("localize", "p.json"), ("visualize", "g.png")])
def test_threshold_1_is_refused_as_the_help_says_naming_the_option(command, out, sandbox, capsys) -> None:
    """--help said [0.0<=x<=1.0] while 1 was refused as 'localize.threshold ...', an option the user never typed."""
    argv = [command, "--checkpoint", "m.safetensors", "--dataset", "shapes", "--out", out, "--threshold", "1"]
    assert run(argv) == 2
    assert capsys.readouterr().err.startswith("error: --threshold is a fraction of the map maximum in [0, 1)")
    assert run([command, "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "x<=1.0" not in help_text and "[0, 1)" in help_text, help_text


@pytest.mark.parametrize("split", ["Test", "tset"])
def test_a_misspelt_split_gets_the_split_meant(split, sandbox, assets, capsys) -> None:
    argv = ["data", "show", "cub", "--root", assets["cub"], "--split", split, "--out", "g.png"]
    assert run(argv) == 2
    assert capsys.readouterr().err.endswith(f"has splits train, test; got split {split!r}; did you mean 'test'?\n")


def test_a_home_tilde_after_an_equals_sign_is_the_home_folder(sandbox, capsys, monkeypatch) -> None:
    """`--root=~/data` reached wsol unexpanded (the shell expands ~ only at the start of a word): a root 'not found'
    although it exists, and `--out=~/runs/x` wrote into a folder named ~ in the working folder."""
    monkeypatch.setenv("HOME", sandbox["dir"])
    assert run(["data", "verify", "cub", "--root=~/missing"]) == 2
    assert f"{Path(sandbox['dir']) / 'missing'}" in capsys.readouterr().err
    assert run(["data", "show", "cub", "--root", sandbox["missing"], "--out=~"]) == 2  # the home folder, an existing folder
    assert f"cannot write {sandbox['dir']}: it is an existing folder" in capsys.readouterr().err


def test_a_misspelt_loader_option_gets_the_option_meant(sandbox, assets, capsys) -> None:
    assert run(["data", "verify", "cub", "--root", assets["cub"], "-o", "segmentatoins=x"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("did you mean 'segmentations'?")


def test_the_synth_command_suggested_for_a_missing_root_pastes_with_its_spaces(sandbox, capsys) -> None:
    """`--root "my data/shapes"`: the suggested `wsol data synth shapes --out my data/shapes` split into two words."""
    assert run(["data", "verify", "shapes", "--root", "my data/shapes"]) == 2
    assert capsys.readouterr().err.rstrip().endswith("generate it with `wsol data synth shapes --out 'my data/shapes'`")


def test_a_shipped_config_path_typed_outside_the_repository_names_the_shipped_file(sandbox, capsys) -> None:
    """README's `wsol config show configs/cifar10_wrn28-10_art.yaml` from another folder: 'not found' and no way on."""
    from wsol.config import configs_dir

    assert run(["config", "show", "configs/cifar10_wrn28-10_art.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: config file not found: configs/cifar10_wrn28-10_art.yaml; the shipped config of that name is {configs_dir() / 'cifar10_wrn28-10_art.yaml'}\n"
