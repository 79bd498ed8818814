"""The meta-test protocol (one for all methods), oracle returns, reports and plots."""

from .oracles import (
    ORACLES,
    Oracle,
    get_oracle,
    greedy_point_action,
    oracle_returns,
    register_oracle,
)
from .protocol import (
    SPLITS,
    check_steps,
    default_per_dim,
    eval_dir,
    evaluate,
    load_task_file,
    parse_steps,
    read_eval_json,
    split_name_for_file,
    summarize,
    tasks_for_split,
    write_eval_json,
)
from .report import (
    format_compare_table,
    format_table,
    plot_curve,
    plot_gap_heatmap,
    write_compare,
    write_reports,
)
from .trained_oracle import (
    OracleCache,
    OracleTrainingConfig,
    build_oracle,
    train_oracle,
)
from .video import find_videos, write_videos

__all__ = [
    "ORACLES", "Oracle", "SPLITS", "check_steps", "default_per_dim", "eval_dir", "evaluate",
    "format_compare_table", "format_table", "get_oracle", "greedy_point_action",
    "load_task_file", "oracle_returns", "parse_steps", "plot_curve", "plot_gap_heatmap",
    "read_eval_json", "register_oracle", "split_name_for_file", "summarize", "tasks_for_split",
    "write_compare", "write_eval_json", "write_reports",
    "OracleCache", "OracleTrainingConfig", "build_oracle", "train_oracle",
    "find_videos", "write_videos",
]
