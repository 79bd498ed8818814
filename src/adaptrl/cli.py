"""The `adaptrl` command line.

    adaptrl envs [--json]
    adaptrl bench sampler FAMILY [--tasks 40 --episodes 20] [--json]
    adaptrl bench meta-step FAMILY [--algos maml,fomaml,reptile] [--preset NAME] [--json]
    adaptrl normalizer cheetah-highdim [--episodes 100 --seed 0] [--out PATH]
    adaptrl train ALGO FAMILY [--preset NAME] [--set key=value ...] [--seed N] [--out DIR]
                  [--resume] [--no-progress]
    adaptrl train ALGO --list-options [--preset NAME] [--set key=value ...]
    adaptrl eval RUN_DIR [--split test|grid|boundary|ood | --tasks FILE.json] [--steps 0,1,2,3]
                 [--episodes 20] [--seed 0] [--num-tasks 40] [--per-dim 6]
    adaptrl compare RUN_DIR... [--split test] [--out DIR]
    adaptrl oracle FAMILY [--split grid | --tasks FILE.json] [--per-dim 6] [--horizon H]
                   [--iterations 200 --episodes 10 --eval-episodes 20] [--cache DIR] [--force]
    adaptrl plot-tasks RUN_DIR... [--out FILE.png]
    adaptrl baselines FAMILY [--split test] [--trial-episodes n] [--episodes 20] [--seed 0]
                      [--num-tasks 40] [--only a,b] [--out DIR]

Mistakes in names or arguments print one line that lists the valid choices, and exit with 2.
`adaptrl` alone prints the commands, `adaptrl --version` the version; `python -m adaptrl` is the
same. The long commands (train, eval, compare, oracle, bench) report progress on stderr unless
--no-progress. Building the parser imports no torch, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import AdaptrlError
from .names import ALGORITHM_NAMES, FAMILY_NAMES

# Only light modules at the top: `adaptrl --help` must not import torch (each command imports
# what it needs).


def configure_threads() -> int:
    """`adaptrl.runner.configure_threads`, imported when a command starts computing."""
    from .runner import configure_threads as configure

    return configure()


NO_PROGRESS_HELP = ("no progress on stderr (shown as a bar on a terminal, as occasional lines "
                    "otherwise for train and oracle)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the valid choices, not a usage dump."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Help text wrapped between words only: names like ``cheetah-vel-hard`` stay whole."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _worker_counts(text: str) -> list[int]:
    return [_positive_int(part) for part in text.split(",")]


def _add_backend_args(parser, worker_list: bool = False) -> None:
    """--backend, --ray-address, --workers: where sampling runs (`adaptrl.sampling.make_sampler`;
    the local backend imports no Ray)."""
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="sampling backend: this process (local, the default) or Ray actors "
                             "(ray; pip install 'adaptrl[ray]')")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="a running Ray cluster for --backend ray (default: start a local "
                             "one)")
    if worker_list:
        parser.add_argument("--workers", type=_worker_counts, default=None, metavar="N[,N...]",
                            help="Ray worker counts to time, like 1,2 (--backend ray; 1,2)")
    else:
        parser.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                            help="Ray sampling workers, one CPU each (--backend ray; 2)")


def _sampler_from_args(args, family):
    """The sampler asked for by --backend/--workers/--ray-address."""
    from .sampling import make_sampler

    return make_sampler(family, args.backend, args.workers, args.ray_address)


def _refuse_sizes(command: str, memory: dict[str, int], work: tuple[str, int] | None = None
                  ) -> None:
    """One line before any work when the sizes asked for cannot fit this machine's memory
    (the largest part, the estimate, the memory) or would plan an absurd amount of work."""
    from .resources import memory_refusal, work_refusal

    reason = memory_refusal(memory) or (work_refusal(*work) if work else None)
    if reason is not None:
        raise AdaptrlError(f"{command}: {reason}")


def _check_output(path, what: str, folder: bool) -> None:
    """An `AdaptrlError` when ``path`` cannot be written as a file (or made a folder)."""
    from .atomic import output_problem

    if path is not None and (problem := output_problem(path, folder=folder)) is not None:
        raise AdaptrlError(f"{what} {path}: {problem}")


def _seed_arg(text: str) -> int:
    from .options import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed: an integer in [0, {MAX_SEED}], "
                                         f"got '{text}'")
    return value


def _grid_counts(text: str):
    """``6`` (every dimension) or ``4,4,3`` (one count per dimension) grid points."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or counts like 4,4,3, "
                                         f"got '{text}'") from None
    if min(counts) < 1:
        raise argparse.ArgumentTypeError(f"grid counts must be positive, got '{text}'")
    return counts[0] if len(counts) == 1 else tuple(counts)


