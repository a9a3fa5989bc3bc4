"""The pipeline's errors: one base class, so that every script turns any of them into one line.

Raise one of these for anything a user can fix (a missing file, a wrong setting, a model that cannot be
reached); the message names the file or setting and says what to do. Anything else is a bug and keeps
its traceback.
"""


class PipelineError(Exception):
    """An error the user can fix; the message says what to do."""


class SettingsError(PipelineError):
    """A constant or command-line option has a value the step cannot use."""


class DatasetError(PipelineError):
    """A dataset (or a file of your own rows) is missing, empty, or was built for another tokenizer."""


class ModelError(PipelineError):
    """A model or adapter could not be found or loaded."""


class FormattingError(PipelineError):
    """Tokenized rows that would train the wrong thing (no EOS, all labels masked, pad == EOS...)."""


class TrainingError(PipelineError):
    """Training cannot go on (no disk space for checkpoints, CUDA out of memory...)."""


class LaunchError(PipelineError):
    """The launch cannot work (several processes without a GPU each, --device cuda without one...)."""


class ExportError(PipelineError):
    """A merge, GGUF conversion or push to the Hub failed; the local files are kept."""


class PromptsFileError(PipelineError):
    """A prompts file is missing, unreadable or empty, or the options asked for need one."""


class TeacherError(PipelineError):
    """The teacher that writes question/answer pairs (QA_TEACHER, QA_JUDGE) cannot be reached or used."""
