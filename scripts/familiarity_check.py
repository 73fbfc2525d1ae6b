"""How often the uncalibrated model calls a recording unfamiliar: synthetic test clips vs real machines.

    python -m anomaly synth /tmp/synth3 --seed 3 --train 0 --test 60
    python scripts/familiarity_check.py /tmp/synth3/test ../shared/data

Prints, per folder, the clips flagged unfamiliar, and the healthy real clips labelled SEVERE ANOMALY while
still called familiar (the product's promise is none).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anomaly.dcase import list_audio, parse_name
from anomaly.detector import Analysis, Detector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("synthetic", help="folder of synthetic test clips (DCASE names)")
    parser.add_argument("real", help="folder of real recordings (../shared/data)")
    args = parser.parse_args(argv)
    detector = Detector.load()
    for title, folder in (("synthetic", args.synthetic), ("real", args.real)):
        files = list_audio(Path(folder))
        results = [r for r in detector.analyze_many(files, names=[str(f) for f in files]) if isinstance(r, Analysis)]
        flagged = sum(not r.familiar for r in results)
        print(f"{title}: {flagged}/{len(results)} flagged unfamiliar ({100 * flagged / max(1, len(results)):.1f} %)")
        wrong = [
            r for r in results
            if r.familiar and r.label == "SEVERE ANOMALY" and parse_name(r.file).label == "normal"
        ]
        print(f"{title}: {len(wrong)} healthy clips labelled SEVERE ANOMALY while familiar")
        for r in wrong:
            print(f"  {r.file}\t{r.score:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
