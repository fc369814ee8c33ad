"""``ctk``: only the name. ``DiffDefAtlasModuleLib/ConditionPanel.py`` builds ``ctk.ctkSliderWidget`` sliders in the
widget; the Logic never creates one, and the tier never builds the Qt widget. Importing the module needs the name."""
