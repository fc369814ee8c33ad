"""Measure the repository as the ExtensionsIndex does, against its 100 MB limit.

The ExtensionsIndex check (``check_repository_size`` in ``scripts/check_description_files.py`` of
Slicer/ExtensionsIndex) clones the repository and adds up every file of the clone, ``.git`` included, in units of
1024 * 1024 bytes. This script estimates that figure from a local checkout:

- ``.git``: ``size-pack`` + ``size`` (loose objects) of ``git count-objects -v`` (the figures ``-vH`` prints, in
  exact KiB);
- the working tree: the files ``git ls-files`` lists, as they are on disk.

A fresh clone holds only the objects reachable from its refs, so a local ``.git`` with unreachable or loose objects
reads a little high: the estimate errs on the safe side. It also lists what the history holds: every blob reachable
from any ref (``git rev-list --objects --all`` with ``git cat-file --batch-check``) and the largest of them with
their paths, because a file removed from the tree still counts in ``.git``.

Usage::

    python scripts/repo_size.py                 # this repository, 100 MB limit
    python scripts/repo_size.py --repo PATH --limit-mb 80 --top 20

Exit status 0 within the limit, 1 over it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MB = 1024 * 1024  # the ExtensionsIndex's "MB"
DEFAULT_LIMIT_MB = 100.0


@dataclass(frozen=True)
class Blob:
    """One blob of the history: its id, uncompressed size in bytes and the first path it was seen at."""

    oid: str
    size: int
    path: str


@dataclass(frozen=True)
class RepoSize:
    """The figures, in bytes."""

    pack: int
    loose: int
    tree: int
    blobs: list[Blob]

    @property
    def git_dir(self) -> int:
        return self.pack + self.loose

    @property
    def total(self) -> int:
        return self.git_dir + self.tree


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    """Run one git command in ``repo`` and return its standard output."""
    result = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True, check=True)
    return result.stdout


def count_objects(repo: Path) -> tuple[int, int]:
    """(size-pack, loose size) in bytes, from ``git count-objects -v`` (which reports KiB)."""
    fields = dict(line.split(": ", 1) for line in git(repo, "count-objects", "-v").splitlines() if ": " in line)
    return int(fields["size-pack"]) * 1024, int(fields["size"]) * 1024


def tracked_tree_size(repo: Path) -> int:
    """Bytes of the tracked files as they are on disk (files deleted but not yet committed are skipped)."""
    top = Path(git(repo, "rev-parse", "--show-toplevel").strip())
    total = 0
    for name in git(repo, "ls-files", "-z").split("\0"):
        path = top / name
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def history_blobs(repo: Path) -> list[Blob]:
    """Every blob reachable from any ref, largest first, each with the first path ``rev-list`` names it by."""
    paths: dict[str, str] = {}
    for line in git(repo, "rev-list", "--objects", "--all").splitlines():
        oid, _, path = line.partition(" ")
        if path and oid not in paths:
            paths[oid] = path
    if not paths:
        return []
    listing = git(repo, "cat-file", "--batch-check=%(objecttype) %(objectname) %(objectsize)", stdin="\n".join(paths) + "\n")
    blobs = []
    for line in listing.splitlines():
        kind, oid, size = line.split()
        if kind == "blob":
            blobs.append(Blob(oid, int(size), paths[oid]))
    return sorted(blobs, key=lambda b: (-b.size, b.path))


def measure(repo: Path) -> RepoSize:
    pack, loose = count_objects(repo)
    return RepoSize(pack=pack, loose=loose, tree=tracked_tree_size(repo), blobs=history_blobs(repo))


def mb(size: int) -> str:
    return f"{size / MB:.2f} MB"


def report(size: RepoSize, limit_mb: float, top: int) -> list[str]:
    """The printed lines: one figure a line, ``label: value``."""
    largest = size.blobs[:top]
    lines = [
        f".git pack (size-pack): {mb(size.pack)}",
        f".git loose objects (size): {mb(size.loose)}",
        f"working tree (tracked files): {mb(size.tree)}",
        f"total (.git + working tree): {mb(size.total)} of the {limit_mb:g} MB limit ({100 * size.total / (limit_mb * MB):.1f} %)",
        f"blobs in history: {len(size.blobs)}, {mb(sum(b.size for b in size.blobs))} uncompressed",
        f"{len(largest)} largest blobs in history: {mb(sum(b.size for b in largest))} uncompressed",
    ]
    lines += [f"  {mb(b.size):>10}  {b.path}" for b in largest]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="a folder inside the repository (default: here)")
    parser.add_argument("--limit-mb", type=float, default=DEFAULT_LIMIT_MB, help="size limit in MB of 1024*1024 bytes (default 100)")
    parser.add_argument("--top", type=int, default=10, help="how many of the largest blobs to list (default 10)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = measure(args.repo)
    for line in report(size, args.limit_mb, args.top):
        print(line)
    if size.total > args.limit_mb * MB:
        print(f"OVER LIMIT: {mb(size.total)} > {args.limit_mb:g} MB")
        return 1
    print(f"within the limit: {mb(size.total)} <= {args.limit_mb:g} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
