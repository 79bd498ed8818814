"""Atomic, versioned checkpoints that fail loudly when truncated, corrupt or foreign.

File layout (format version 1)::

    adaptrl-checkpoint\\n                      the format name (a magic line)
    {"format": ..., "format_version": 1,      one line of JSON: the header
     "library_version": "0.1.0",
     "payload_size": N, "sha256": "..."}\\n
    <N bytes: torch.save(payload)>

The header is plain JSON so that a file is recognised (ours? which version? complete?) before
any of it is unpickled. The payload is a pickle (``torch.save``) and is loaded with
``weights_only=False`` because it holds NumPy RNG states and arbitrary method state; that is done
only after the magic line, the version and the SHA-256 of the payload bytes have been checked.
The checksum detects truncation and corruption, not tampering: as with any pickle, load only
checkpoints you trust.

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed over
the target with ``os.replace``; a crash at any moment leaves either the old file or the new one.

A run folder keeps ``checkpoints/latest.pt`` (the file resume reads) and the last few numbered
``checkpoints/iter_000010.pt`` (see `write_run_checkpoint`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import torch

from . import __version__
from .atomic import atomic_write_bytes
from .errors import AdaptrlError

FORMAT_NAME = "adaptrl-checkpoint"
FORMAT_VERSION = 1
MAGIC = FORMAT_NAME.encode() + b"\n"
_MAX_HEADER_BYTES = 64 * 1024

LATEST_NAME = "latest.pt"
KEEP_NUMBERED = 3
_NUMBERED = re.compile(r"^iter_(\d+)\.pt$")


# ─── one checkpoint file ────────────────────────────────────────────────────────────────────
def encode_checkpoint(payload: dict) -> bytes:
    """The bytes of a checkpoint file holding ``payload``."""
    if not isinstance(payload, dict):
        raise TypeError(f"a checkpoint payload is a dict, got {type(payload).__name__}")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "library_version": __version__, "payload_size": len(body),
              "sha256": hashlib.sha256(body).hexdigest()}
    return MAGIC + json.dumps(header).encode() + b"\n" + body


def save_checkpoint(path, payload: dict) -> None:
    """Write ``payload`` (a dict of tensors, arrays and plain values) atomically to ``path``."""
    atomic_write_bytes(path, encode_checkpoint(payload))


def read_header(path) -> dict:
    """The checked header of the checkpoint at ``path`` (the payload is not read)."""
    with _open(path) as handle:
        return _read_header(handle, Path(path))


def load_checkpoint(path, map_location="cpu") -> dict:
    """The payload saved at ``path``. An `AdaptrlError` naming the file and the problem if it
    is missing, empty, truncated, corrupt, not an adaptrl checkpoint, or of a newer format."""
    path = Path(path)
    with _open(path) as handle:
        header = _read_header(handle, path)
        body = handle.read()
    size = header["payload_size"]
    if len(body) < size:
        raise AdaptrlError(f"checkpoint {path} is truncated: {len(body):,} of {size:,} payload "
                           f"bytes (the write was interrupted or the copy is incomplete)")
    if len(body) > size or hashlib.sha256(body).hexdigest() != header["sha256"]:
        raise AdaptrlError(f"checkpoint {path} is corrupt: its payload does not match the "
                           f"checksum in its header")
    try:
        payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=False)
    except Exception as err:  # the bytes are ours, so this is a missing class or a version skew
        raise AdaptrlError(f"checkpoint {path} (written by adaptrl "
                           f"{header['library_version']}) cannot be unpickled: "
                           f"{type(err).__name__}: {err}") from err
    if not isinstance(payload, dict):
        raise AdaptrlError(f"checkpoint {path} holds a {type(payload).__name__}, not a dict")
    return payload


def _open(path):
    path = Path(path)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise AdaptrlError(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise AdaptrlError(f"checkpoint {path} is a folder, not a file") from None


def _read_header(handle, path: Path) -> dict:
    start = handle.read(len(MAGIC))
    if start != MAGIC:
        if not start:
            raise AdaptrlError(f"checkpoint {path} is empty (the write was interrupted?)")
        if MAGIC.startswith(start):
            raise AdaptrlError(f"checkpoint {path} is truncated inside its header")
        raise AdaptrlError(f"{path} is not an adaptrl checkpoint ({_guess_kind(start)})")
    line = handle.readline(_MAX_HEADER_BYTES)
    if not line.endswith(b"\n"):
        raise AdaptrlError(f"checkpoint {path} is truncated inside its header")
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AdaptrlError(f"checkpoint {path} has a corrupt header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise AdaptrlError(f"checkpoint {path} has a corrupt header")
    version = header.get("format_version")
    if not isinstance(version, int) or not isinstance(header.get("payload_size"), int) \
            or not isinstance(header.get("sha256"), str):
        raise AdaptrlError(f"checkpoint {path} has a corrupt header")
    if version > FORMAT_VERSION:
        raise AdaptrlError(
            f"checkpoint {path} has format version {version}, written by adaptrl "
            f"{header.get('library_version', '?')}; this adaptrl ({__version__}) reads format "
            f"version {FORMAT_VERSION} and older: upgrade adaptrl to load it")
    return header


def _guess_kind(start: bytes) -> str:
    if start.startswith(b"PK\x03\x04"):
        return "a plain torch.save/zip file"
    if start[:1] == b"\x80":
        return "a plain pickle or legacy torch.save file"
    try:
        start.decode("utf-8")
    except UnicodeDecodeError:
        return "an unknown binary file"
    return "a text file"


# ─── a run's checkpoint folder ──────────────────────────────────────────────────────────────
def numbered_name(iteration: int) -> str:
    return f"iter_{iteration:06d}.pt"


def numbered_checkpoints(folder) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the numbered checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
    return sorted(found)


def latest_checkpoint(folder) -> Path | None:
    """The checkpoint to resume from: ``latest.pt``, else the newest numbered one, else None."""
    folder = Path(folder)
    latest = folder / LATEST_NAME
    if latest.exists():
        return latest
    numbered = numbered_checkpoints(folder)
    return numbered[-1][1] if numbered else None


def write_run_checkpoint(folder, iteration: int, payload: dict, keep: int = KEEP_NUMBERED
                         ) -> Path:
    """Save ``payload`` as ``folder/iter_<iteration>.pt`` and ``folder/latest.pt`` (each
    atomically, the numbered one first), then delete numbered checkpoints beyond the newest
    ``keep``. Returns the path of ``latest.pt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = encode_checkpoint(payload)
    atomic_write_bytes(folder / numbered_name(iteration), data)
    atomic_write_bytes(folder / LATEST_NAME, data)
    numbered = numbered_checkpoints(folder)
    for _, path in numbered[:max(0, len(numbered) - keep)]:
        path.unlink()
    return folder / LATEST_NAME
