"""Run long jobs (registration refinement, condition sweeps) in a child process, with progress and cancel.

The 3D Slicer module must not freeze while a job runs, and a cancelled job must leave the scene untouched. So the
job runs as ``python -m DiffDefAtlasLib.cli.main ...`` in a separate process; its output lines are read as they come,
lines of the form ``PROGRESS 0.42 optional message`` drive a progress bar, and Cancel kills the whole process tree.
Results are read from the output folder only after the process has exited successfully.

Three pieces, each testable without Slicer:

- :func:`format_progress` / :func:`parse_progress` (from :mod:`DiffDefAtlasLib.progress`): the one-line progress
  protocol; every command that runs as a job prints it when :func:`library_environment` sets the switch;
- :func:`register_arguments` / :func:`sweep_arguments` / :func:`library_environment`: the command, as an argument list
  (never a shell string);
- :class:`BackgroundJob`: the state machine (running, succeeded, failed, cancelled) over any :class:`ProcessRunner`.
  :class:`SubprocessRunner` is the real runner (plain ``subprocess``); tests pass a fake one;
- :func:`read_register_outputs` / :func:`sweep_labels`: reading what a finished job wrote.

Example:
    >>> format_progress(0.42, "refining")
    'PROGRESS 0.420 refining'
    >>> parse_progress("PROGRESS 0.420 refining")
    Progress(fraction=0.42, message='refining')
"""

from __future__ import annotations

import enum
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from ..results import REGISTER_FILES
from ..progress import PROGRESS_ENV, PROGRESS_PREFIX, Progress, format_progress, parse_progress, progress_reporter  # noqa: F401 (the job protocol)

CLI_MODULE = "DiffDefAtlasLib.cli.main"

#: Files ``diffdef-atlas register --out DIR`` writes that the Slicer module loads (labels only with --fixed-labels).
REGISTER_OUTPUTS = tuple(REGISTER_FILES[key] for key in ("warped", "displacement", "jacobian"))


def register_arguments(
    moving: str | Path,
    fixed: str | Path,
    out_dir: str | Path,
    *,
    fixed_labels: str | Path | None = None,
    refine: int = 0,
    affine: bool = True,
    device: str = "auto",
) -> list[str]:
    """Arguments, after the Python executable, that run ``diffdef-atlas register`` as a module.

    Example:
        >>> register_arguments("scan.nii.gz", "atlas.nii.gz", "out", refine=50)[:3]
        ['-m', 'DiffDefAtlasLib.cli.main', 'register']
    """
    if int(refine) < 0:
        raise ValueError(f"refine must be >= 0 iterations, found {refine}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, found {device!r}")
    args = ["-m", CLI_MODULE, "register", "--moving", str(moving), "--fixed", str(fixed), "--out", str(out_dir)]
    if fixed_labels is not None:
        args += ["--fixed-labels", str(fixed_labels)]
    args += ["--refine", str(int(refine)), "--device", device]
    if not affine:
        args.append("--no-affine")
    return args


def sweep_arguments(
    model: str,
    vary: tuple[str, float, float, float],
    conditions: Mapping[str, float | str],
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    device: str = "auto",
    allow_extrapolation: bool = False,
) -> list[str]:
    """Arguments that run ``diffdef-atlas sweep``: ``vary`` is ``(name, start, stop, step)``.

    Example:
        >>> sweep_arguments("brain3d", ("age", 45, 70, 5), {"sex": "F"}, "out")[3:7]
        ['--model', 'brain3d', '--vary', 'age=45:70:5']
    """
    name, start, stop, step = vary
    if float(step) <= 0:
        raise ValueError(f"sweep step must be > 0, found {step}")
    args = ["-m", CLI_MODULE, "sweep", "--model", model, "--vary", f"{name}={_number(start)}:{_number(stop)}:{_number(step)}"]
    for key, value in conditions.items():
        if key != name:
            args += ["--set", f"{key}={_number(value)}"]
    args += ["--seed", str(int(seed))]
    if steps:
        args += ["--steps", str(int(steps))]
    args += ["--device", device, "--out", str(out_dir)]
    if allow_extrapolation:
        args.append("--allow-extrapolation")
    return args


