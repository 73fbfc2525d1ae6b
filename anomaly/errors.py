"""The project's own exceptions, one family: the CLI and the app each turn every one into one line.

- ``GearboxError``: the root.
  - ``AudioInputError`` (also a ``ValueError``): a recording, image or folder a user gave cannot be used;
    the message names it and the problem. CLI exit 1.
    - ``CalibrationError``: the recordings given to adapt to a machine cannot make a calibration (too few
      usable clips).
  - ``BundleError`` (also a ``RuntimeError``): a model bundle or calibration file is missing, tampered with
    or incompatible. CLI exit 2.
    - ``HubError``: the Hugging Face Hub refused or failed a download or an upload.
    - ``CalibrationFileError``: a calibration file (or one kept in a browser) holds values no calibration
      has (NaN, a zero scale, thresholds out of order or range, a name with control characters), or was
      not signed by this server.
  - ``ClusterError`` (also a ``RuntimeError``): a Dask scheduler cannot be reached or has no workers.
    CLI exit 2.
"""


class GearboxError(Exception):
    """Root of the project's errors: each has a message a user can act on, with no traceback."""


class AudioInputError(GearboxError, ValueError):
    """Input a user gave us cannot be scored: the message names the file and the problem."""

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class CalibrationError(AudioInputError):
    """The normal recordings given to adapt to a machine cannot make a calibration."""


class BundleError(GearboxError, RuntimeError):
    """A model bundle or calibration file is missing, tampered with or incompatible."""


class HubError(BundleError):
    """The Hugging Face Hub refused or failed a download or an upload."""


class CalibrationFileError(BundleError):
    """A calibration file or a browser-kept calibration is damaged, forged or holds impossible values.

    (``CalibrationError`` is taken: it says the recordings given to adapt cannot make a calibration, a bad
    input with exit 1; a bad calibration file is exit 2 like a bad bundle.)
    """


class ClusterError(GearboxError, RuntimeError):
    """A Dask scheduler cannot be reached, or no worker joins it."""
