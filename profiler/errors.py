"""The one exception type users see.

Anything a user can get wrong (a model name, a size, a path) raises :class:`ProfilerError` with a message that says
what to do; the CLI prints it as one line on stderr and exits with ``exit_code``. Internal bugs are left to traceback.
"""

EXIT_USAGE = 2
EXIT_OUT_OF_MEMORY = 3


class ProfilerError(Exception):
    """A user-facing error: ``str(err)`` is one actionable line; ``exit_code`` is 2 (usage) or 3 (out of memory)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code