def _family_arg(text: str) -> str:
    from .tasks import get_family

    try:
        return get_family(text).name
    except AdaptrlError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _algo_arg(text: str) -> str:
    from .algos import get_algorithm

    try:
        return get_algorithm(text).name
    except AdaptrlError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_train_parser(sub) -> None:
    """The `train` subcommand."""
    train = sub.add_parser(
        "train", help="meta-train a method on a task family in a run folder",
        description="Meta-train ALGO on FAMILY. The run folder holds config.yaml, metrics.csv, "
                    "TensorBoard events (tb/) and checkpoints/; `--resume` continues it exactly. "
                    "`adaptrl train ALGO --list-options` lists the config fields for --set.")
    train.add_argument("algo", type=_algo_arg, metavar="ALGO",
                       help="the method: " + ", ".join(ALGORITHM_NAMES))
    train.add_argument("family", type=_family_arg, metavar="FAMILY", nargs="?",
                       help="the task family (`adaptrl envs` describes them): "
                            + ", ".join(FAMILY_NAMES))
    train.add_argument("--preset", default=None,
                       help="a named preset of ALGO (see --list-options) or a .yaml file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       dest="overrides", help="override one config field (repeatable)")
    train.add_argument("--seed", type=_seed_arg, default=None,
                       help="run seed (0; when resuming, the run's own)")
    train.add_argument("--out", default=None,
                       help="run folder (runs/<algo>-<family>-s<seed>)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in the folder from its latest checkpoint; "
                            "--set iterations=N extends it")
    train.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    train.add_argument("--list-options", action="store_true",
                       help="print ALGO's config fields (with --preset/--set applied) and exit")
    _add_backend_args(train)


# = adaptrl.eval.SPLITS, spelled out so that building the parser does not import matplotlib
EVAL_SPLITS = ("test", "grid", "boundary", "ood")


def _steps_arg(text: str) -> list[int]:
    from .eval import parse_steps

    try:
        return parse_steps(text)
    except AdaptrlError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_eval_parsers(sub) -> None:
    """The `eval` and `compare` subcommands."""
    ev = sub.add_parser("eval", help="meta-test a run: adapt with each budget, roll out, "
                        "compare with the oracle; writes RUN_DIR/eval/<split>/")
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `adaptrl train`")
    which = ev.add_mutually_exclusive_group()
    which.add_argument("--split", choices=EVAL_SPLITS, default=None,
                       help="task set: test (default), grid over Ψ, boundary of Ψ, or ood")
    which.add_argument("--tasks", metavar="FILE.json", default=None,
                       help="evaluate on the tasks in a JSON list of lists (values may lie "
                            "outside Ψ); the split is named after the file")
    ev.add_argument("--steps", type=_steps_arg, default=None,
                    help="adaptation budgets, increasing (default: the method's own: 0,1,2,3 "
                         "steps or context rounds; for the model-based methods 0 and one to "
                         "three SLBO collections of real samples, 0,2000,4000,6000 with the "
                         "paper preset)")
    ev.add_argument("--episodes", type=_positive_int, default=20,
                    help="fresh episodes per task after adapting (20)")
    ev.add_argument("--seed", type=_seed_arg, default=0,
                    help="evaluation seed: the same seed gives every run the same tasks (0)")
    ev.add_argument("--num-tasks", type=_positive_int, default=40,
                    help="tasks for the test, boundary and ood splits (40)")
    ev.add_argument("--per-dim", type=_grid_counts, default=None,
                    help="grid points per parameter, or one count per parameter like 4,4,3 "
                         "(default: 6 for 1-D/2-D families, 4 for 3-D, ant-3d 4,4,3)")
    ev.add_argument("--video", action="store_true",
                    help="also write a GIF per budget of the adapted policy on the first 3 "
                         "tasks, side by side (RUN_DIR/eval/<split>/videos/n<budget>.gif; "
                         "headless MuJoCo renders with MUJOCO_GL=egl)")
    ev.add_argument("--checkpoint", type=_positive_int, default=None, metavar="ITERATION",
                    help="evaluate the numbered checkpoint of this iteration "
                         "(checkpoints/iter_<ITERATION>.pt; default: the latest; "
                         "`--set keep_checkpoints=0` at training keeps every one)")
    ev.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    _add_backend_args(ev)

    base = sub.add_parser("baselines", help="the classical baselines of a black-box family "
                          "(bandits, tabular MDPs) in trials; one eval.json per baseline")
    base.add_argument("family", type=_family_arg, metavar="FAMILY")
    base.add_argument("--split", choices=EVAL_SPLITS, default="test",
                      help="task set (test); the same --seed and --num-tasks as `adaptrl eval` "
                           "give the same tasks")
    base.add_argument("--trial-episodes", type=_positive_int, default=10,
                      help="episodes per trial: pulls for bandits, episodes of 10 steps for "
                           "tabular MDPs (10)")
    base.add_argument("--episodes", type=_positive_int, default=20,
                      help="trials per task (20)")
    base.add_argument("--seed", type=_seed_arg, default=0, help="evaluation seed (0)")
    base.add_argument("--num-tasks", type=_positive_int, default=40, help="tasks (40)")
    base.add_argument("--only", default=None,
                      help="a comma-separated subset of the baselines (default: all)")
    base.add_argument("--epsilon", type=float, default=0.1, help="ε of the ε-greedy baselines")
    base.add_argument("--ucb-c", type=float, default=0.2,
                      help="UCB1's exploration constant c (0.2; classic UCB1 is 1)")
    base.add_argument("--out", default=None,
                      help="folder of one sub-folder per baseline (runs/baselines-FAMILY)")

    cmp = sub.add_parser("compare", help="one table and one plot of several runs' evaluations")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp.add_argument("--split", default="test",
                     help="which evaluation to compare (test; a task file's name for --tasks)")
    cmp.add_argument("--out", default=None,
                     help="folder for compare.md and compare.png "
                          "(<common parent of the runs>/compare-<split>)")
    cmp.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="adaptrl",
        description="Meta-reinforcement learning: meta-train a method on a family of tasks, "
                    "then measure how well it adapts to new ones from a few samples.",
        epilog="`adaptrl COMMAND --help` describes one command. A first run: "
               "adaptrl train maml point-nav --preset demo; adaptrl eval runs/maml-point-nav-s0")
    parser.add_argument("--version", action="version", version=f"adaptrl {__version__}")
    # without a command, main() prints this help (the list of commands)
    sub = parser.add_subparsers(dest="command", required=False, metavar="COMMAND",
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
    sampler.add_argument("--seed", type=_seed_arg, default=0)
    sampler.add_argument("--recurrent", type=_positive_int, default=None, metavar="WIDTH",
                         help="also time a GRU policy of this width (RL²'s) on the same batches, "
                              "and RL²'s PPO update on them")
    sampler.add_argument("--trial-episodes", type=_positive_int, default=1, metavar="K",
                         help="episodes per trial (1); --episodes counts trials then")
    sampler.add_argument("--json", action="store_true", help="print JSON")
    sampler.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    _add_backend_args(sampler, worker_list=True)

    meta = bench_sub.add_parser("meta-step",
                                help="seconds per meta-iteration: sampling vs meta-update")
    meta.add_argument("family", type=_family_arg, metavar="FAMILY")
    meta.add_argument("--algos", type=_algo_list, default="maml,fomaml,reptile",
                      help="comma-separated methods (maml,fomaml,reptile)")
    meta.add_argument("--preset", default="locomotion", help="preset of every method (locomotion)")
    meta.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config field of every method (repeatable)")
    meta.add_argument("--iterations", type=_positive_int, default=1,
                      help="meta-iterations timed per method (1)")
    meta.add_argument("--seed", type=_seed_arg, default=0)
    meta.add_argument("--json", action="store_true", help="print JSON")
    meta.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)

    adapt = bench_sub.add_parser(
        "adapt", help="adaptation latency (median/p95 ms per task) and peak memory, same data")
    adapt.add_argument("family", type=_family_arg, metavar="FAMILY")
    adapt.add_argument("--algos", type=_algo_list, default="flap,pearl,maml",
                       help="comma-separated methods (flap,pearl,maml)")
    adapt.add_argument("--tasks", type=_positive_int, default=20, help="tasks (20)")
    adapt.add_argument("--episodes", type=_positive_int, default=1,
                       help="episodes of data per task, the same for every method (1)")
    adapt.add_argument("--horizon", type=_positive_int, default=None,
                       help="steps per episode (the family's horizon)")
    adapt.add_argument("--repeats", type=_positive_int, default=5,
                       help="timed adaptations of every task (5)")
    adapt.add_argument("--preset", default=None,
                       help="preset of the methods that have it (default: their defaults)")
    adapt.add_argument("--set", dest="overrides", action="append", default=[],
                       metavar="KEY=VALUE", help="override a config field of every method")
    adapt.add_argument("--seed", type=_seed_arg, default=0)
    adapt.add_argument("--json", action="store_true", help="print JSON")
    adapt.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)

    norm = sub.add_parser("normalizer",
                          help="recompute the state normalizer shipped for cheetah-highdim")
    norm.add_argument("family", choices=["cheetah-highdim"], metavar="FAMILY")
    norm.add_argument("--episodes", type=_positive_int, default=100)
    norm.add_argument("--seed", type=_seed_arg, default=0)
    norm.add_argument("--out", default=None, help="file to write (the packaged file)")
    _add_eval_parsers(sub)
    _add_train_parser(sub)
    _add_oracle_parsers(sub)
    _add_sweep_parser(sub)
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


