"""The ``diffdef-atlas`` command line."""
