"""Atomic, versioned checkpoints that plain ``torch.load(path, weights_only=True)`` opens and that
fail loudly when truncated, corrupt or foreign.

File layout (format version 2): an ordinary ``torch.save`` archive (a zip file) of one dict::

    {"__adaptrl__": {"format": "adaptrl-checkpoint", "format_version": 2,
                     "library_version": "0.1.0", "sha256": "<64 hex digits>"},
     ...the payload's own entries (the runner's: "algo", "iteration", "algorithm", ...)}

A payload holds only what the safe unpickler of ``torch.load(weights_only=True)`` accepts:
tensors, None, bool, int, float, str, and dicts / lists / tuples of them. Saving anything else
(a NumPy array or scalar, an object) is a TypeError naming its place in the payload, so every
method's state converts its arrays with ``torch.from_numpy`` and its counters to Python ints.

The checksum (``sha256``) is taken over the payload's values, not over the file's bytes:
`payload_digest` walks the payload in order and hashes a type tag and the value of each entry
(dict keys in order, tensors by dtype, shape and raw bytes, floats exactly by ``float.hex``).
It is recomputed on the values read back, so it detects a corrupt archive member whatever
zip/pickle bytes torch wrote; a truncated file has no zip end record and is refused before
anything is unpickled. The checksum detects accidents, not tampering.

Loading refuses, each with one `AdaptrlError` naming the file: a missing, empty or truncated
file; a file that is not a torch archive, or a torch archive without the ``__adaptrl__`` header
(a foreign ``torch.save`` file); a newer format version; contents that do not match the
checksum. Format version 1 files (a magic line and a JSON header in front of a pickled payload,
written by adaptrl 0.1.0 before this format) are still read, after their SHA-256 check, with
``weights_only=False``: load only version-1 checkpoints you trust.

Writes go to a temporary file in the same folder, are flushed and fsync'ed, then renamed over
the target with ``os.replace``; a crash at any moment leaves either the old file or the new one.

A run folder keeps the last few numbered ``checkpoints/iter_000010.pt`` and
``checkpoints/latest.pt``, a hard link to the newest of them (a copy where the file system has
no hard links); see `write_run_checkpoint`.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from . import __version__
from .atomic import atomic_link, atomic_write_bytes
from .errors import AdaptrlError

FORMAT_NAME = "adaptrl-checkpoint"
FORMAT_VERSION = 2
HEADER_KEY = "__adaptrl__"
ZIP_MAGIC = b"PK\x03\x04"
V1_MAGIC = FORMAT_NAME.encode() + b"\n"  # format version 1: the file's first line
_MAX_HEADER_BYTES = 64 * 1024

LATEST_NAME = "latest.pt"
KEEP_NUMBERED = 3
_NUMBERED = re.compile(r"^iter_(\d+)\.pt$")


# ─── the checksum over a payload's values ───────────────────────────────────────────────────
def payload_digest(payload: dict) -> str:
    """SHA-256 (hex) of the payload's values (see the module docstring). A TypeError names the
    first entry that ``torch.load(weights_only=True)`` could not read back."""
    digest = hashlib.sha256()
    _feed(digest, payload, "payload")
    return digest.hexdigest()


def _feed(digest, value, where: str) -> None:
    kind = type(value)
    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_quantized:
            raise TypeError(f"checkpoint entry {where} is a {value.layout} tensor; checkpoints "
                            f"hold dense tensors")
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"T{str(value.dtype)}{tuple(value.shape)}:".encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif value is None:
        digest.update(b"N;")
    elif kind is bool:
        digest.update(b"B1;" if value else b"B0;")
    elif kind is int:
        digest.update(f"I{value};".encode())
    elif kind is float:
        digest.update(f"F{value.hex()};".encode())
    elif kind is str:
        data = value.encode("utf-8", "surrogatepass")
        digest.update(f"S{len(data)}:".encode() + data)
    elif kind in (dict, OrderedDict):
        digest.update(f"D{len(value)}:".encode())
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"checkpoint entry {where} has a key of type "
                                f"{type(key).__name__}; keys are str or int")
            _feed(digest, key, where)
            _feed(digest, item, f"{where}[{key!r}]")
    elif kind in (list, tuple, torch.Size):
        digest.update(f"{'L' if kind is list else 'U'}{len(value)}:".encode())
        for i, item in enumerate(value):
            _feed(digest, item, f"{where}[{i}]")
    else:
        name = f"{kind.__module__}.{kind.__qualname__}"
        hint = (" (convert it with torch.from_numpy(...), or .item() / .tolist())"
                if kind.__module__ == "numpy" else "")
        raise TypeError(f"checkpoint entry {where} is a {name}{hint}; checkpoints hold tensors, "
                        f"None, bool, int, float, str and dicts/lists/tuples of them, so that "
                        f"torch.load(weights_only=True) opens them")


# ─── one checkpoint file ────────────────────────────────────────────────────────────────────
def encode_checkpoint(payload: dict) -> bytes:
    """The bytes of a checkpoint file holding ``payload``."""
    if not isinstance(payload, dict):
        raise TypeError(f"a checkpoint payload is a dict, got {type(payload).__name__}")
    if HEADER_KEY in payload:
        raise ValueError(f"a checkpoint payload cannot use the key {HEADER_KEY!r}")
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "library_version": __version__, "sha256": payload_digest(payload)}
    buffer = io.BytesIO()
    torch.save({HEADER_KEY: header, **payload}, buffer)
    return buffer.getvalue()


def save_checkpoint(path, payload: dict) -> None:
    """Write ``payload`` (a dict of tensors and plain values) atomically to ``path``."""
    atomic_write_bytes(path, encode_checkpoint(payload))


def read_header(path) -> dict:
    """The header of the checkpoint at ``path`` (format, format_version, library_version,
    sha256), after the checks that need no payload values (tensor data is memory-mapped, not
    read, and the checksum is not verified)."""
    path = Path(path)
    if _first_bytes(path, len(V1_MAGIC)) == V1_MAGIC:
        with _open(path) as handle:
            return _read_v1_header(handle, path)
    return _split_header(_load_archive(path, "cpu", mmap=True), path)[0]


def load_checkpoint(path, map_location="cpu") -> dict:
    """The payload saved at ``path`` (without the header). An `AdaptrlError` naming the file and
    the problem if it is missing, empty, truncated, corrupt, not an adaptrl checkpoint, or of a
    newer format."""
    path = Path(path)
    if _first_bytes(path, len(V1_MAGIC)) == V1_MAGIC:
        return _load_v1(path, map_location)
    header, payload = _split_header(_load_archive(path, map_location), path)
    try:
        digest = payload_digest(payload)
    except TypeError:
        digest = None
    if digest != header["sha256"]:
        raise AdaptrlError(f"checkpoint {path} is corrupt: its contents do not match the "
                           f"checksum in its header")
    return payload


def _load_archive(path: Path, map_location, mmap: bool = False):
    """The object in the torch archive at ``path``, read with ``weights_only=True``."""
    start = _first_bytes(path, len(ZIP_MAGIC))
    if start != ZIP_MAGIC:
        if not start:
            raise AdaptrlError(f"checkpoint {path} is empty (the write was interrupted?)")
        if ZIP_MAGIC.startswith(start) or V1_MAGIC.startswith(start):
            raise AdaptrlError(f"checkpoint {path} is truncated: it ends after "
                               f"{len(start)} bytes")
        raise AdaptrlError(f"{path} is not an adaptrl checkpoint ({_guess_kind(start)})")
    try:
        with zipfile.ZipFile(path):  # finds the end record: absent if the file was cut short
            pass
    except (zipfile.BadZipFile, OSError):
        raise AdaptrlError(f"checkpoint {path} is truncated or corrupt: its zip archive has no "
                           f"complete end record (the write was interrupted or the copy is "
                           f"incomplete)") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # torch's message is a page of advice; its "WeightsUnpickler error:" line is the reason
        lines = [line for line in str(err).splitlines() if "WeightsUnpickler error" in line]
        reason = (lines[0].split("error:", 1)[1].split(" Please use")[0].strip()[:200]
                  if lines else "unsafe contents")
        raise AdaptrlError(f"{path} is not an adaptrl checkpoint of format version "
                           f"{FORMAT_VERSION} or is corrupt: torch.load(weights_only=True) "
                           f"refuses it ({reason})") from None
    except Exception as err:  # the zip reader's or unpickler's own errors on damaged members
        raise AdaptrlError(f"checkpoint {path} is corrupt: torch.load fails with "
                           f"{type(err).__name__}: {' '.join(str(err).split())[:200]}") from None


def _split_header(archive, path: Path) -> tuple[dict, dict]:
    """``(header, payload)`` of a loaded archive, the header checked."""
    header = archive.get(HEADER_KEY) if isinstance(archive, dict) else None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        kind = type(archive).__name__
        raise AdaptrlError(f"{path} is not an adaptrl checkpoint (a plain torch.save file "
                           f"holding a {kind} without the {HEADER_KEY!r} header)")
    version = header.get("format_version")
    if not isinstance(version, int) or not isinstance(header.get("sha256"), str):
        raise AdaptrlError(f"checkpoint {path} has a corrupt header")
    _check_version(version, header, path)
    payload = dict(archive)
    del payload[HEADER_KEY]
    return header, payload


def _check_version(version: int, header: dict, path: Path) -> None:
    if version > FORMAT_VERSION:
        raise AdaptrlError(
            f"checkpoint {path} has format version {version}, written by adaptrl "
            f"{header.get('library_version', '?')}; this adaptrl ({__version__}) reads format "
            f"version {FORMAT_VERSION} and older: upgrade adaptrl to load it")


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise AdaptrlError(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise AdaptrlError(f"checkpoint {path} is a folder, not a file") from None


def _first_bytes(path: Path, count: int) -> bytes:
    with _open(path) as handle:
        return handle.read(count)


def _guess_kind(start: bytes) -> str:
    if start[:1] == b"\x80":
        return "a plain pickle or legacy torch.save file"
    try:
        start.decode("utf-8")
    except UnicodeDecodeError:
        return "an unknown binary file"
    return "a text file"


# ─── format version 1 (read only) ───────────────────────────────────────────────────────────
def _load_v1(path: Path, map_location) -> dict:
    with _open(path) as handle:
        header = _read_v1_header(handle, path)
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


def _read_v1_header(handle, path: Path) -> dict:
    handle.read(len(V1_MAGIC))
    line = handle.readline(_MAX_HEADER_BYTES)
    if not line.endswith(b"\n"):
        raise AdaptrlError(f"checkpoint {path} is truncated inside its header")
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AdaptrlError(f"checkpoint {path} has a corrupt header") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME \
            or not isinstance(header.get("format_version"), int) \
            or not isinstance(header.get("payload_size"), int) \
            or not isinstance(header.get("sha256"), str):
        raise AdaptrlError(f"checkpoint {path} has a corrupt header")
    _check_version(header["format_version"], header, path)
    return header


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
    """Save ``payload`` atomically as ``folder/iter_<iteration>.pt``, point ``folder/latest.pt``
    at it (atomically: a hard link, or a copy where links are not supported), then delete
    numbered checkpoints beyond the newest ``keep`` (0: delete none; ``latest.pt`` keeps its
    data). Returns the path of ``latest.pt``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = encode_checkpoint(payload)
    numbered = folder / numbered_name(iteration)
    atomic_write_bytes(numbered, data)
    if not atomic_link(numbered, folder / LATEST_NAME):
        atomic_write_bytes(folder / LATEST_NAME, data)
    existing = numbered_checkpoints(folder)
    for _, path in existing[:max(0, len(existing) - keep)] if keep > 0 else ():
        path.unlink()
    return folder / LATEST_NAME
