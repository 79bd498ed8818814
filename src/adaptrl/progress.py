"""Progress of the long commands (train, eval, compare, oracle, bench) on stderr.

A tqdm bar, shown only when it is wanted (``enabled``; the CLI's ``--no-progress`` turns it off)
and stderr is a terminal, so logs and pipes stay clean. A hidden bar takes the same calls.
"""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "it", initial: int = 0):
    """A tqdm bar of ``total`` steps on stderr (hidden unless ``enabled`` and stderr is a
    terminal); use it as a context manager or ``close()`` it."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                dynamic_ncols=True, disable=None if enabled else True)


def shows_plain_lines(enabled: bool) -> bool:
    """Whether progress should be occasional lines instead of a bar: wanted, but stderr is not
    a terminal (CI logs, ``| tee``)."""
    return enabled and not sys.stderr.isatty()
