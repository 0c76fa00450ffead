"""Errors a user can act on. The CLI prints these without a traceback."""


class PrefsynthError(Exception):
    """Base class for errors with a message meant for the user."""

    exit_code = 1


class ConfigError(PrefsynthError):
    """The build config (file, YAML or a --set override) is invalid; names the field path."""

    exit_code = 2


class ModelNotFoundError(PrefsynthError):
    """A model name is neither a catalogue entry nor an existing path."""

    exit_code = 2


class InputDataError(PrefsynthError):
    """A user-supplied data file is missing or malformed; names the file and line."""

    exit_code = 2


class RunFolderError(InputDataError, FileNotFoundError):
    """A run folder lacks a file a command needs (run.json, a shard); names the path."""