def _algo_list(text: str) -> list[str]:
    from .algos import get_algorithm

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected methods like maml,fomaml,reptile")
    try:
        return [get_algorithm(n).name for n in names]
    except AdaptrlError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def cmd_bench(args) -> int:
    if args.bench == "adapt":
        from .bench.adapt import bench_adapt, format_adapt

        algos = args.algos if isinstance(args.algos, list) else _algo_list(args.algos)
        _refuse_bench_sizes(args, len(algos) * args.repeats)
        configure_threads()
        result = bench_adapt(args.family, algos, args.tasks, args.episodes, args.horizon,
                             args.repeats, args.preset, args.overrides, args.seed,
                             progress=not args.no_progress)
        print(json.dumps(result, indent=1) if args.json else format_adapt(result))
        return 0
    if args.bench == "meta-step":
        from .bench.meta_step import bench_meta_step, format_meta_step

        algos = args.algos if isinstance(args.algos, list) else _algo_list(args.algos)
        _refuse_meta_step_sizes(args, algos)
        configure_threads()
        result = bench_meta_step(args.family, algos, args.preset, args.overrides,
                                 args.iterations, args.seed, progress=not args.no_progress)
        print(json.dumps(result, indent=1) if args.json else format_meta_step(result))
        return 0

    from .bench.sampler import bench_sampler, format_result

    try:
        hidden = tuple(int(h) for h in args.hidden.split(","))
        if not hidden or min(hidden) < 1:
            raise ValueError
    except ValueError:
        raise AdaptrlError(f"--hidden takes positive sizes like 64,64; got '{args.hidden}'") \
            from None
    _refuse_bench_sizes(args, args.repeats, hidden)
    configure_threads()
    if args.backend == "ray":
        from .bench.sampler import bench_ray_sampler, format_ray_result

        if args.recurrent or args.trial_episodes > 1 or args.threads:
            raise AdaptrlError("bench sampler --backend ray times memoryless policies in plain "
                               "episodes: drop --recurrent, --trial-episodes and --threads")
        from .sampling.backends import ray_backend

        ray_backend()  # refuses a missing Ray before any work
        result = bench_ray_sampler(args.family, args.workers or [1, 2], tasks=args.tasks,
                                   episodes=args.episodes, horizon=args.horizon, hidden=hidden,
                                   repeats=args.repeats, seed=args.seed,
                                   address=args.ray_address, progress=not args.no_progress)
        print(json.dumps(result, indent=1) if args.json else format_ray_result(result))
        return 0
    _sampler_from_args(args, args.family)  # --workers/--ray-address without --backend ray
    result = bench_sampler(args.family, tasks=args.tasks, episodes=args.episodes,
                           horizon=args.horizon, hidden=hidden, repeats=args.repeats,
                           seed=args.seed, threads=args.threads,
                           recurrent=args.recurrent or 0, progress=not args.no_progress,
                           trial_episodes=args.trial_episodes)
    print(json.dumps(result, indent=1) if args.json else format_result(result))
    return 0


