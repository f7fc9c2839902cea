"""The one exception type for user mistakes.

Anything raised as :class:`InputError` is a problem with what the user gave us (a file, a table,
a model directory, an option). Its message is a single line that names the file, row or column;
the CLI prints it as ``error: <message>`` and exits with status 2, with no traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, described in one line that names the offending file, row or column.

    The message is kept to one line whatever it quotes: line breaks inside it (an id or a
    column name holding a newline) are shown escaped, as ``\\n``.
    """

    def __init__(self, message: object = "", *args: object) -> None:
        text = str(message)
        if len(text.splitlines()) > 1 or text.endswith(("\n", "\r")):
            text = "\\n".join(text.splitlines())
        super().__init__(text, *args)
