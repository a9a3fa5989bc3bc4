"""Experiment tracking (REPORT_TO): none, tensorboard, wandb, trackio, or a comma list of them, as TRL's report_to.

The GPU path hands the list to TRL, whose trainer reports through transformers' callbacks; the CPU loop writes the
same scalars under the same names itself (train/loss, train/learning_rate, train/tokens_per_s, eval/loss). TensorBoard
logs go to `<OUTPUT_DIR>/runs/<date>_<host>` on both paths (TENSORBOARD_LOGGING_DIR, where set, wins); W&B and Trackio
log to the project `papers-to-llm` (WANDB_PROJECT, where set, wins for W&B). Everything is checked before training: a
missing package or W&B login is one line saying what to install or set. Keys are read by the trackers themselves and
never printed.
"""
import contextlib
import importlib
import importlib.util
import netrc
import os
import socket
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

from .config import load_env
from .distributed import say
from .errors import SettingsError

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}  # REPORT_TO name -> pip package
PROJECT = "papers-to-llm"
# history entry key -> scalar name, as transformers' rewrite_logs names them for its callbacks
SCALARS = {"loss": "train/loss", "learning_rate": "train/learning_rate", "tokens_per_s": "train/tokens_per_s",
           "eval_loss": "eval/loss"}


def report_targets(report_to: str) -> list[str]:
    """The trackers REPORT_TO names ([] for none)."""
    names = list(dict.fromkeys(name.strip() for name in report_to.split(",") if name.strip()))
    if names in ([], ["none"]):
        return []
    if any(name not in TRACKERS for name in names):
        raise SettingsError(f"REPORT_TO must be none, or tensorboard, wandb and/or trackio separated by commas "
                            f"(e.g. tensorboard,wandb), not {report_to!r}.")
    return names


def wandb_logged_in() -> bool:
    """A W&B key in the environment or .env, a `wandb login` (its netrc entry), or W&B set to log offline."""
    load_env()
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_tracking(report_to: str) -> list[str]:
    """The trackers of REPORT_TO, each ready to log (its package installed, W&B logged in); else one line saying
    what to install or set."""
    targets = report_targets(report_to)
    missing = [TRACKERS[name] for name in targets if importlib.util.find_spec(TRACKERS[name]) is None]
    if missing:
        raise SettingsError(f"REPORT_TO={report_to} needs {' and '.join(missing)}: pip install {' '.join(missing)} "
                            f"(or set --report-to none).")
    if "wandb" in targets and not wandb_logged_in():
        raise SettingsError("REPORT_TO has wandb but W&B has no login here: set WANDB_API_KEY (in .env or the "
                            "environment), run `wandb login`, or set WANDB_MODE=offline.")
    return targets


def tensorboard_dir(output_dir) -> Path:
    """Where this run's TensorBoard events go: TENSORBOARD_LOGGING_DIR, else <output_dir>/runs/<date>_<host>."""
    if os.environ.get("TENSORBOARD_LOGGING_DIR"):
        return Path(os.environ["TENSORBOARD_LOGGING_DIR"]).expanduser()
    return Path(output_dir) / "runs" / f"{datetime.now():%b%d_%H-%M-%S}_{socket.gethostname()}"


@contextlib.contextmanager
def tracking_environment(output_dir):
    """Inside the block, transformers' callbacks (GPU path) log where the CPU loop does: TENSORBOARD_LOGGING_DIR and
    WANDB_PROJECT set where the user has not set them, and put back after."""
    defaults = {"TENSORBOARD_LOGGING_DIR": str(tensorboard_dir(output_dir)), "WANDB_PROJECT": PROJECT}
    added = [name for name in defaults if name not in os.environ]
    os.environ.update({name: defaults[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def tracker_scalars(entry: dict) -> dict:
    """The scalars of one history entry of the CPU loop, by their tracker names."""
    return {name: float(entry[key]) for key, name in SCALARS.items() if key in entry}


class CpuTracker:
    """Sends the CPU loop's history entries (`log`, its on_log) to the trackers of REPORT_TO."""

    def __init__(self, targets: list[str], *, output_dir, run_name: str, config: dict):
        self.sinks = []  # (log(scalars, step), close())
        if "tensorboard" in targets:
            from torch.utils.tensorboard import SummaryWriter
            self.log_dir = tensorboard_dir(output_dir)
            writer = SummaryWriter(log_dir=str(self.log_dir))
            self.sinks.append((lambda scalars, step: self._write(writer, scalars, step), writer.close))
            say(f"TensorBoard logs: {self.log_dir} (view: tensorboard --logdir {self.log_dir.parent})")
        for name in ("wandb", "trackio"):  # the same init / log / finish calls
            if name in targets:
                module = importlib.import_module(name)
                project = os.environ.get("WANDB_PROJECT", PROJECT) if name == "wandb" else PROJECT
                module.init(project=project, name=run_name, config=config)
                self.sinks.append((lambda scalars, step, m=module: m.log(scalars, step=step), module.finish))

    @staticmethod
    def _write(writer, scalars: dict, step: int) -> None:
        for name, value in scalars.items():
            writer.add_scalar(name, value, step)
        writer.flush()  # readable while the run goes on

    def log(self, entry: dict) -> None:
        scalars = tracker_scalars(entry)
        if scalars:
            for log, _ in self.sinks:
                log(scalars, entry["step"])

    def close(self) -> None:
        for _, close in self.sinks:
            close()


@contextlib.contextmanager
def cpu_tracker(s):
    """A CpuTracker for the run of TrainSettings `s` (none when REPORT_TO is none), closed after the block."""
    tracker = CpuTracker(report_targets(s.report_to), output_dir=s.output_dir, run_name=Path(s.output_dir).name,
                         config=s.as_dict())
    try:
        yield tracker
    finally:
        tracker.close()