def _refuse_bench_sizes(args, batches: int, hidden=()) -> None:
    """bench sampler / adapt: one batch of --tasks × --episodes × --horizon steps."""
    from .resources import episode_bytes, mlp_parameters
    from .tasks import get_family

    family = get_family(args.family)
    T, N, H = args.tasks, args.episodes, args.horizon or family.horizon
    sizes = f"--tasks {T} × --episodes {N} × horizon {H} steps"
    memory = {sizes: episode_bytes(T, N, H, family.obs_dim, family.act_dim)}
    if hidden:
        memory[f"--hidden {','.join(map(str, hidden))}"] = 4 * mlp_parameters(
            family.obs_dim, hidden, 2 * family.act_dim)
    _refuse_sizes(f"bench {args.bench}", memory, (f"{batches} batches of {sizes}",
                                                  batches * T * N * H))


def _refuse_meta_step_sizes(args, algos) -> None:
    """bench meta-step: each method's memory estimate, and --iterations of its batches."""
    from .algos import get_algorithm
    from .config import make_config
    from .tasks import get_family

    family = get_family(args.family)
    for name in algos:
        algo_cls = get_algorithm(name)
        config = make_config(algo_cls, args.preset, args.overrides)  # as bench_meta_step
        H = config.horizon or family.horizon
        _refuse_sizes(f"bench meta-step {name}", algo_cls.memory_estimate(config, family),
                      (f"--iterations {args.iterations} of {config.meta_batch}×"
                       f"{config.fast_batch}×{H} steps",
                       args.iterations * config.meta_batch * config.fast_batch * H))


def cmd_normalizer(args) -> int:
    from .envs.normalizer import DEFAULT_PATH, write_highdim_normalizer
    from .resources import episode_bytes
    from .tasks import get_family

    path = args.out or DEFAULT_PATH
    _check_output(path, "--out", folder=False)
    family = get_family(args.family)
    sizes = f"--episodes {args.episodes} × horizon {family.horizon} steps"
    _refuse_sizes("normalizer", {sizes: episode_bytes(1, args.episodes, family.horizon,
                                                      family.obs_dim, family.act_dim)},
                  (sizes, args.episodes * family.horizon))
    data = write_highdim_normalizer(path, episodes=args.episodes, seed=args.seed)
    print(f"wrote {path}: mean/std of {data['states']:,} random-policy states")
    return 0


