"""User-facing errors.

Every error that bad input or a broken environment can cause is a :class:`DPScreenError` whose message is one line
naming the bad value and what is allowed; the CLI prints it as ``error: <message>`` and exits non-zero.
"""

from __future__ import annotations


class DPScreenError(Exception):
    """Base class for errors that dp_screen reports to the user in one line."""


class InputError(DPScreenError, ValueError):
    """Bad user input: unknown element, impossible oxidation state, unbalanced composition, malformed file."""


class DatabaseError(DPScreenError, ConnectionError):
    """The database cannot be reached or the embedded server cannot be started."""
