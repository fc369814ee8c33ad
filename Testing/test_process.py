"""Tests of DiffDefAtlasLib.slicer_support.jobs: background jobs with progress and cancel, as the Slicer module runs them.

References: a fake process runner whose output and exit are scripted (the state machine), real child Python
processes (progress lines, exit codes, killing a process tree, the environment that makes the library importable),
the command line's own argument parser (the argument lists), and numpy (sweep values).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from DiffDefAtlasLib.slicer_support import jobs
from DiffDefAtlasLib.slicer_support.jobs import BackgroundJob, JobState, Progress, SubprocessRunner

ROOT = Path(__file__).resolve().parents[1]


class FakeRunner:
    """A ProcessRunner whose output and exit the test drives by hand."""

    def __init__(self, fail_start: bool = False):
        self.started = None
        self.killed = False
        self.fail_start = fail_start
        self.on_output = self.on_finished = None

    def start(self, program, arguments, environment, on_output, on_finished):
        if self.fail_start:
            raise FileNotFoundError(2, "No such file", program)
        self.started = (program, list(arguments), environment)
        self.on_output, self.on_finished = on_output, on_finished

    def kill(self):
        self.killed = True

    def is_running(self):
        return self.started is not None and not self.killed


def _job(runner, **kwargs):
    events = {"progress": [], "log": [], "done": []}
    job = BackgroundJob(
        runner, "python", ["-m", "x"], on_progress=lambda f, m: events["progress"].append((f, m)),
        on_log=events["log"].append, on_done=lambda j: events["done"].append(j.state), **kwargs,
    )
    return job, events


# ------------------------------------------------------------------------------------------------------------------
# progress lines


@pytest.mark.parametrize("fraction", [0.0, 0.125, 0.5, 0.999, 1.0])
def test_progress_lines_round_trip(fraction):
    """Reference: the fraction written (3 decimals) is the fraction read."""
    parsed = jobs.parse_progress(jobs.format_progress(fraction, "  refining   stage 2 "))
    assert parsed == Progress(pytest.approx(round(fraction, 3)), "refining stage 2")


def test_progress_parsing_ignores_other_lines_and_clamps():
    assert jobs.parse_progress("loading the model") is None
    assert jobs.parse_progress("PROGRESS") is None
    assert jobs.parse_progress("PROGRESS nan") is None
    assert jobs.parse_progress("PROGRESS forty") is None
    assert jobs.parse_progress("progress 0.5") is None  # the keyword is case-sensitive, like the CLI prints it
    assert jobs.parse_progress("PROGRESS 1.7\n") == Progress(1.0)
    assert jobs.parse_progress("  PROGRESS -3 x") == Progress(0.0, "x")
    assert jobs.format_progress(-1) == "PROGRESS 0.000"


def test_progress_reporter_prints_only_when_asked():
    """Reference: the environment variable set by library_environment; without it the CLI prints nothing extra."""
    import io

    assert jobs.progress_reporter(io.StringIO(), {}) is None
    assert jobs.progress_reporter(io.StringIO(), {jobs.PROGRESS_ENV: "0"}) is None
    out = io.StringIO()
    report = jobs.progress_reporter(out, jobs.library_environment({}, ROOT))
    report(0.25)
    report(1.0, "done")
    assert [jobs.parse_progress(line) for line in out.getvalue().splitlines()] == [Progress(0.25), Progress(1.0, "done")]


# ------------------------------------------------------------------------------------------------------------------
# argument lists


def test_register_arguments_are_a_list_in_cli_form(tmp_path):
    args = jobs.register_arguments(tmp_path / "scan 1.nii.gz", "atlas.nii.gz", tmp_path / "out", fixed_labels="l.nii.gz",
                                      refine=25, affine=False, device="cpu")
    assert args[:3] == ["-m", "DiffDefAtlasLib.cli.main", "register"]
    assert args[args.index("--moving") + 1] == str(tmp_path / "scan 1.nii.gz")  # spaces stay inside one argument
    assert args[args.index("--refine") + 1] == "25" and args[args.index("--device") + 1] == "cpu"
    assert "--no-affine" in args and args[args.index("--fixed-labels") + 1] == "l.nii.gz"
    assert "--no-affine" not in jobs.register_arguments("m", "f", "o")
    with pytest.raises(ValueError):
        jobs.register_arguments("m", "f", "o", refine=-1)
    with pytest.raises(ValueError):
        jobs.register_arguments("m", "f", "o", device="tpu")


def test_sweep_arguments_and_values():
    """Reference: numpy.arange over the same range (stop included)."""
    args = jobs.sweep_arguments("brain3d", ("age", 45, 80, 5), {"age": 60, "sex": "F"}, "out", seed=2, steps=10,
                                   allow_extrapolation=True)
    assert args[:3] == ["-m", "DiffDefAtlasLib.cli.main", "sweep"]
    assert args[args.index("--vary") + 1] == "age=45:80:5"
    assert args[args.index("--set") + 1] == "sex=F" and args.count("--set") == 1  # the varied condition is not also set
    assert args[args.index("--steps") + 1] == "10" and "--allow-extrapolation" in args
    assert "--steps" not in jobs.sweep_arguments("m", ("age", 1, 2, 1), {}, "o")
    np.testing.assert_allclose(jobs.sweep_values(45, 80, 5), np.arange(45, 80 + 2.5, 5))
    np.testing.assert_allclose(jobs.sweep_values(0.1, 0.3, 0.1), [0.1, 0.2, 0.3])
    assert jobs.sweep_values(5, 1, 1) == []
    with pytest.raises(ValueError):
        jobs.sweep_values(1, 2, 0)


@pytest.mark.parametrize("command", ["register", "sweep"])
def test_argument_lists_parse_with_the_real_command_line(command, tmp_path):
    """Reference: the argument parser of ``diffdef-atlas`` itself, once that subcommand exists."""
    from DiffDefAtlasLib.cli import main

    if command not in main.SUBCOMMANDS:
        pytest.skip(f"diffdef-atlas {command} is not written yet")
    parser = main.build_parser([command])
    if command == "register":
        args = jobs.register_arguments("m.nii.gz", "f.nii.gz", tmp_path, fixed_labels="l.nii.gz", refine=3, device="cpu")
    else:
        args = jobs.sweep_arguments("brain3d", ("age", 45, 80, 5), {"sex": "F"}, tmp_path, seed=1, steps=5)
    parsed = parser.parse_args(args[2:])  # drop "-m DiffDefAtlasLib.cli.main"
    assert parsed.command == command


def test_library_environment_makes_the_library_importable(tmp_path):
    """Reference: a child interpreter started elsewhere imports DiffDefAtlasLib from the folder we name."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env = jobs.library_environment({**base, "PYTHONPATH": os.pathsep.join(["/elsewhere", str(ROOT)])}, ROOT)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/elsewhere"]  # first, and not twice
    assert env["PYTHONUNBUFFERED"] == "1" and env[jobs.PROGRESS_ENV] == "1"
    out = subprocess.run([sys.executable, "-c", "import DiffDefAtlasLib; print(DiffDefAtlasLib.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve().parent == (ROOT / "DiffDefAtlasLib").resolve()


# ------------------------------------------------------------------------------------------------------------------
# the job state machine (fake runner)


def test_job_reports_progress_from_split_chunks_and_succeeds(tmp_path):
    """Output arrives in arbitrary chunks; lines are reassembled before parsing."""
    output = tmp_path / "warped.nii.gz"
    runner = FakeRunner()
    job, events = _job(runner, expected_outputs=[output])
    job.start()
    assert job.state is JobState.RUNNING and runner.started[0] == "python"
    runner.on_output("loading\nPROGR")
    runner.on_output("ESS 0.25 affine\r\nPROGRESS 0.75")
    runner.on_output("\nwarning: slow\n")
    output.write_bytes(b"x")
    runner.on_output("PROGRESS 1.0")  # last line without a newline
    runner.on_finished(0)
    assert events["progress"] == [(0.25, "affine"), (0.75, ""), (1.0, "")]
    assert events["log"] == ["loading", "warning: slow"]
    assert events["done"] == [JobState.SUCCEEDED] and job.finished and job.error == ""


def test_job_fails_on_exit_code_with_the_last_log_line():
    runner = FakeRunner()
    job, events = _job(runner)
    job.start()
    runner.on_output("Traceback...\nDiffDefInputError: scan.nii.gz: expected a 3D image\n")
    runner.on_finished(2)
    assert events["done"] == [JobState.FAILED]
    assert job.exit_code == 2 and "status 2" in job.error and "expected a 3D image" in job.error


def test_job_fails_when_outputs_are_missing(tmp_path):
    runner = FakeRunner()
    job, events = _job(runner, expected_outputs=[tmp_path / "warped.nii.gz"])
    job.start()
    runner.on_finished(0)
    assert events["done"] == [JobState.FAILED] and "warped.nii.gz" in job.error


def test_cancel_kills_and_ignores_everything_after(tmp_path):
    """A cancelled job reports once, as cancelled, even if the process then finishes 'successfully'."""
    output = tmp_path / "warped.nii.gz"
    output.write_bytes(b"x")
    runner = FakeRunner()
    job, events = _job(runner, expected_outputs=[output])
    job.start()
    runner.on_output("PROGRESS 0.5\n")
    job.cancel()
    assert runner.killed and job.state is JobState.CANCELLED
    runner.on_output("PROGRESS 0.9\n")
    runner.on_finished(0)
    job.cancel()  # a second cancel does nothing
    assert events["progress"] == [(0.5, "")]
    assert events["done"] == [JobState.CANCELLED] and job.state is JobState.CANCELLED


def test_job_that_cannot_start_fails_and_cannot_restart():
    job, events = _job(FakeRunner(fail_start=True))
    job.start()
    assert events["done"] == [JobState.FAILED] and "could not start" in job.error
    with pytest.raises(RuntimeError):
        job.start()


# ------------------------------------------------------------------------------------------------------------------
# real child processes


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_subprocess_runner_streams_progress_and_exit_code(tmp_path):
    """Reference: a real Python child that prints progress, writes its output and exits 0."""
    out = tmp_path / "result.txt"
    script = _script(tmp_path, f"""
        import sys, time
        from DiffDefAtlasLib.slicer_support.jobs import progress_reporter
        report = progress_reporter()
        for i in range(1, 5):
            report(i / 4, f"step {{i}}")
            time.sleep(0.02)
        print("a log line", file=sys.stderr, flush=True)
        open({str(out)!r}, "w").write("ok")
    """)
    runner = SubprocessRunner()
    progress = []
    job = BackgroundJob(runner, sys.executable, [str(script)], environment=jobs.library_environment(os.environ, ROOT),
                        expected_outputs=[out], on_progress=lambda f, m: progress.append((f, m)))
    job.start()
    runner.wait(timeout=60)
    assert job.state is JobState.SUCCEEDED, job.error
    assert progress == [(0.25, "step 1"), (0.5, "step 2"), (0.75, "step 3"), (1.0, "step 4")]
    assert list(job.log) == ["a log line"]  # stderr is merged into the stream, as the module shows it
    assert not runner.is_running() and runner.poll() is False


def test_subprocess_runner_reports_failure(tmp_path):
    script = _script(tmp_path, """
        import sys
        print("DiffDefInputError: atlas.nii.gz: expected a 3D image, found 2D")
        sys.exit(2)
    """)
    runner = SubprocessRunner()
    job = BackgroundJob(runner, sys.executable, [str(script)])
    job.start()
    runner.wait(timeout=60)
    assert job.state is JobState.FAILED and job.exit_code == 2 and "found 2D" in job.error


def test_subprocess_runner_reports_a_missing_program():
    job = BackgroundJob(SubprocessRunner(), str(ROOT / "no-such-python"), ["-c", "pass"])
    job.start()
    assert job.state is JobState.FAILED and "could not start" in job.error


@pytest.mark.skipif(os.name == "nt", reason="checks POSIX process groups")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    """Reference: the operating system's process table. Like Slicer's PythonSlicer launcher, the child starts a
    grandchild that does the work; Cancel must stop both, and the job must not report the grandchild's output."""
    pid_file = tmp_path / "grandchild.pid"
    script = _script(tmp_path, f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; print('PROGRESS 0.1', flush=True); time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        child.wait()
    """)
    runner = SubprocessRunner()
    job = BackgroundJob(runner, sys.executable, [str(script)])
    job.start()
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the child did not start its grandchild"
        runner.poll()
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    job.cancel()
    assert job.state is JobState.CANCELLED and not runner.is_running()
    deadline = time.monotonic() + 10
    while _alive(grandchild):
        assert time.monotonic() < deadline, "the grandchild survived Cancel"
        time.sleep(0.05)
    assert runner.poll() is False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a killed child of an exited parent may linger as a zombie until reaped by init; count it as dead
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def test_python_executable_exists():
    assert Path(jobs.python_executable()).exists()


def test_sweep_atlas_files_are_in_natural_order(tmp_path):
    """Reference: the numeric order of the condition values in the folder names (5 < 7.5 < 10), not text order."""
    for name in ("age_10", "age_5", "age_7.5"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "atlas.nii.gz").write_bytes(b"")
    (tmp_path / "montage.png").write_bytes(b"")
    (tmp_path / "age_5" / "labels.nii.gz").write_bytes(b"")
    found = [p.parent.name for p in jobs.sweep_atlas_files(tmp_path)]
    assert found == ["age_5", "age_7.5", "age_10"]


# ------------------------------------------------------------------------------------------------------------------
# reading what a finished job wrote, following a sweep


def test_sweep_labels_name_each_atlas_once():
    """Reference: the sweep's values; duplicates or a count mismatch fall back to indices (sequence items need
    distinct labels)."""
    assert jobs.sweep_labels(jobs.sweep_values(45, 55, 5), 3) == ["45", "50", "55"]
    assert jobs.sweep_labels([0.1, 0.2], 2) == ["0.1", "0.2"]
    assert jobs.sweep_labels([45.0, 50.0], 3) == ["0", "1", "2"]
    assert jobs.sweep_labels([1.0, 1.0], 2) == ["0", "1"]


def test_sweep_reports_progress_through_the_one_protocol(tmp_path, capsys, monkeypatch):
    """Reference: the sweep's own step count. With the parent's switch set, ``diffdef-atlas sweep`` prints one
    ``PROGRESS`` line per atlas (n / total, the value as the message), so the job reads fractions, never the wording
    of the human lines; without the switch it prints none."""
    from DiffDefAtlasLib.cli.main import main

    from modelfactory import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny2d")
    argv = ["sweep", "--model", str(model), "--device", "cpu", "--vary", "age=45:60:5"]
    monkeypatch.setenv(jobs.PROGRESS_ENV, "1")
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out.splitlines()
    reports = [p for p in map(jobs.parse_progress, out) if p is not None]
    assert reports == [Progress(0.25, "age=45"), Progress(0.5, "age=50"), Progress(0.75, "age=55"), Progress(1.0, "age=60")]
    monkeypatch.delenv(jobs.PROGRESS_ENV)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if jobs.parse_progress(line)]


def test_read_register_outputs_reads_what_the_register_command_writes(tmp_path):
    """Reference: the register command's own writer (``register.cli.write_outputs``) on a known RegistrationResult;
    the field comes back through the NIfTI (intent 1006) file in RAS mm on its grid."""
    from DiffDefAtlasLib.imageio import Volume
    from DiffDefAtlasLib.register.cli import write_outputs
    from DiffDefAtlasLib.register.engine import RegistrationResult
    from DiffDefAtlasLib.spatial import Grid

    rng = np.random.default_rng(11)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-6.0, -8.0, -4.0)
    grid = Grid((6, 8, 5), affine)
    result = RegistrationResult(
        warped=Volume(rng.normal(size=grid.shape).astype(np.float32), affine),
        displacement=rng.normal(size=(3, *grid.shape)).astype(np.float32), grid=grid,
        jacobian=Volume(rng.normal(1.0, 0.1, size=grid.shape).astype(np.float32), affine),
        labels_on_moving=Volume(rng.integers(0, 5, size=(7, 7, 7)).astype(np.uint8), np.eye(4)),
        summary={"device": "cpu", "folding_ratio": 0.0},
    )
    out = tmp_path / "out"
    write_outputs(result, out, {"moving": "m.nii.gz"})
    assert all((out / name).is_file() for name in jobs.REGISTER_OUTPUTS)
    back = jobs.read_register_outputs(out)
    np.testing.assert_allclose(back.displacement, result.displacement, rtol=1e-6)
    np.testing.assert_allclose(back.grid.affine, affine, atol=1e-5)
    np.testing.assert_allclose(back.warped.array, result.warped.array, rtol=1e-6)
    np.testing.assert_allclose(back.jacobian.array, result.jacobian.array, rtol=1e-6)
    np.testing.assert_array_equal(back.labels_on_moving.array, result.labels_on_moving.array)
    assert back.labels_on_moving.array.dtype == np.uint8
    assert back.summary["folding_ratio"] == 0.0 and back.summary["device"] == "cpu"
    (out / "labels.nii.gz").unlink()
    (out / "summary.json").unlink()
    bare = jobs.read_register_outputs(out)
    assert bare.labels_on_moving is None and bare.summary == {}
