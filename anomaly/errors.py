"""The project's own exceptions: one for bad input, one for a bad or missing model bundle."""


class AudioInputError(ValueError):
    """Input a user gave us cannot be scored: the message names the file and the problem."""

    def __init__(self, source: str, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


class BundleError(RuntimeError):
    """A model bundle or calibration file is missing, tampered with or incompatible."""
