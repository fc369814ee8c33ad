"""User-facing error type.

Every problem caused by the user's input (a corrupt file, a 2D image where 3D is
expected, a condition out of range...) raises :class:`DiffDefInputError` with a
one-line message naming the file or value and what was expected. The command line
prints that line without a traceback and exits with status 2.
"""

from __future__ import annotations


class DiffDefInputError(ValueError):
    """Bad input from the user: the message says what was expected and what was found.

    Example:
        >>> raise DiffDefInputError("scan.nii.gz: expected a 3D image, found 2D (176x208)")
        Traceback (most recent call last):
        ...
        DiffDefAtlasLib.errors.DiffDefInputError: scan.nii.gz: expected a 3D image, found 2D (176x208)
    """


class QualityCheckError(DiffDefInputError):
    """A computation ran, but its own quality checks say the result is wrong (a NaN field, a misplaced affine):
    nothing is written, and the command line exits with status 2 naming the figure and its threshold."""
