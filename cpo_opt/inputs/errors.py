"""The two errors of bad input: every loader, rule and library argument raises one of these,
and the command line turns either into exit status 2 and its one line."""

from __future__ import annotations


class InputError(ValueError):
    """A bad input. ``str()`` is one line: ``<where>: <key>: <rule> (got <value>)``."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ArgumentError(InputError):
    """A bad argument of a library function. ``str()`` is ``<argument>: <rule>``; the command
    line shows the same rule under its flag (``global_batch`` -> ``--global-batch``)."""

    def __init__(self, argument: str, rule: str):
        self.argument, self.rule = argument, " ".join(str(rule).split())
        super().__init__(f"{argument}: {self.rule}")
