"""The one exception type for user mistakes.

Anything raised as :class:`InputError` is a problem with what the user gave us (a file, a table,
a model directory, an option). Its message is a single line that names the file, row or column;
the CLI prints it as ``error: <message>`` and exits with status 2, with no traceback.
"""

from __future__ import annotations

import errno


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


def os_error_line(error: OSError) -> str:
    """One line for an error of the file system: the file, what went wrong, and what to do
    where it is plain (``/out/m: No space left on device (errno 28): free space or ...``)."""
    where = f"{error.filename}: " if error.filename else ""
    what = error.strerror or first_line(error)
    hint = _OS_HINTS.get(error.errno or 0, "")
    code = f" (errno {error.errno})" if error.errno else ""
    return f"{where}{what}{code}{hint}"


_OS_HINTS = {
    errno.ENOSPC: "; free some space or write elsewhere, then run again",
    errno.EDQUOT: "; free some space or write elsewhere, then run again",
    errno.EROFS: "; write to another folder",
    errno.EACCES: "; check the folder's permissions or write elsewhere",
    errno.ENOTDIR: "; a part of the path is a file, not a folder",
    errno.EEXIST: "; a file is in the way of a folder",
}


def first_line(error: object) -> str:
    """The first non-blank line of an exception's (or warning's) message, for a one-line error
    that quotes a library's; the type's name when the message is empty."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__
