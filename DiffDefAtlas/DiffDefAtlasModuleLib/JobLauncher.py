"""Long work (registration with refinement, condition sweeps) in a background process, with progress and Cancel.

The job runs ``PythonSlicer -m DiffDefAtlasLib.cli.main register|sweep ...`` (argument lists from
``DiffDefAtlasLib.slicer_support.jobs``); a ``qt.QTimer`` polls its output so the GUI stays responsive. Results are loaded only
after the process exited successfully and wrote every expected file; a cancelled or failed job, or results that fail
to load, leave the scene as it was (nodes added while loading are removed again), and the job's temporary folder is
always deleted.
"""

import logging
import shutil
import tempfile
from pathlib import Path

import qt
import slicer

from DiffDefAtlasLib.slicer_support import devices, jobs
from DiffDefAtlasLib.slicer_support import layers

from .MRMLConversion import MRMLConversion


class JobLauncher:
    """Starts background jobs; ``libraryParent`` is the folder holding ``DiffDefAtlasLib`` (put on the child's path)."""

    def __init__(self, libraryParent) -> None:
        self.libraryParent = Path(libraryParent)

    @staticmethod
    def jobFolder(kind: str) -> Path:
        """A fresh temporary folder for one job's inputs and outputs."""
        return Path(tempfile.mkdtemp(prefix=f"DiffDefAtlas-{kind}-"))

    @staticmethod
    def _nodeIDs() -> set:
        return {slicer.mrmlScene.GetNthNode(i).GetID() for i in range(slicer.mrmlScene.GetNumberOfNodes())}

    @staticmethod
    def _removeNodesAddedSince(before: set) -> None:
        added = [slicer.mrmlScene.GetNthNode(i) for i in range(slicer.mrmlScene.GetNumberOfNodes())]
        for node in reversed([n for n in added if n.GetID() not in before]):
            if slicer.mrmlScene.IsNodePresent(node):
                slicer.mrmlScene.RemoveNode(node)

    def start(self, arguments: list, work: Path, expected: list, finish, onProgress=None, onDone=None,
              progressFromLine=None):
        """Start one job. ``finish(job)`` loads the results (only after success) and returns what ``onDone`` gets.

        ``onProgress(fraction, message)`` follows the job; ``onDone(job, result, error)`` is called once, with
        ``result`` ``None`` when the job was cancelled or failed.
        """
        runner = jobs.SubprocessRunner()
        timer = qt.QTimer()
        timer.setInterval(200)

        def done(job):
            timer.stop()
            result, error = None, job.error
            try:
                if job.state is jobs.JobState.SUCCEEDED:
                    before = self._nodeIDs()
                    try:
                        result = finish(job)
                    except Exception as exception:  # loading failed: undo it and report it like a failed job
                        logging.exception("DiffDefAtlas: loading the results failed")
                        self._removeNodesAddedSince(before)
                        job.state, error, result = jobs.JobState.FAILED, f"loading the results failed: {exception}", None
            finally:
                shutil.rmtree(work, ignore_errors=True)
            if onDone:
                onDone(job, result, error)

        environment = jobs.library_environment(slicer.util.startupEnvironment(), self.libraryParent)
        job = jobs.BackgroundJob(runner, jobs.python_executable(), arguments, environment=environment,
                                    expected_outputs=expected, on_progress=onProgress, on_log=logging.info, on_done=done,
                                    progress_from_line=progressFromLine)
        timer.timeout.connect(runner.poll)
        job.timer = timer  # keep the timer alive as long as the job
        job.start()
        if not job.finished:
            timer.start()
        return job

    def startRegistration(self, movingNode, atlasNode, atlasLabelsNode, show, *, refine: int = 50, affine: bool = True,
                          device: str = "auto", onProgress=None, onDone=None):
        """Run ``diffdef-atlas register`` on the scan and the atlas (and its labels); ``show(result)`` makes the nodes
        from ``jobs.read_register_outputs`` once the job succeeded."""
        from DiffDefAtlasLib.imageio import write_image

        work = self.jobFolder("register")
        moving, fixed, out = work / "moving.nii.gz", work / "atlas.nii.gz", work / "out"
        fixedLabels = work / "atlas_labels.nii.gz" if atlasLabelsNode is not None else None
        try:
            write_image(MRMLConversion.volumeFromNode(movingNode), moving)
            write_image(MRMLConversion.volumeFromNode(atlasNode), fixed)
            if fixedLabels is not None:
                write_image(MRMLConversion.volumeFromNode(atlasLabelsNode), fixedLabels)
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise
        arguments = jobs.register_arguments(moving, fixed, out, fixed_labels=fixedLabels, refine=refine, affine=affine,
                                               device=devices.device_choice(device))
        expected = [out / name for name in jobs.REGISTER_OUTPUTS]
        return self.start(arguments, work, expected, lambda job: show(jobs.read_register_outputs(out)),
                          onProgress, onDone)

    def startSweep(self, model: str, vary: tuple, conditions: dict, *, seed: int = 0, steps=None, device: str = "auto",
                   allowExtrapolation: bool = False, onProgress=None, onDone=None):
        """Run ``diffdef-atlas sweep`` (``vary = (name, start, stop, step)``) and load the atlases as a sequence
        (played with the Sequences toolbar)."""
        work = self.jobFolder("sweep")
        out = work / "out"
        arguments = jobs.sweep_arguments(model, vary, conditions, out, seed=seed, steps=steps,
                                            device=devices.device_choice(device), allow_extrapolation=allowExtrapolation)
        values = jobs.sweep_values(*vary[1:])

        def finish(job):
            from DiffDefAtlasLib.imageio import read_image

            files = jobs.sweep_atlas_files(out)
            if not files:
                raise RuntimeError(f"the sweep wrote no atlas files into {out}")
            sequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{model} sweep over {vary[0]}")
            sequence.SetIndexName(vary[0])
            for label, path in zip(jobs.sweep_labels(values, len(files)), files):
                item = MRMLConversion.volumeNode(layers.volume_layer(read_image(path), f"{vary[0]} {label}"))
                sequence.SetDataNodeAtValue(item, label)
                MRMLConversion.removeNode(item)
            browser = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{model} sweep browser")
            browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
            slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
            browser.SetSelectedItemNumber(0)
            slicer.modules.sequences.showSequenceBrowser(browser)
            slicer.util.setSliceViewerLayers(background=browser.GetProxyNode(sequence), fit=True)
            return sequence

        return self.start(arguments, work, [], finish, onProgress, onDone)
