"""The display decisions behind the Slicer module's overlays, without Slicer: the Jacobian's colour table and the
record of what was applied to a node.

References: the preview pictures' growth and shrinkage colours (``DiffDefAtlasLib.generate.preview``), the window
of :func:`overlays.jacobian_window_level` mapped onto the table's rows as Slicer maps a window onto a colour table
(row 0 at the bottom of the window, the last row at its top), and JSON read back with the standard library.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from DiffDefAtlasLib.slicer_support import gui_state, overlays


def _row(table: np.ndarray, det_j: float, half_width: float) -> np.ndarray:
    window = overlays.jacobian_window_level(half_width=half_width)
    t = np.clip((det_j - window.minimum) / window.window, 0.0, 1.0)
    return table[int(round(t * (len(table) - 1)))]


def test_the_jacobian_table_shows_larger_in_the_atlas_in_red():
    """det J 0.6 (1 / det J = 1.67: larger in the atlas) is red, 1.4 blue, 1 white; the ends are the preview's
    growth and shrinkage colours, so the Slicer views and the PNG previews say the same."""
    from DiffDefAtlasLib.generate import preview

    table = overlays.volume_change_colour_table()
    assert table.shape == (256, 4) and np.all((table >= 0) & (table <= 1)) and np.all(table[:, 3] == 1.0)
    np.testing.assert_allclose(table[0, :3], preview.GROWTH)
    np.testing.assert_allclose(table[-1, :3], preview.SHRINKAGE)
    larger, same, smaller = (_row(table, v, 0.5) for v in (0.6, 1.0, 1.4))
    assert larger[0] > larger[2] + 0.3 and smaller[2] > smaller[0] + 0.3
    assert np.ptp(same[:3]) < 0.02 and same[:3].min() > 0.98
    red_minus_blue = table[:, 0] - table[:, 2]
    assert np.all(np.diff(red_minus_blue) <= 1e-12)  # from red to blue, never back
    odd = overlays.volume_change_colour_table(5)
    np.testing.assert_allclose(odd[2], [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError):
        overlays.volume_change_colour_table(2)


def test_the_words_say_the_colour_rule():
    for text in (overlays.JACOBIAN_COLOR_WORDS, overlays.JACOBIAN_LEGEND_TITLE.replace("\n", " ")):
        assert "det J of the stored map" in text and "red (det J < 1): larger in the atlas" in text and "blue" in text
    assert "than in the scan" in overlays.REGISTRATION_JACOBIAN_LEGEND_TITLE.replace("\n", " ")
    assert overlays.JACOBIAN_COLOR_NODE_ID == "vtkMRMLColorTableNode" + overlays.JACOBIAN_COLOR_SINGLETON_TAG


def test_display_changes_are_what_differs_from_the_record():
    """Nothing recorded (or a record that is not JSON): every entry; then only the entries that differ. Numbers
    equal up to rounding count as the same; the record keeps the entries it was not given."""
    wanted = {"colorNodeID": "x", "windowFrom": 0.5, "legendVisible": True, "foregroundOpacity": 0.5}
    assert gui_state.display_changes(None, wanted) == wanted
    assert gui_state.display_changes("not json", wanted) == wanted
    assert gui_state.display_changes("[1, 2]", wanted) == wanted
    record = gui_state.remember_display(None, wanted)
    assert json.loads(record) == wanted
    assert gui_state.display_changes(record, wanted) == {}
    assert gui_state.display_changes(record, {**wanted, "windowFrom": 0.5 + 1e-12}) == {}
    assert gui_state.display_changes(record, {**wanted, "windowFrom": 0.7, "legendVisible": False}) == {
        "windowFrom": 0.7, "legendVisible": False}
    assert gui_state.display_changes(record, {"windowFrom": 12345}) == {"windowFrom": 12345}
    assert gui_state.display_changes(record, {"legendVisible": 1}) == {}  # JSON true read back as True == 1
    again = gui_state.remember_display(record, {"windowFrom": 0.7})
    assert json.loads(again) == {**wanted, "windowFrom": 0.7}
