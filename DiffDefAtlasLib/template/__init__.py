"""The MNI ICBM152 2009a symmetric template with tissue maps, brain mask and a lateral-ventricle label.

Example:
    >>> from DiffDefAtlasLib.template import load_template, working_grid, LABEL_NAMES
    >>> template = load_template("2mm")
    >>> template.grid == working_grid(), LABEL_NAMES[4]
    (True, 'lateral_ventricles')
"""

from .labels import (
    BACKGROUND,
    CSF,
    GM,
    LABEL_COLORS,
    LABEL_NAMES,
    LATERAL_VENTRICLES,
    TISSUE_CLASSES,
    WM,
)
from .mni152 import (
    NOTICE_FILES,
    RESOLUTIONS,
    Template,
    load_template,
    template_grid,
    template_info,
    template_notices,
    working_grid,
)

__all__ = [
    "BACKGROUND",
    "CSF",
    "GM",
    "LABEL_COLORS",
    "LABEL_NAMES",
    "LATERAL_VENTRICLES",
    "NOTICE_FILES",
    "RESOLUTIONS",
    "TISSUE_CLASSES",
    "WM",
    "Template",
    "load_template",
    "template_grid",
    "template_info",
    "template_notices",
    "working_grid",
]
