"""Label values of the template label map (the same values in every resolution)."""

from __future__ import annotations

BACKGROUND = 0
CSF = 1
GM = 2
WM = 3
LATERAL_VENTRICLES = 4

#: Label value -> name. Tissue names match the keys of :attr:`Template.tissue`.
LABEL_NAMES: dict[int, str] = {
    BACKGROUND: "background",
    CSF: "csf",
    GM: "gm",
    WM: "wm",
    LATERAL_VENTRICLES: "lateral_ventricles",
}

#: Label value -> display colour (R, G, B in 0..255; FreeSurfer colour-table conventions).
LABEL_COLORS: dict[int, tuple[int, int, int]] = {
    BACKGROUND: (0, 0, 0),
    CSF: (60, 60, 60),
    GM: (205, 62, 78),
    WM: (245, 245, 245),
    LATERAL_VENTRICLES: (120, 18, 134),
}

#: Tissue probability maps shipped with the template, in label order.
TISSUE_CLASSES: tuple[str, ...] = ("csf", "gm", "wm")
