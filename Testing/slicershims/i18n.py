"""``slicer.i18n``: Slicer's ``tr`` and ``translate`` (``Base/Python/slicer/i18n.py``).

With no translation loaded, Slicer's ``translate(context, text)`` returns ``app.translate(context, text)``, which is
the text itself; ``tr`` finds the context from the caller's file and does the same. Here: the text itself.
"""


def translate(context: str, text: str) -> str:
    return text


def tr(text: str) -> str:
    return text
