"""Atomic file writing: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _suffix(path: Path) -> str:
    """Full suffix such as ``.nii.gz`` (file formats are chosen by it)."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".gz") else path.suffix


def _create_temporary(path: Path) -> Path:
    """Create an empty, uniquely named temporary file beside ``path``.

    It is opened with mode 0o666 so that the user's umask applies, as for any file the user creates (``mkstemp``
    would make every output readable by its owner only).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part{_suffix(path)}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: cannot create a temporary file for {path.name}")


def _flush_to_disk(path: Path) -> None:
    """fsync a finished temporary file, so that after a power cut the renamed file holds its full content."""
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems do not support it
        pass
    finally:
        os.close(handle)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, on error it is removed.

    An interrupted run therefore never leaves a truncated file under the final name, and a previous file of that
    name stays intact until the new one is complete.

    Example:
        >>> with atomic_path("out.txt") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("done")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        yield tmp
        _flush_to_disk(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


#: Name pattern of the folder a result is built in, beside its target: ``.<target>.partial-<pid>``.
STAGING_MARK = ".partial-"


def _pid_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine (the owner of a staging folder)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove the staging folders of ``target`` left by runs that were killed (their process is gone)."""
    import shutil

    removed = []
    for candidate in target.parent.glob(f".{target.name}{STAGING_MARK}*"):
        pid_text = candidate.name.rsplit(STAGING_MARK, 1)[-1].split(".")[0]
        if candidate.is_dir() and pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stop at the first that is not (someone wrote there)."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break


@contextmanager
def staged_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty folder beside ``target`` to build a result in; on success it replaces ``target`` as a whole.

    The previous ``target`` (if any) stays untouched until the new folder is complete, so an interrupted run leaves
    either the old result or the new one, never a mix. On error the staging folder is removed, and so are the parent
    folders this call made (while empty); a staging folder left by a killed
    process is removed by the next run (:func:`remove_stale_staging`).

    Example:
        >>> with staged_folder("atlas70M") as tmp:  # doctest: +SKIP
        ...     (tmp / "summary.json").write_text("{}")
    """
    import shutil

    target = Path(target)
    created = [parent for parent in target.absolute().parents if not parent.exists()]  # deepest first
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = target.parent / f".{target.name}{STAGING_MARK}{os.getpid()}.{secrets.token_hex(3)}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)  # a failed run leaves no folder it made
        raise
    try:
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        if target.exists():
            retired = target.parent / f".{target.name}.replaced-{os.getpid()}.{secrets.token_hex(3)}"
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