def cmd_eval(args) -> int:
    from pathlib import Path

    from .runner import load_run, read_run_record, run_checkpoint

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise AdaptrlError(f"run folder {run_dir} does not exist")
    record = read_run_record(run_dir)
    checkpoint = (None if args.checkpoint is None
                  else run_checkpoint(run_dir, args.checkpoint))
    sampler = _sampler_from_args(args, record["family"])
    try:
        return _evaluate_run(args, run_dir, *load_run(run_dir, checkpoint, sampler=sampler))
    finally:
        sampler.close()


def _evaluate_run(args, run_dir, algo, _config, info) -> int:
    import numpy as np

    from .eval import (
        eval_dir,
        evaluate,
        format_table,
        load_task_file,
        split_name_for_file,
        tasks_for_split,
        write_eval_json,
        write_reports,
    )

    family = algo.family
    # tasks and evaluation draw from separate streams of one seed: every run evaluated with
    # the same seed sees the same tasks, whatever its method consumes
    task_seed, eval_seed = np.random.SeedSequence(args.seed).spawn(2)
    steps = args.steps if args.steps is not None else list(algo.default_budgets)
    if args.tasks is None and args.split != "grid":
        _refuse_eval_sizes(algo, args.num_tasks, args.episodes, steps)
    if args.tasks is not None:
        tasks, split = load_task_file(family, args.tasks), split_name_for_file(args.tasks)
    else:
        split = args.split or "test"
        tasks = tasks_for_split(family, split, args.num_tasks, np.random.default_rng(task_seed),
                                per_dim=args.per_dim)
    _refuse_eval_sizes(algo, len(tasks), args.episodes, steps)
    _check_output(eval_dir(run_dir, split), "evaluation folder", folder=True)
    configure_threads()
    result = evaluate(algo, family, tasks, steps, args.episodes,
                      np.random.default_rng(eval_seed), split=split, seed=args.seed,
                      progress=not args.no_progress)
    result["run"] = {"dir": str(run_dir), "seed": info["seed"],
                     "iteration": info["iteration"], "checkpoint": str(info["checkpoint"])}
    out = eval_dir(run_dir, split)
    paths = {"eval": write_eval_json(result, out / "eval.json"), **write_reports(result, out)}
    if args.video:  # a third stream of the seed: the evaluation's numbers stay the same
        from .eval import write_videos

        video_seed = np.random.SeedSequence(args.seed).spawn(3)[2]
        paths.update(write_videos(algo, family, tasks, steps, np.random.default_rng(video_seed),
                                  out))
    print(format_table(result))
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _refuse_eval_sizes(algo, num_tasks: int, episodes: int, budgets) -> None:
    """eval: the fresh episodes after adapting, and the adaptation to the largest budget."""
    from .resources import episode_bytes

    family, H = algo.family, algo.horizon
    per_budget = (1 if algo.budget_unit == "real samples"  # budgets count samples
                  else H * episodes if algo.budget_unit == "episodes in the trial"
                  else H * algo.config.fast_batch)  # steps or rounds of fast_batch episodes
    sizes = f"{num_tasks} tasks × --episodes {episodes} × horizon {H} steps"
    largest = max(budgets, default=0)
    _refuse_sizes("eval", {sizes: episode_bytes(num_tasks, episodes, H, family.obs_dim,
                                                family.act_dim)},
                  (f"adapting {num_tasks} tasks to budget {largest} ({algo.budget_unit})",
                   num_tasks * (episodes * H + largest * per_budget)))


def cmd_baselines(args) -> int:
    from pathlib import Path

    import numpy as np

    from .eval import eval_dir, format_table, tasks_for_split, write_eval_json, write_reports
    from .eval.baselines import classical_baselines, evaluate_in_trials
    from .tasks import get_family

    family = get_family(args.family)
    if not (0.0 <= args.epsilon <= 1.0) or not args.ucb_c >= 0.0:
        raise AdaptrlError("--epsilon must be in [0, 1] and --ucb-c ≥ 0")
    from .resources import episode_bytes

    T, N, L = args.num_tasks, args.episodes, args.trial_episodes * family.horizon
    sizes = f"--num-tasks {T} × --episodes {N} × --trial-episodes {args.trial_episodes} steps"
    _refuse_sizes("baselines", {sizes: episode_bytes(T, N, L, family.obs_dim, family.act_dim)},
                  (sizes, T * N * L))
    out = Path(args.out) if args.out else Path("runs") / f"baselines-{family.name}"
    _check_output(out, "--out", folder=True)
    task_seed, eval_seed = np.random.SeedSequence(args.seed).spawn(2)  # as `adaptrl eval`
    tasks = tasks_for_split(family, args.split, args.num_tasks, np.random.default_rng(task_seed))
    baselines = classical_baselines(family, args.trial_episodes, args.epsilon, args.ucb_c,
                                    tasks=tasks)
    if args.only:
        chosen = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in baselines]
        if unknown or not chosen:
            raise AdaptrlError(f"unknown baseline(s) {', '.join(unknown) or '(none given)'} for "
                               f"'{family.name}'; known: {', '.join(baselines)}")
        baselines = {name: baselines[name] for name in chosen}
    configure_threads()
    for name, policy in baselines.items():
        result = evaluate_in_trials(policy, name, family, tasks, args.trial_episodes,
                                    args.episodes, np.random.default_rng(eval_seed),
                                    split=args.split, seed=args.seed)
        folder = eval_dir(out / name, args.split)
        paths = {"eval": write_eval_json(result, folder / "eval.json"),
                 **write_reports(result, folder)}
        print(format_table(result))
        for path in paths.values():
            print(f"wrote {path}")
    return 0


