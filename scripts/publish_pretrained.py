"""Publish the weights of a finished run as pretrained weights shipped with stn (entry ``<model>.<tag>`` of
``src/stn/models/weights/manifest.json``; see :mod:`stn.models.pretrained`), replacing an entry of the same name.

It reads the run folder (its ``checkpoint.pt``), scores the fp32 weights on the official 10k test split of the
run's distorted-MNIST variant and on the fixed subset of 500 test digits, with the code ``stn eval`` uses
(:func:`stn.cli.eval.score`, the engine's evaluate as the run scored itself), refuses weights whose full-split
error differs from the one the run recorded, and writes the weights file and the manifest atomically. Run::

    python scripts/publish_pretrained.py results/table1-rts-long/rts/st-cnn-aff/seed0 --tag rts \\
        --data-dir ../shared/data/mnist --command "stn reproduce table1 --data RTS --budget long ..."

then check with ``stn eval --pretrained st-cnn-aff:rts --data-dir ../shared/data/mnist`` and commit the new
weights file, the manifest and the removal of the file it replaced.

``--rescore [NAME ...]`` scores shipped entries again on this machine (one thread, as published) and records its
numerics fingerprint beside their numbers: the tests compare those bit for bit on a CPU with the same fingerprint
and within a measured tolerance on others (:mod:`stn.numerics`)::

    OMP_NUM_THREADS=1 python scripts/publish_pretrained.py --rescore --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from stn.cli.eval import load_test_set, score
from stn.engine.checkpoint import Progress, RunRecord, load_model
from stn.models import create_model
from stn.models.pretrained import SUBSET_SIZE, WEIGHTS_DIR, load_pretrained_state, publish, read_manifest
from stn.models.registry import upgrade_kwargs
from stn.numerics import numerics_fingerprint


def publish_run(
    run_dir: str | Path,
    *,
    command: str,
    tag: str | None = None,
    data_dir: str | None = None,
    weights_dir: str | Path | None = None,
    allow_difference: bool = False,
) -> dict[str, Any]:
    """Publish the finished run in ``run_dir`` as ``<model>.<tag>`` (tag default: the run's variant); returns the
    manifest entry written.

    Raises:
        ValueError: the run has not finished, is not on distorted MNIST, was scored on a test split other than
            the official one where the full MNIST is missing, or its error now differs from the recorded one.
    """
    model, checkpoint = load_model(run_dir)
    run, progress = RunRecord.of(checkpoint), Progress.of(checkpoint)
    if not progress.finished:
        raise ValueError(f"{run_dir}: the run has not finished (step {progress.step} of {progress.total_steps})")
    data = run.data
    if data.get("kind") != "distorted-mnist":
        raise ValueError(f"{run_dir}: only distorted-MNIST runs can be published (stn eval --pretrained scores them)")
    # a pretrained-weights entry holds the run's record, tested on the official test split where the user keeps MNIST
    official = {**data, "num_test": None, "root": None, "download": False}
    entry = dataclasses.replace(run, model_kwargs=upgrade_kwargs(run.model_name, run.model_kwargs), data=official)
    record: dict[str, Any] = {"model_name": run.model_name, "tag": tag or data["variant"], **entry.entry()}
    record["params"] = sum(p.numel() for p in model.parameters())
    model.float()  # the weights ship fp32: score exactly those
    scores = _scores(model, record, data_dir)
    history = progress.history or [{}]
    recorded = history[-1].get("test_error") if data.get("num_test") is None else None
    if recorded is not None and recorded != scores["test_error"] and not allow_difference:
        raise ValueError(
            f"{run_dir}: the run recorded test error {recorded} but its weights score {scores['test_error']} here "
            "(another torch version or thread count?); --allow-difference publishes the new number"
        )
    record |= scores | {
        "training": {
            "run": str(run_dir),
            "command": command,
            "steps": progress.step,
            "epochs": len(progress.history),
            "time_s": history[-1].get("elapsed_s"),
            "recorded_test_error": recorded,
        },
    }
    return publish(model.state_dict(), record, weights_dir)


def _scores(model: Any, record: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    """An entry's numbers: the fp32 ``model`` on the official test split and on the fixed subset, with the
    fingerprint of the numerics they repeat under bit for bit."""
    where = argparse.Namespace(data=None, data_dir=data_dir, download=False)
    test = load_test_set(record, where)
    if test.source != "mnist":
        raise ValueError(f"the official test split needs the full MNIST, found {test.source!r}: pass --data-dir")
    full = score(model, record, test)
    size = min(SUBSET_SIZE, len(test))  # the official split holds 10,000; a test's tiny MNIST fewer
    subset = score(model, record, load_test_set(record, where, size))
    return {
        "test_error": full["error"],
        "test_loss": full["loss"],
        "test_samples": len(test),
        "subset": {"num_test": size, "test_error": subset["error"], "test_loss": subset["loss"]},
        "evaluated_with": numerics_fingerprint(),  # where the numbers above repeat bit for bit
    }


def rescore(
    names: list[str] | None = None,
    *,
    data_dir: str | None = None,
    weights_dir: str | Path | None = None,
    allow_difference: bool = False,
) -> list[dict[str, Any]]:
    """Score shipped entries again here and record the numbers with this machine's numerics fingerprint, so that
    the tests compare them bit for bit on this kind of CPU (elsewhere within a measured tolerance). The weights do
    not change; a full-split error other than the published one is refused unless ``allow_difference``."""
    entries = read_manifest(weights_dir)
    unknown = sorted(set(names or ()) - set(entries))
    if unknown:
        raise ValueError(f"no entries {', '.join(unknown)} in the manifest; it holds {', '.join(entries)}")
    written = []
    for name in names or list(entries):
        entry = entries[name]
        model = create_model(entry["model_name"], **entry["model_kwargs"])  # the weights of weights_dir, not stn's
        model.load_state_dict(load_pretrained_state(entry, weights_dir))
        model.float().eval()
        scores = _scores(model, dict(entry), data_dir)
        if scores["test_error"] != entry["test_error"] and not allow_difference:
            raise ValueError(
                f"{name}: published test error {entry['test_error']} but it scores {scores['test_error']} here; "
                "--allow-difference records the new number"
            )
        written.append(publish(model.state_dict(), {**entry, **scores}, weights_dir))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("run_dir", type=Path, nargs="?", help="a finished run folder (its checkpoint.pt)")
    parser.add_argument("--command", help="the command that trained the run (recorded; required with run_dir)")
    parser.add_argument(
        "--rescore",
        nargs="*",
        metavar="NAME",
        help="instead of publishing a run, score shipped entries (default all) again here and record this "
        "machine's numerics fingerprint with their numbers",
    )
    parser.add_argument("--tag", help="what the weights were trained on (default: the run's variant, e.g. rts)")
    parser.add_argument("--data-dir", help="folder with the MNIST files (default: $STN_DATA, then ~/.cache/stn)")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR, help=f"default {WEIGHTS_DIR}")
    parser.add_argument("--allow-difference", action="store_true", help="publish an error the run did not record")
    args = parser.parse_args(argv)
    if args.rescore is None and (args.run_dir is None or args.command is None):
        parser.error("give a run folder and --command, or --rescore")
    try:
        if args.rescore is not None:
            for entry in rescore(
                args.rescore or None,
                data_dir=args.data_dir,
                weights_dir=args.weights_dir,
                allow_difference=args.allow_difference,
            ):
                print(f"rescored {entry['model_name']}.{entry['tag']}: test loss {entry['test_loss']}, subset loss "
                      f"{entry['subset']['test_loss']} ({entry['evaluated_with']['cpu_capability']}, "
                      f"{entry['evaluated_with']['threads']} threads)")  # fmt: skip
            return 0
        entry = publish_run(
            args.run_dir,
            command=args.command,
            tag=args.tag,
            data_dir=args.data_dir,
            weights_dir=args.weights_dir,
            allow_difference=args.allow_difference,
        )
    except (ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"publish_pretrained: error: {message}", file=sys.stderr)
        return 1
    name = f"{entry['model_name']}.{entry['tag']}"
    print(
        f"published {name}: {args.weights_dir / entry['file']} ({entry['bytes']:,} bytes, sha256 {entry['sha256']}), "
        f"test error {100 * entry['test_error']:.2f}% on {entry['test_samples']} digits, "
        f"{100 * entry['subset']['test_error']:.2f}% on the fixed {SUBSET_SIZE}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
