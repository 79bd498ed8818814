"""The `adaptrl` command line.

    adaptrl envs [--json]
    adaptrl bench sampler FAMILY [--tasks 40 --episodes 20] [--json]
    adaptrl normalizer cheetah-highdim [--episodes 100 --seed 0] [--out PATH]

Mistakes in names or arguments print one line that lists the valid choices, and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import AdaptrlError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the valid choices, not a usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def configure_threads() -> int:
    """Torch's intra-op threads, set deliberately: one per core (``ADAPTRL_TORCH_THREADS``
    overrides). MuJoCo's rollout threads and torch never run at the same moment in the sampler,
    so they share the cores instead of oversubscribing them."""
    import torch

    n = int(os.environ.get("ADAPTRL_TORCH_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _family_arg(text: str) -> str:
    from .tasks import get_family

    try:
        return get_family(text).name
    except AdaptrlError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="adaptrl", description="Meta-reinforcement learning: adaptrl.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    envs = sub.add_parser("envs", help="list the task families")
    envs.add_argument("--json", action="store_true", help="print a JSON list instead of a table")

    bench = sub.add_parser("bench", help="speed benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK",
                                     parser_class=_Parser)
    sampler = bench_sub.add_parser("sampler", help="sampler env-steps/s vs a raw mj_step loop")
    sampler.add_argument("family", type=_family_arg, metavar="FAMILY")
    sampler.add_argument("--tasks", type=_positive_int, default=40, help="tasks T (40)")
    sampler.add_argument("--episodes", type=_positive_int, default=20,
                         help="episodes per task N (20)")
    sampler.add_argument("--horizon", type=_positive_int, default=None,
                         help="steps per episode (the family's horizon)")
    sampler.add_argument("--hidden", default="100,100", help="policy hidden sizes (100,100)")
    sampler.add_argument("--repeats", type=_positive_int, default=1, help="batches timed (1)")
    sampler.add_argument("--threads", type=_positive_int, default=None,
                         help="MuJoCo rollout threads (one per core)")
    sampler.add_argument("--seed", type=int, default=0)
    sampler.add_argument("--json", action="store_true", help="print JSON")

    norm = sub.add_parser("normalizer",
                          help="recompute the state normalizer shipped for cheetah-highdim")
    norm.add_argument("family", choices=["cheetah-highdim"], metavar="FAMILY")
    norm.add_argument("--episodes", type=_positive_int, default=100)
    norm.add_argument("--seed", type=int, default=0)
    norm.add_argument("--out", default=None, help="file to write (the packaged file)")
    return parser


def cmd_envs(args) -> int:
    from .tasks import REGISTRY

    rows = [f.describe() for f in REGISTRY.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from .tasks.base import _box_str

    table = [("name", "gym id", "Ψ", "H", "obs", "act", "splits", "source")]
    for f, r in zip(REGISTRY.values(), rows):
        if f.discrete is not None:
            psi = "{" + ",".join(f"{v[0]:g}" for v in f.discrete) + "}"
        else:
            psi = _box_str(f.low, f.high)
        table.append((r["name"], r["gym_id"], psi, str(r["horizon"]), str(r["obs_dim"]),
                      str(r["act_dim"]), ",".join(r["splits"]), r["source"]))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for j, row in enumerate(table):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        if j == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return 0


def cmd_bench(args) -> int:
    from .bench.sampler import bench_sampler, format_result

    try:
        hidden = tuple(int(h) for h in args.hidden.split(","))
        if not hidden or min(hidden) < 1:
            raise ValueError
    except ValueError:
        raise AdaptrlError(f"--hidden takes positive sizes like 64,64; got '{args.hidden}'")
    configure_threads()
    result = bench_sampler(args.family, tasks=args.tasks, episodes=args.episodes,
                           horizon=args.horizon, hidden=hidden, repeats=args.repeats,
                           seed=args.seed, threads=args.threads)
    print(json.dumps(result, indent=1) if args.json else format_result(result))
    return 0


def cmd_normalizer(args) -> int:
    from .envs.normalizer import DEFAULT_PATH, write_highdim_normalizer

    path = args.out or DEFAULT_PATH
    data = write_highdim_normalizer(path, episodes=args.episodes, seed=args.seed)
    print(f"wrote {path}: mean/std of {data['states']:,} random-policy states")
    return 0


COMMANDS = {"envs": cmd_envs, "bench": cmd_bench, "normalizer": cmd_normalizer}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except AdaptrlError as err:
        print(f"adaptrl: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