def cmd_train(args) -> int:
    from .config import describe_options, make_config
    from .runner import train

    if args.list_options:
        print(describe_options(args.algo, make_config(args.algo, args.preset, args.overrides)))
        return 0
    if args.family is None:
        from .tasks import family_names

        raise AdaptrlError(f"train needs a FAMILY after {args.algo}; known: "
                           f"{', '.join(sorted(family_names()))}")
    configure_threads()
    sampler = _sampler_from_args(args, args.family)
    try:
        run_dir = train(args.algo, args.family, preset=args.preset, overrides=args.overrides,
                        seed=args.seed, out=args.out, resume=args.resume,
                        progress=not args.no_progress, sampler=sampler)
    except KeyboardInterrupt:
        print("adaptrl: interrupted; continue from the last checkpoint with --resume",
              file=sys.stderr)
        return 130
    finally:
        sampler.close()
    print(f"run folder: {run_dir}")
    return 0


def cmd_compare(args) -> int:
    from .eval import write_compare

    _check_output(args.out, "--out", folder=True)
    table, paths = write_compare(args.run_dirs, args.split, args.out,
                                 progress=not args.no_progress)
    print(table)
    for path in paths.values():
        print(f"wrote {path}")
    return 0


def _add_sweep_parser(sub) -> None:
    sweep = sub.add_parser(
        "sweep", help="train and evaluate every combination of methods × families × presets "
                      "× seeds (on Ray, or local processes), then compare them over seeds",
        description="One run per combination, each `adaptrl train` then `adaptrl eval` with its "
                    "threads pinned to --cpus-per-run; then one `adaptrl compare` per family "
                    "aggregated over seeds. Run the same command again to continue a killed "
                    "sweep: finished runs are skipped, interrupted ones resume, failed ones are "
                    "retried.")
    sweep.add_argument("--algos", required=True, metavar="A,B", help="methods, like maml,fomaml")
    sweep.add_argument("--families", required=True, metavar="F,G",
                       help="task families, like point-nav,cheetah-vel")
    sweep.add_argument("--presets", default=None, metavar="P,Q",
                       help="presets, each run with every method (default: the methods' "
                            "defaults)")
    sweep.add_argument("--seeds", default="0", metavar="SEEDS", help="like 0-4 or 0,3,7 (0)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field in every run (repeatable)")
    sweep.add_argument("--out", default="runs/sweep",
                       help="the sweep folder (runs/sweep); the same --out continues a sweep")
    sweep.add_argument("--backend", choices=("ray", "local"), default=None,
                       help="ray: one Ray task per run (the default when Ray is installed); "
                            "local: child processes of this one")
    sweep.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="a running Ray cluster (default: start a local one)")
    sweep.add_argument("--jobs", type=_positive_int, default=None,
                       help="runs at once with --backend local (cores / --cpus-per-run)")
    sweep.add_argument("--cpus-per-run", type=_positive_int, default=1,
                       help="CPUs each run asks for; its torch/MuJoCo threads are pinned to "
                            "it (1)")
    sweep.add_argument("--eval-split", choices=EVAL_SPLITS, default="test",
                       help="the split each run is evaluated on (test)")
    sweep.add_argument("--eval-tasks", type=_positive_int, default=40,
                       help="evaluation tasks (40)")
    sweep.add_argument("--eval-episodes", type=_positive_int, default=20,
                       help="evaluation episodes per task and budget (20)")
    sweep.add_argument("--eval-seed", type=_seed_arg, default=0, help="evaluation seed (0)")
    sweep.add_argument("--eval-steps", type=_steps_arg, default=None,
                       help="budgets, like 0,1,2,3 (each method's default)")
    sweep.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def cmd_sweep(args) -> int:
    import importlib.util

    from .sweep import SweepSpec, parse_list, parse_seeds, run_sweep

    backend = args.backend
    if backend is None:
        backend = "ray" if importlib.util.find_spec("ray") is not None else "local"
        if backend == "local":
            if args.ray_address is not None:
                raise AdaptrlError("--ray-address needs Ray, which is not installed: "
                                   "pip install 'adaptrl[ray]'")
            print("adaptrl: Ray is not installed (pip install 'adaptrl[ray]'): the sweep runs "
                  "as local processes", file=sys.stderr)
    if args.jobs is not None and backend != "local":
        raise AdaptrlError("--jobs is for --backend local (add --backend local); on Ray, "
                           "--cpus-per-run sets how many runs fit")
    presets = parse_list(args.presets, "--presets") if args.presets else [None]
    spec = SweepSpec(algos=parse_list(args.algos, "--algos"),
                     families=parse_list(args.families, "--families"), presets=presets,
                     seeds=parse_seeds(args.seeds), overrides=list(args.set),
                     eval_split=args.eval_split, eval_tasks=args.eval_tasks,
                     eval_episodes=args.eval_episodes, eval_seed=args.eval_seed,
                     eval_steps=args.eval_steps, cpus_per_run=args.cpus_per_run)
    _check_output(args.out, "--out", folder=True)
    return run_sweep(spec, args.out, backend=backend, address=args.ray_address, jobs=args.jobs,
                     progress=not args.no_progress)


