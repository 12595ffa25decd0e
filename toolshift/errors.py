"""Errors with one-line messages that name the file, key or value and what was expected."""


class ToolshiftError(Exception):
    """Base class: every message is a single line fit to show a user as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class ConfigError(ToolshiftError):
    """The configuration is invalid."""


class ContractError(ToolshiftError):
    """A file does not meet its written contract (missing column, wrong dims, bad value)."""


class DataError(ToolshiftError):
    """An input data file is missing, malformed or fails its checksum."""


class DiskFullError(ToolshiftError):
    """A write failed because its disk (or quota) is full; names the file being written and the fix."""

    def __init__(self, path: object) -> None:
        self.path = path
        super().__init__(
            f"disk full while writing {path} (No space left on device): free space on that disk or point "
            "`results` at a larger one, then rerun (a failed job leaves no output Snakemake would take as "
            "complete)"
        )
