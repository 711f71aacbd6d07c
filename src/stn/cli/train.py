"""``stn train``: train one model on one distorted-MNIST variant with the training engine (see
:mod:`stn.engine.trainer`; the run is :func:`stn.experiments._common.make_trainer`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stn.engine.options import (
    add_data_options,
    add_standardize_option,
    add_training_options,
    option_type,
    positive_int,
)

_EXAMPLES = """examples:
  stn train --data rts --model st-cnn-aff --epochs 10
  stn train --data rts --model cnn --iterations 2000 --out runs/rts-cnn
  stn train --out runs/rts-cnn --resume                  # continue after Ctrl-C (same settings)
  stn train --data tc --model st-cnn-tps --device cuda --amp --iterations 150000
  torchrun --nproc_per_node 2 -m stn train --data rts --model st-cnn-aff   # data-parallel, 2 processes

The run folder (--out, default runs/<data>-<model>-seed<seed>) gets checkpoint.pt (every epoch and on
Ctrl-C / SIGTERM), metrics.jsonl (one line per epoch, with θ diagnostics), summary.json / summary.md /
metrics.csv and the figures curves.png and transformations.png when training finishes.
"""

# What the model is built with besides what the data decides (in_shape, num_classes).
_DATA_DECIDES = ("in_shape", "num_classes")
# Registered models that stn train cannot train (their data is not distorted MNIST), by name prefix: where they are.
_ELSEWHERE = {
    "svhn-": "it trains on SVHN: stn reproduce table2",
    "cub-": "it trains on CUB-200 photos: stn reproduce table3",
    "volume-": "it trains on 3-D volumes: stn reproduce 3d",
    "coloc-": "it is trained by the co-localisation experiment: stn reproduce colocalization",
}


def trainable_models() -> list[str]:
    """The models ``stn train`` trains: the Table 1 models, their compositional ST-CNNs (``ic-*``), and the
    MNIST-addition models (``add-*``, for ``--data addition``), which take a distorted-MNIST ``in_shape`` and
    ``num_classes``."""
    from stn.experiments.table1 import COMPOSITIONAL, MODELS
    from stn.models import list_models

    return [*MODELS, *COMPOSITIONAL, *list_models("add-*")]


def model_name(text: str) -> str:
    """argparse ``type=`` of ``--model``: a model ``stn train`` trains; another registered model is refused
    naming the command that trains it, an unknown name suggests the closest ones ("did you mean ...")."""
    import difflib

    from stn.models import list_models

    name = text.strip().lower()
    trainable = trainable_models()
    if name in trainable:
        return name
    if name in list_models():
        where = next((why for prefix, why in _ELSEWHERE.items() if name.startswith(prefix)), None)
        raise argparse.ArgumentTypeError(
            f"stn train does not train {name!r}: "
            + (where or "it does not classify distorted-MNIST digits; train it from Python with stn.engine.Trainer")
        )
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    raise argparse.ArgumentTypeError(f"unknown model {text!r}; {hint}stn train trains {', '.join(trainable)}")


def _run(args: argparse.Namespace) -> tuple[dict, str, dict, object]:
    """``(data spec, model name, model options, TrainConfig)`` from the options, completed by the run folder's
    ``config.json`` with ``--resume``."""
    from stn.engine.config import TrainConfig
    from stn.engine.rundir import read_run_config

    given = {f: getattr(args, f) for f in TrainConfig.__dataclass_fields__ if getattr(args, f, None) is not None}
    options = {} if args.target_params is None else {"target_params": args.target_params}
    if args.standardize:
        options["standardize"] = True
    if args.resume and args.out and (Path(args.out) / "config.json").exists():
        saved = read_run_config(args.out)
        data = dict(saved.data)
        for key, value in (("variant", args.data), ("num_train", args.num_train), ("num_test", args.num_test)):
            if value is not None:
                data[key] = value
        if args.data_dir is not None:
            data["root"] = args.data_dir
        saved_options = {k: v for k, v in saved.model_kwargs.items() if k not in _DATA_DECIDES}
        name = args.model or saved.model_name
        return data, name, {**saved_options, **options}, saved.train_config().replace(**given)
    missing = [f"--{k}" for k in ("data", "model") if getattr(args, k) is None]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (unless --resume finds the run in --out)")
    from stn.experiments.table1 import recipe_defaults

    data = {"variant": args.data, "num_train": args.num_train, "num_test": args.num_test, "root": args.data_dir}
    return data, args.model, options, TrainConfig().replace(**{**recipe_defaults(args.model), **given})


def _paper_error(model: str, data: str) -> str:
    from stn.experiments.table1 import PAPER

    value = PAPER.get(model, {}).get(data)
    return "" if value is None else f" (paper: {value}%)"


def _train(args: argparse.Namespace) -> int:
    from stn.experiments._common import make_trainer

    data, model, options, config = _run(args)
    variant = data["variant"]
    out = Path(args.out or f"runs/{variant}-{model}-seed{config.seed}")
    trainer = make_trainer(
        variant,
        model,
        config,
        out,
        model_options=options,
        num_train=data.get("num_train"),
        num_test=data.get("num_test"),
        data_dir=data.get("root"),
        download=args.download,
        resume=args.resume,
        progress=not args.quiet,
        figures=not args.no_figures,
        force=args.force,
    )
    result = trainer.fit()
    if not result.finished:
        return 128 + (result.signal or 0)
    if not result.is_main:
        return 0
    s = result.summary
    print(
        f"{model} on {variant} ({s['source']}, {s['train_samples']} training digits): test error "
        f"{100 * s['test_error']:.2f}%{_paper_error(model, variant)} after {s['steps']} steps, "
        f"{s['time_s'] / 60:.1f} min; results in {out}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from stn.data import VARIANTS
    from stn.engine.config import TrainConfig
    from stn.experiments.table1 import COMPOSITIONAL
    from stn.experiments.table1 import MODELS as TABLE1_MODELS

    p = subparsers.add_parser(
        "train",
        help="train a model on distorted MNIST",
        description="Train a model on a distorted-MNIST variant with the paper's recipe (SGD, batch 256, lr 0.01 "
        "divided by 10 at 1/3 and 2/3 of training; momentum 0.9 is our choice). Fresh distortions every epoch, a "
        "fixed test set, a checkpoint every epoch.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=str.lower, choices=VARIANTS, help="distorted-MNIST variant")
    p.add_argument(
        "--model",
        type=model_name,
        metavar="MODEL",
        help=f"the Table 1 models {', '.join(TABLE1_MODELS)}, their compositional ST-CNNs {', '.join(COMPOSITIONAL)}, "
        "or with --data addition the addition models "
        f"{', '.join(m for m in trainable_models() if m.startswith('add-'))} (the SVHN, CUB, 3-D and "
        "co-localisation models train with stn reproduce table2, table3, 3d and colocalization)",
    )
    add_training_options(p, {"": TrainConfig()})
    # The shared help speaks of a reproduction's budget; stn train has none, only these two options.
    epochs = p._option_string_actions["--epochs"]
    epochs.help = f"passes over the training set, unless --iterations is given (default {TrainConfig().epochs})"
    p.add_argument("--target-params", type=positive_int, help="model size to solve widths for (default 400000)")
    add_standardize_option(p)
    p.add_argument("--num-train", type=positive_int, help="train on a fixed subset of N digits")
    p.add_argument("--num-test", type=positive_int, help="test on a fixed subset of N digits")
    p.add_argument("--num-workers", type=option_type("num_workers"), help="data-loading processes (default 0)")
    p.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        default=None,
        help="keep the weights NCHW (default: channels-last, about 20%% faster convolutions on CPU)",
    )
    p.add_argument("--tensorboard", action="store_true", default=None, help="also log to TensorBoard")
    p.add_argument("--out", default=None, help="run folder (default runs/<data>-<model>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--force",
        action="store_true",
        help="train in an --out that holds other files than a run's (refused otherwise: a run would overwrite "
        "files named config.json, summary.md, metrics.csv... there)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures at the end")
    add_data_options(p)
    p.set_defaults(func=_train)