def _hidden_arg(text: str) -> list[int]:
    try:
        sizes = [int(h) for h in text.split(",")]
        if not sizes or min(sizes) < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 64,64, got '{text}'"
                                         ) from None
    return sizes


def _add_oracle_parsers(sub) -> None:
    """The `oracle` and `plot-tasks` subcommands."""
    orc = sub.add_parser(
        "oracle", help="train and cache A*(ψ) (one TRPO policy per task) for a task set, so "
                       "that `adaptrl eval` reports gaps on families without an analytic oracle",
        description="Train one policy per task of the split by TRPO on the real environment and "
                    "cache A*(ψ) under $ADAPTRL_ORACLE_CACHE (~/.cache/adaptrl/oracles). "
                    "`adaptrl eval` uses it only for exactly these tasks and this horizon; it "
                    "never trains. An entry with the same settings is reused unless --force.")
    orc.add_argument("family", type=_family_arg, metavar="FAMILY")
    which = orc.add_mutually_exclusive_group()
    which.add_argument("--split", choices=EVAL_SPLITS, default=None,
                       help="task set, as in `adaptrl eval` (grid)")
    which.add_argument("--tasks", metavar="FILE.json", default=None,
                       help="the tasks in a JSON list of lists")
    orc.add_argument("--per-dim", type=_grid_counts, default=None,
                     help="grid points per parameter, or one count per parameter like 4,4,3 "
                         "(default: 6 for 1-D/2-D families, 4 for 3-D, ant-3d 4,4,3)")
    orc.add_argument("--num-tasks", type=_positive_int, default=40,
                     help="tasks for the test, boundary and ood splits (40)")
    orc.add_argument("--seed", type=_seed_arg, default=0,
                     help="evaluation seed choosing the tasks, as `adaptrl eval --seed` (0)")
    orc.add_argument("--horizon", type=_positive_int, default=None,
                     help="episode length: the one the runs are evaluated with (the family's)")
    orc.add_argument("--iterations", type=_positive_int, default=None,
                     help="TRPO iterations per task (200)")
    orc.add_argument("--episodes", type=_positive_int, default=None,
                     help="episodes per task per iteration (10)")
    orc.add_argument("--eval-episodes", type=_positive_int, default=None,
                     help="fresh episodes per task measuring A*(ψ) (20)")
    orc.add_argument("--hidden", type=_hidden_arg, default=None,
                     help="policy hidden sizes (64,64)")
    orc.add_argument("--max-kl", type=float, default=None, help="TRPO trust region (0.01)")
    orc.add_argument("--train-seed", type=_seed_arg, default=None, help="training seed (0)")
    orc.add_argument("--cache", default=None,
                     help="cache folder ($ADAPTRL_ORACLE_CACHE, else ~/.cache/adaptrl/oracles)")
    orc.add_argument("--force", action="store_true",
                     help="train again even if an entry with these settings is cached")
    orc.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)

    plot = sub.add_parser("plot-tasks", help="plot the tasks visited during meta-training "
                          "(metrics.csv task/<param> columns), one panel per run")
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument("--out", default=None,
                      help="PNG file (<common parent of the runs>/visited_tasks.png)")


