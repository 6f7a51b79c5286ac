"""DataModules, one file per data family, each with an embedded offline default."""


class DatasetNotFoundError(FileNotFoundError):
    """A real dataset is not on disk and cannot be downloaded; the CLI exits 3."""
