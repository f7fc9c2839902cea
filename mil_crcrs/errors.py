"""The one exception type for user mistakes.

Anything raised as :class:`InputError` is a problem with what the user gave us (a file, a table,
a model directory, an option). Its message is a single line that names the file, row or column;
the CLI prints it as ``error: <message>`` and exits with status 2, with no traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, described in one line that names the offending file, row or column."""