def cmd_oracle(args) -> int:
    import dataclasses
    from pathlib import Path

    import numpy as np

    from .eval import load_task_file, tasks_for_split
    from .eval.trained_oracle import OracleCache, OracleTrainingConfig, build_oracle

    family = args.family
    _check_output(args.cache, "--cache", folder=True)
    if args.tasks is None and args.split not in (None, "grid"):
        _refuse_oracle_sizes(args, args.num_tasks)
    task_seed, _eval_seed = np.random.SeedSequence(args.seed).spawn(2)  # as `adaptrl eval`
    if args.tasks is not None:
        tasks = load_task_file(family, args.tasks)
    else:
        tasks = tasks_for_split(family, args.split or "grid", args.num_tasks,
                                np.random.default_rng(task_seed), per_dim=args.per_dim)
    given = {"iterations": args.iterations, "episodes": args.episodes,
             "eval_episodes": args.eval_episodes, "hidden_sizes": args.hidden,
             "max_kl": args.max_kl, "seed": args.train_seed}
    config = dataclasses.replace(OracleTrainingConfig(),
                                 **{k: v for k, v in given.items() if v is not None})
    _refuse_oracle_sizes(args, len(tasks), config)
    configure_threads()
    cache = OracleCache(args.cache)
    path, entry, trained = build_oracle(family, tasks, config, args.horizon, cache,
                                        force=args.force,
                                        log=None if args.no_progress else sys.stderr)
    returns = np.asarray(entry["returns"])
    names = entry["param_names"]
    print(f"{'trained' if trained else 'cached'} oracle for '{entry['family']}': "
          f"{len(returns)} tasks, horizon {entry['horizon']}, "
          f"{entry['samples_per_task']:,} samples per task"
          + (f", {entry['seconds']['total']:.0f}s" if trained else ""))
    print("| " + " | ".join(names) + " | A* | stochastic | mean action |")
    print("|" + "---:|" * (len(names) + 3))
    for row, a, s, d in zip(entry["tasks"], returns, entry["returns_stochastic"],
                            entry["returns_deterministic"]):
        print("| " + " | ".join(f"{v:.3g}" for v in row) + f" | {a:.2f} | {s:.2f} | {d:.2f} |")
    print(f"A* mean {returns.mean():.2f}, min {returns.min():.2f}, max {returns.max():.2f}")
    print(f"wrote {path}" if trained else f"using {path}")
    if args.cache is not None and Path(args.cache).expanduser().resolve() != \
            OracleCache().root.expanduser().resolve():
        print(f"note: `adaptrl eval` reads $ADAPTRL_ORACLE_CACHE; set "
              f"ADAPTRL_ORACLE_CACHE={args.cache} for it to find this oracle")
    return 0


def _refuse_oracle_sizes(args, num_tasks: int, config=None) -> None:
    """oracle: a batch of --episodes per task, and --iterations of them plus the measurement."""
    from .eval.trained_oracle import OracleTrainingConfig
    from .resources import episode_bytes
    from .tasks import get_family

    config = config or OracleTrainingConfig()
    family = get_family(args.family)
    H, N = args.horizon or family.horizon, args.episodes or config.episodes
    iterations = args.iterations or config.iterations
    sizes = f"{num_tasks} tasks × --episodes {N} × horizon {H} steps"
    _refuse_sizes("oracle", {sizes: episode_bytes(num_tasks, N, H, family.obs_dim,
                                                  family.act_dim)},
                  (f"--iterations {iterations} of {sizes}",
                   num_tasks * H * (iterations * N + (args.eval_episodes or 0))))


def cmd_plot_tasks(args) -> int:
    from pathlib import Path

    from .eval.gap_report import plot_visited_tasks, read_visited_tasks
    from .eval.report import default_compare_parent

    for run_dir in args.run_dirs:
        if not Path(run_dir).is_dir():
            raise AdaptrlError(f"run folder {run_dir} does not exist")
    out = Path(args.out) if args.out else (default_compare_parent(args.run_dirs)
                                           / "visited_tasks.png")
    _check_output(out, "--out", folder=False)
    for run_dir in args.run_dirs:
        run = read_visited_tasks(run_dir)
        path = " → ".join("(" + ", ".join(f"{v:.2f}" for v in row) + ")"
                          for row in run["tasks"])
        print(f"{run['algo']} ({Path(run_dir).name}): {len(run['tasks'])} tasks: {path}")
    print(f"wrote {plot_visited_tasks(args.run_dirs, out)}")
    return 0


COMMANDS = {"envs": cmd_envs, "bench": cmd_bench, "normalizer": cmd_normalizer, "eval": cmd_eval,
            "compare": cmd_compare, "train": cmd_train}
COMMANDS.update({"oracle": cmd_oracle, "plot-tasks": cmd_plot_tasks, "baselines": cmd_baselines,
                 "sweep": cmd_sweep})


def main(argv=None) -> int:
    from .sweep import die_with_parent

    die_with_parent()  # a sweep's child process ends with the sweep
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `adaptrl` alone: the list of commands
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except AdaptrlError as err:
        print(f"adaptrl: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file the user named cannot be read or written (permissions, ...)
        where = f" {err.filename}" if err.filename else ""
        print(f"adaptrl: error: cannot access{where}: {err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
