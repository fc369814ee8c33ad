"""The condition sliders and combo boxes, built from the selected model card.

Ranges, steps, defaults, labels and the trained-range text come from ``DiffDefAtlasLib.slicer_support.sliders.condition_controls``; the
initial values from ``DiffDefAtlasLib.slicer_support.gui_state.initial_condition_state``. This class only makes the
widgets and reads them back.
"""

import ctk
import qt
from slicer.i18n import tr as _

from DiffDefAtlasLib.slicer_support import sliders
from DiffDefAtlasLib.slicer_support import gui_state


class ConditionPanel:
    """One row per condition in ``ui.conditionsFrame``: a "use" check box, the value widget and the trained range.

    Sliders do not track: they report a value when released, so live update regenerates once per move.
    ``onEdited()`` is called after every change. Continuous conditions are also offered in
    ``ui.sweepConditionComboBox``.
    """

    def __init__(self, ui, onEdited) -> None:
        self.ui = ui
        self.onEdited = onEdited
        self.controls = {}  # condition name -> sliders.ConditionControl
        self.widgets = {}  # condition name -> (value widget, "use" check box)

    def clear(self) -> None:
        layout = self.ui.conditionsFrame.layout()
        while layout.count():
            item = layout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.controls, self.widgets = {}, {}

    def rebuild(self, card, allowExtrapolation: bool, stored: dict) -> None:
        """Replace the rows with those of ``card``; ``stored`` holds the values saved in the parameter node."""
        controls = sliders.condition_controls(card, allow_extrapolation=allowExtrapolation)
        values, used = gui_state.initial_condition_state(controls, stored)
        self.clear()
        self.controls = {c.name: c for c in controls}
        layout = self.ui.conditionsFrame.layout()
        wasBlocked = self.ui.sweepConditionComboBox.blockSignals(True)
        self.ui.sweepConditionComboBox.clear()
        for control in controls:
            row = qt.QWidget()
            rowLayout = qt.QHBoxLayout(row)
            rowLayout.setContentsMargins(0, 0, 0, 0)
            use = qt.QCheckBox()
            use.checked = control.name in used
            use.toolTip = _("Untick to leave this condition unset (the model averages over it).")
            rowLayout.addWidget(use)
            value = self._valueWidget(control, values[control.name])
            if not control.is_categorical:
                self.ui.sweepConditionComboBox.addItem(control.label, control.name)
            value.toolTip = control.trained_range_text
            use.connect("toggled(bool)", lambda *args: self.onEdited())
            rowLayout.addWidget(value, 1)
            rangeLabel = qt.QLabel(control.trained_range_text)
            rangeLabel.enabled = False
            rowLayout.addWidget(rangeLabel)
            layout.addRow(control.label, row)
            self.widgets[control.name] = (value, use)
        self.ui.sweepConditionComboBox.blockSignals(wasBlocked)

    def _valueWidget(self, control, value):
        if control.is_categorical:
            widget = qt.QComboBox()
            for choice in control.choices:
                widget.addItem(choice)
            widget.currentText = str(value)
            widget.connect("currentIndexChanged(int)", lambda *args: self.onEdited())
            return widget
        widget = ctk.ctkSliderWidget()
        widget.decimals = control.decimals
        widget.singleStep = control.single_step
        widget.minimum = control.slider_minimum
        widget.maximum = control.slider_maximum
        widget.value = float(value)
        widget.tracking = False  # valueChanged only on release
        widget.connect("valueChanged(double)", lambda *args: self.onEdited())
        return widget

    def conditions(self) -> dict:
        """The values of the ticked conditions (text for categorical ones, float for sliders)."""
        result = {}
        for name, (widget, use) in self.widgets.items():
            if use.checked:
                result[name] = widget.currentText if self.controls[name].is_categorical else float(widget.value)
        return result

    def outsideTrainedRange(self) -> list:
        """Names of the ticked conditions set outside their trained range."""
        return sliders.conditions_outside_trained_range(list(self.controls.values()), self.conditions())