def sweep_values(start: float, stop: float, step: float) -> list[float]:
    """The condition values of a sweep ``start:stop:step``, both ends included (as ``diffdef-atlas sweep`` uses them).

    Example:
        >>> sweep_values(45, 60, 5)
        [45.0, 50.0, 55.0, 60.0]
    """
    if float(step) <= 0:
        raise ValueError(f"sweep step must be > 0, found {step}")
    count = int(math.floor((float(stop) - float(start)) / float(step) + 1e-9)) + 1
    return [round(float(start) + i * float(step), 10) for i in range(max(0, count))]


def sweep_labels(values: Sequence[float], count: int) -> list[str]:
    """Index labels of the ``count`` atlases a sweep wrote: the condition values when there is one per atlas, else
    ``0, 1, 2...`` (a sequence node needs one distinct label per item).

    Example:
        >>> sweep_labels([45.0, 50.0, 52.5], 3)
        ['45', '50', '52.5']
    """
    if len(values) == count:
        labels = [_number(float(v)) for v in values]
        if len(set(labels)) == count:
            return labels
    return [str(i) for i in range(count)]


@dataclass
class RegisterOutputs:
    """What ``diffdef-atlas register --out DIR`` wrote, read back with the fields of a ``RegistrationResult`` that the
    Slicer module shows."""

    warped: object
    displacement: object
    grid: object
    jacobian: object
    labels_on_moving: object = None
    summary: dict = field(default_factory=dict)


def read_register_outputs(out_dir: str | Path) -> RegisterOutputs:
    """Read the files of a finished ``register`` job (:data:`REGISTER_OUTPUTS`, plus ``labels.nii.gz`` and
    ``summary.json`` when present). The displacement comes from the NIfTI (intent 1006, RAS mm) file."""
    import json

    import numpy as np

    from ..imageio import read_image
    from ..fieldio import load_displacement

    out = Path(out_dir)
    u, grid = load_displacement(out / REGISTER_FILES["displacement"])
    labels_path, summary_path = out / REGISTER_FILES["labels"], out / REGISTER_FILES["summary"]
    return RegisterOutputs(
        warped=read_image(out / REGISTER_FILES["warped"]),
        displacement=u,
        grid=grid,
        jacobian=read_image(out / REGISTER_FILES["jacobian"]),
        labels_on_moving=read_image(labels_path, dtype=np.uint8) if labels_path.is_file() else None,
        summary=json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {},
    )


def sweep_atlas_files(folder: str | Path) -> list[Path]:
    """The atlas images a sweep wrote (``*atlas*.nii.gz`` anywhere under ``folder``), in natural order (5 before 10).

    Example:
        >>> sweep_atlas_files("sweep")  # doctest: +SKIP
        [PosixPath('sweep/age_5/atlas.nii.gz'), PosixPath('sweep/age_10/atlas.nii.gz')]
    """
    def key(path: Path):
        text = path.relative_to(folder).as_posix()
        return [(0, float(part), "") if re.fullmatch(r"\d+(\.\d+)?", part) else (1, 0.0, part)
                for part in re.split(r"(\d+(?:\.\d+)?)", text) if part]

    folder = Path(folder)
    return sorted((p for p in folder.rglob("*atlas*.nii.gz") if p.is_file()), key=key)


def _number(value: float | str) -> str:
    """Shortest text for a number (``45`` not ``45.0``); strings pass through."""
    if isinstance(value, str):
        return value
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def library_environment(base: Mapping[str, str], library_parent: str | Path) -> dict[str, str]:
    """Environment for the child: ``base`` with the folder holding ``DiffDefAtlasLib`` first on ``PYTHONPATH``.

    Inside Slicer the library sits beside the module (not in site-packages), so the child needs this to import it.

    Example:
        >>> library_environment({}, "/opt/ext")["PYTHONPATH"]  # doctest: +SKIP
        '/opt/ext'
    """
    env = dict(base)
    parent = str(Path(library_parent))
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != parent]
    env["PYTHONPATH"] = os.pathsep.join([parent, *existing])
    env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive while the job runs, not at exit
    env[PROGRESS_ENV] = "1"
    return env


