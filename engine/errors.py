"""The engine's one exception type: its message is a single line meant for the user."""


class EngineError(Exception):
    """A problem with the user's input, files or settings, explained in one line.

    The CLI prints ``astroswin: error: <file>: <message>`` and exits non-zero; host plugins show
    the message as it is. Anything else that escapes the engine is a bug.
    """
