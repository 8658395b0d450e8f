"""``anogen-aug train``: train and test a weakly supervised detector (anomalib) on normal images plus a bank.

Every field of `anogen_aug.integrations.anomalib.TrainConfig` is a flag (``--tau``, ``--epochs``...).
"""

from __future__ import annotations

import argparse
import json

from .flags import add_config_flags, config_from_args


def add_parser(commands) -> None:
    parser = commands.add_parser("train", help="train a weakly supervised detector (anomalib) with a bank")
    parser.add_argument("--data", required=True, help="MVTec-layout root containing CATEGORY/")
    parser.add_argument("--category", required=True, help="the category folder under --data")
    parser.add_argument(
        "--bank",
        help="anomaly bank folder (anogen-aug generate) (default: none, the baseline: Perlin anomalies only, "
        "anomalib's own recipe)",
    )
    parser.add_argument(
        "--out",
        default="anogen-train",
        help="output folder: metrics.json, maps/, and the checkpoint unless --no-save-checkpoint (default: anogen-train)",
    )
    try:
        from anogen_aug.integrations.anomalib import TrainConfig
    except ImportError:  # the flags need the extra; `run` says how to install it
        parser.set_defaults(func=run)
        return
    add_config_flags(parser, TrainConfig, title="TrainConfig", skip={"model_options"})
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from anogen_aug.integrations.anomalib import TrainConfig, train_detector
    except ImportError as error:
        raise ImportError(
            f"`anogen-aug train` needs anomalib: pip install 'anogen-aug[anomalib]' ({error})"
        ) from error
    config = config_from_args(TrainConfig, args)
    metrics = train_detector(args.data, args.category, args.bank, config=config, out_dir=args.out)
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    return 0