class ProcessRunner(Protocol):
    """Starts one child process and reports its output and exit; :class:`BackgroundJob` drives it.

    ``on_output`` receives text chunks (not necessarily whole lines) and ``on_finished`` the exit code; both must be
    called on the thread that owns the job (the GUI thread in Slicer).
    """

    def start(
        self,
        program: str,
        arguments: Sequence[str],
        environment: Mapping[str, str] | None,
        on_output: Callable[[str], None],
        on_finished: Callable[[int], None],
    ) -> None: ...

    def kill(self) -> None: ...

    def is_running(self) -> bool: ...


class JobState(enum.Enum):
    """Life cycle of a :class:`BackgroundJob`."""

    IDLE = "idle"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BackgroundJob:
    """A child process whose result counts only if it exits with 0 and wrote every expected output.

    ``on_progress(fraction, message)`` follows the ``PROGRESS`` lines (and, with ``progress_from_line``, any other line
    that callable turns into a :class:`Progress`), ``on_log(line)`` gets every other line and ``on_done(job)`` is
    called once, when the job has succeeded, failed or been cancelled (check :attr:`state`).
    A cancelled job never reports success, even if the process happened to finish writing.

    Example:
        >>> job = BackgroundJob(SubprocessRunner(), sys.executable, ["-c", "print('PROGRESS 1')"])  # doctest: +SKIP
        >>> job.start(); job.runner.wait(); job.state  # doctest: +SKIP
        <JobState.SUCCEEDED: 'succeeded'>
    """

    def __init__(
        self,
        runner: ProcessRunner,
        program: str,
        arguments: Sequence[str],
        *,
        environment: Mapping[str, str] | None = None,
        expected_outputs: Sequence[str | Path] = (),
        on_progress: Callable[[float, str], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_done: Callable[["BackgroundJob"], None] | None = None,
        log_lines: int = 200,
        progress_from_line: Callable[[str], Progress | None] | None = None,
    ) -> None:
        self.runner = runner
        self.program = str(program)
        self.arguments = [str(a) for a in arguments]
        self.environment = environment
        self.expected_outputs = [Path(p) for p in expected_outputs]
        self.on_progress = on_progress
        self.on_log = on_log
        self.on_done = on_done
        self.progress_from_line = progress_from_line
        self.state = JobState.IDLE
        self.progress = Progress(0.0)
        self.exit_code: int | None = None
        self.error = ""
        self.log: deque[str] = deque(maxlen=log_lines)
        self._partial = ""

    @property
    def finished(self) -> bool:
        """True once the job has succeeded, failed or been cancelled."""
        return self.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    def start(self) -> None:
        """Start the child process (once)."""
        if self.state is not JobState.IDLE:
            raise RuntimeError(f"job already {self.state.value}")
        self.state = JobState.RUNNING
        try:
            self.runner.start(self.program, self.arguments, self.environment, self._handle_output, self._handle_finished)
        except OSError as error:
            self._finish(JobState.FAILED, f"could not start {self.program}: {error}")

    def cancel(self) -> None:
        """Kill the process tree; the job ends as cancelled and its outputs are ignored."""
        if self.state is not JobState.RUNNING:
            return
        self.state = JobState.CANCELLED
        self.runner.kill()
        self._finish(JobState.CANCELLED, "cancelled")

    def _handle_output(self, text: str) -> None:
        self._partial += text.replace("\r\n", "\n").replace("\r", "\n")
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._handle_line(line)

    def _handle_line(self, line: str) -> None:
        progress = parse_progress(line)
        if progress is None and self.progress_from_line is not None:
            progress = self.progress_from_line(line)
            if progress is not None and line.strip():
                self.log.append(line)  # a result line: keep it in the log too
                if self.on_log:
                    self.on_log(line)
        if progress is not None:
            self.progress = progress
            if self.on_progress and self.state is JobState.RUNNING:
                self.on_progress(progress.fraction, progress.message)
            return
        if line.strip():
            self.log.append(line)
            if self.on_log:
                self.on_log(line)

    def _handle_finished(self, exit_code: int) -> None:
        if self._partial:
            self._handle_line(self._partial)
            self._partial = ""
        self.exit_code = int(exit_code)
        if self.state is not JobState.RUNNING:
            return  # cancelled: already reported
        if self.exit_code != 0:
            last = next((line for line in reversed(self.log) if line.strip()), "")
            detail = f": {last.strip()}" if last else ""
            self._finish(JobState.FAILED, f"process exited with status {self.exit_code}{detail}")
            return
        missing = [str(p) for p in self.expected_outputs if not p.is_file()]
        if missing:
            self._finish(JobState.FAILED, "process finished but did not write " + ", ".join(missing))
            return
        self._finish(JobState.SUCCEEDED, "")

    def _finish(self, state: JobState, error: str) -> None:
        self.state = state
        self.error = error
        if self.on_done:
            self.on_done(self)


class SubprocessRunner:
    """:class:`ProcessRunner` over :mod:`subprocess`: a reader thread queues output, :meth:`poll` delivers it.

    Call :meth:`poll` periodically on the thread that owns the job (a ``qt.QTimer`` in Slicer) or block with
    :meth:`wait`. The child starts in its own process group so :meth:`kill` also stops the processes it spawned
    (3D Slicer's ``PythonSlicer`` is a launcher that starts the real interpreter as a child).
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._on_output: Callable[[str], None] | None = None
        self._on_finished: Callable[[int], None] | None = None
        self._reported = False

    def start(self, program, arguments, environment, on_output, on_finished) -> None:
        """Start ``program arguments...`` with ``environment`` (``None``: inherit this process's)."""
        if self.is_running():
            raise RuntimeError("a process is already running")
        self._on_output, self._on_finished, self._reported = on_output, on_finished, False
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP") | getattr(subprocess, "CREATE_NO_WINDOW", 0)  # Windows-only names
        else:
            kwargs["start_new_session"] = True
        self._process = subprocess.Popen(
            [program, *arguments],
            env=None if environment is None else dict(environment),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self._process, self._queue), daemon=True)
        self._reader.start()

    @staticmethod
    def _read(process: subprocess.Popen, sink: "queue.Queue[str | None]") -> None:
        assert process.stdout is not None
        for line in process.stdout:
            sink.put(line)
        sink.put(None)  # end of output

    def is_running(self) -> bool:
        """True while the child has not exited."""
        return self._process is not None and self._process.poll() is None

    def poll(self) -> bool:
        """Deliver queued output, and the exit code once the child has exited; returns True while not finished."""
        if self._process is None or self._reported:
            return False
        ended = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                ended = True
                break
            if self._on_output:
                self._on_output(item)
        if ended or (self._reader is not None and not self._reader.is_alive() and self._queue.empty()):
            code = self._process.wait()
            self._reported = True
            if self._on_finished:
                self._on_finished(code)
            return False
        return True

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> None:
        """Block until the child has exited and everything was delivered (for scripts and tests)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"process still running after {timeout} s")
            time.sleep(interval)

    def kill(self) -> None:
        """Kill the child and everything it started; output that is still queued is dropped."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            import psutil  # optional: the most reliable way to find every descendant

            parent = psutil.Process(process.pid)
            for child in parent.children(recursive=True):
                child.kill()
            parent.kill()
        except ImportError:
            if os.name == "nt":
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
            else:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # the child leads its own group (start_new_session)
                except ProcessLookupError:
                    pass
        except Exception:  # psutil.NoSuchProcess and friends: it already ended
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        self._reported = True  # a killed job reports through BackgroundJob.cancel, not on_finished


def python_executable() -> str:
    """The interpreter to run jobs with: ``PythonSlicer`` inside 3D Slicer, else this interpreter."""
    import shutil

    return shutil.which("PythonSlicer") or sys.executable
