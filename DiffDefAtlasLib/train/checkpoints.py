"""Resumable training: atomic checkpoints (``torch.save``, loaded with ``weights_only=True``) and loss logs.

A checkpoint is written to a temporary file and renamed, so a run killed mid-write leaves the previous checkpoint
intact; :func:`latest_checkpoint` returns the newest complete one.

Example:
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> _ = save_checkpoint(folder, "autoencoder", 10, {"w": torch.ones(2)})
    >>> latest_checkpoint(folder, "autoencoder")[0]
    10
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path, write_text_atomic

_PATTERN = re.compile(r"^(?P<stage>[a-z0-9_]+)_step(?P<step>\d{7})\.pt$")


def checkpoint_path(folder: str | Path, stage: str, step: int) -> Path:
    """``<folder>/<stage>_step0000100.pt``."""
    return Path(folder) / f"{stage}_step{int(step):07d}.pt"


def save_checkpoint(folder: str | Path, stage: str, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically; keep the ``keep`` newest checkpoints."""
    path = checkpoint_path(folder, stage, step)
    with atomic_path(path) as tmp:
        torch.save({"stage": stage, "step": int(step), **state}, tmp)
    for old in list_checkpoints(folder, stage)[:-keep]:
        old[1].unlink(missing_ok=True)
    return path


def list_checkpoints(folder: str | Path, stage: str) -> list[tuple[int, Path]]:
    """Complete checkpoints of ``stage``, oldest first (temporary ``.part`` files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _PATTERN.match(path.name)
        if match and match["stage"] == stage:
            found.append((int(match["step"]), path))
    return sorted(found)


def latest_checkpoint(folder: str | Path, stage: str) -> tuple[int, dict[str, Any]] | None:
    """``(step, state)`` of the newest readable checkpoint of ``stage``, or ``None``."""
    for step, path in reversed(list_checkpoints(folder, stage)):
        try:
            return step, torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # an unreadable file (disk trouble): fall back to the previous one
            continue
    return None


class LossLog:
    """Append-only CSV of ``step, loss terms...`` per stage, plus a JSON copy of the last entries."""

    def __init__(self, folder: str | Path, stage: str) -> None:
        self.path = Path(folder) / f"{stage}_losses.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run repeats them)."""
        if not self.path.is_file():
            return
        rows = self.rows()
        keep = [r for r in rows if int(float(r["step"])) <= step]
        if len(keep) != len(rows):
            self._write(keep)

    def rows(self) -> list[dict[str, str]]:
        """All logged rows."""
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as stream:
            return list(csv.DictReader(stream))

    def _write(self, rows: list[dict[str, Any]]) -> None:
        names: list[str] = []
        for row in rows:
            names.extend(k for k in row if k not in names)
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as stream:
                writer = csv.DictWriter(stream, fieldnames=names)
                writer.writeheader()
                writer.writerows(rows)

    def append(self, step: int, values: dict[str, float]) -> None:
        """Add one row. The file is rewritten atomically, so a run killed mid-write never leaves a torn row."""
        self._write(self.rows() + [{"step": step, **{k: f"{v:.6g}" for k, v in values.items()}}])

    def write_json(self, extra: dict[str, Any] | None = None) -> Path:
        """``<stage>_losses.json``: every row, plus ``extra``."""
        path = self.path.with_suffix(".json")
        write_text_atomic(path, json.dumps({"rows": self.rows(), **(extra or {})}, indent=1) + "\n")
        return path
