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


class SettingError(InputError):
    """A bad value of one setting: ``str(error)`` is ``"<setting> <problem>"``.

    The library names the setting (a field of a settings dataclass); the CLI rewrites it with
    the flag the user typed (``--max-tiles``) or the file the value came from.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem

    def __reduce__(self) -> tuple[type[SettingError], tuple[str, str]]:
        # An exception pickles as type(self)(*self.args); ours takes the two parts.
        return type(self), (self.setting, self.problem)


def first_line(error: object) -> str:
    """The first non-blank line of an exception's (or warning's) message, for a one-line error
    that quotes a library's; the type's name when the message is empty."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
