"""Measure how far the numbers that tests pin move between CPU kernel sets and thread counts.

oneDNN and ATen pick their kernels by instruction set, so the same run gives other floats on another CPU. This script
reruns, in one subprocess per ``ATEN_CPU_CAPABILITY`` (``default``, ``avx2`` and, where the CPU has it, ``avx512``)
and thread count, what the portable tests compare:

* the 60-step ST-CNN Aff run of ``tests/engine/test_pinned.py``;
* every shipped pretrained entry on its fixed 500-digit test subset (``stn eval --pretrained ... --num-test 500``).

It prints one JSON line per setting and then the largest difference of each number from the stored one, which is
where the tolerances in those tests come from::

    python scripts/cpu_spread.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _measure(data_dir: str) -> dict:
    import torch

    from stn.cli.eval import load_test_set, score
    from stn.engine.config import TrainConfig
    from stn.experiments._common import make_trainer
    from stn.models import create_model
    from stn.models.pretrained import list_pretrained, pretrained_entry
    from stn.modules.conv import Conv2d

    out: dict = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    route = Conv2d._single_channel_route
    Conv2d._single_channel_route = lambda self, x: False  # the pinned test runs the oneDNN route
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig(iterations=60, batch_size=64, lr=0.1, seed=0, device="cpu")
        trainer = make_trainer(
            "rts", "st-cnn-aff", config, folder, num_train=2048, num_test=512,
            data_dir=data_dir, progress=False, figures=False,
        )  # fmt: skip
        result = trainer.fit()
        last = trainer.history[-1]
        out["pinned"] = {
            "test_error": result.summary["test_error"],
            "test_loss": last["test_loss"],
            "train_loss": last["train_loss"],
        }
    Conv2d._single_channel_route = route
    where = argparse.Namespace(data=None, data_dir=data_dir)
    out["pretrained"] = {}
    for name in list_pretrained():
        model_name, tag = name.split(".")
        entry = pretrained_entry(model_name, tag)
        test = load_test_set(entry, where, entry["subset"]["num_test"])
        metrics = score(create_model(model_name, pretrained=tag).eval(), entry, test)
        out["pretrained"][name] = {"test_error": metrics["error"], "test_loss": metrics["loss"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="the folder of the MNIST IDX files")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.data_dir)))
        return
    import torch

    capabilities = ["default", "avx2"] + (["avx512"] if torch.backends.cpu.get_cpu_capability() == "AVX512" else [])
    rows = []
    for capability in capabilities:
        for threads in map(int, args.threads.split(",")):
            env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--data-dir", args.data_dir],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    from stn.models.pretrained import pretrained_entry

    def spread(values: list[float], stored: float) -> float:
        return max(abs(v - stored) for v in values)

    print("largest difference from the stored value:")
    for key in ("test_error", "test_loss", "train_loss"):
        values = [r["pinned"][key] for r in rows]
        print(f"  pinned {key}: {min(values)} .. {max(values)}")
    for name in rows[0]["pretrained"]:
        subset = pretrained_entry(*name.split("."))["subset"]
        for key in ("test_error", "test_loss"):
            gap = spread([r["pretrained"][name][key] for r in rows], subset[key])
            print(f"  {name} {key}: {gap:.3g} (relative {gap / max(subset[key], 1e-12):.3g})")


if __name__ == "__main__":
    main()
