"""``ctk``: only the name. ``DiffDefAtlasModuleLib/ConditionPanel.py`` builds ``ctk.ctkSliderWidget`` sliders in the
widget; the Logic never creates one. Importing the module needs the name; the widget tests set the class from
:mod:`.widgets`."""
