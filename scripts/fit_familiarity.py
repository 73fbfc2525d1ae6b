"""Add (or refit) the familiarity check of an existing bundle from the normal clips it was trained on.

``train`` fits it for every new bundle; this script brought it to the bundle trained before it existed:

    python -m anomaly synth corpus --seed 1 --train 1000 --test 0
    python scripts/fit_familiarity.py artifacts corpus

It rewrites ``arrays.npz`` (every other array kept as it is) and ``config.json`` with fresh checksums.
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from anomaly.bundle import load_bundle, write_config
from anomaly.dcase import parse_name
from anomaly.familiarity import FAMILIARITY_CONFIG, Familiarity
from anomaly.features import log_mel_file
from anomaly.training import training_files

log = logging.getLogger("anomaly")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="bundle folder to update")
    parser.add_argument("corpus", help="the corpus the bundle was trained on (DCASE layout)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bundle = load_bundle(args.bundle)
    params = bundle.params
    files = training_files(args.corpus)
    specs = [log_mel_file(f, params) for f in files]
    familiarity = Familiarity(params.window_frames).fit(specs, [parse_name(f).domain for f in files])
    arrays = {k: v for k, v in bundle.arrays.items() if not k.startswith("familiar_")}
    arrays.update(familiarity.to_arrays())
    np.savez(bundle.path / "arrays.npz", **arrays)
    config = dict(bundle.config, familiarity=FAMILIARITY_CONFIG)
    write_config(bundle.path, config)
    log.info("familiarity fitted on %d clips (%s) and written to %s", len(files), json.dumps(
        {d: int(sum(parse_name(f).domain == d for f in files)) for d in familiarity.domains_}), bundle.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
