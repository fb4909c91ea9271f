"""The one error every capture module raises for a source that cannot be opened or read
(its own module, so ``sources`` and ``network`` both import it without importing each other)."""


class SourceError(ValueError):
    """A source cannot be opened or read; the message is one line naming what and why."""
