"""`make demo`: meta-train every gradient method and baseline on point-nav, evaluate them on the
test split with 0–3 adaptation steps, and print one table (``python -m adaptrl.demo``).

Everything goes through the product surface (`adaptrl train`, `adaptrl eval`,
`adaptrl compare`), so the demo is also an end-to-end check. A second run reuses finished runs
(``--resume`` continues a run that stopped early, e.g. after Ctrl-C).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli import main as cli

METHODS = ("maml", "fomaml", "reptile", "pretrain", "oracle", "random")


def run_demo(out: Path, family: str = "point-nav", preset: str = "demo", methods=METHODS,
             seed: int = 0, eval_tasks: int = 40) -> int:
    start = time.perf_counter()
    runs = []
    for method in methods:
        run_dir = out / method
        resume = (run_dir / "checkpoints" / "latest.pt").exists()
        print(f"\n=== {method}: train on {family} (preset {preset})"
              + (" — resuming/reusing the existing run" if resume else ""), flush=True)
        args = ["train", method, family, "--preset", preset, "--seed", str(seed),
                "--out", str(run_dir)] + (["--resume"] if resume else [])
        if cli(args) != 0:
            return 1
        print(f"=== {method}: evaluate on the test split, 0–3 adaptation steps", flush=True)
        if cli(["eval", str(run_dir), "--split", "test", "--steps", "0,1,2,3",
                "--num-tasks", str(eval_tasks), "--seed", str(seed)]) != 0:
            return 1
        runs.append(str(run_dir))
    print("\n=== all methods: returns after 0–3 adaptation steps (test split)", flush=True)
    code = cli(["compare", *runs, "--split", "test", "--out", str(out / "compare-test")])
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    return code


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adaptrl.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="folder of the demo runs")
    parser.add_argument("--family", default="point-nav")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return run_demo(Path(args.out), args.family, args.preset,
                    [m for m in args.methods.split(",") if m], args.seed)


if __name__ == "__main__":
    sys.exit(main())
