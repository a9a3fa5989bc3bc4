"""Constants -> a typed settings object, the command line, and `.env`.

Each script starts with UPPER_CASE constants, each with a one-line comment. `parse_settings` turns them into
command-line options (`MAX_STEPS` -> `--max-steps`, booleans as `--x/--no-x`), with the comment as help text and
the settings field's type as the option's type, and returns the step's settings object (common/settings.py).
"""
import argparse
import ast
import os
import re
import types
import typing
from dataclasses import fields
from pathlib import Path

from dotenv import load_dotenv

from .errors import SettingsError

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ("HF_TOKEN", "WANDB_API_KEY")  # read from the environment or .env, never printed or written
_CONSTANT_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]+)?=.*?#\s*(.*)$")
# Environment defaults of the pipeline, set in one place by `set_environment_defaults` at the start of each
# script; a value already in the environment wins.
ENVIRONMENT_DEFAULTS = {
    # Unsloth replays its one-token decode step as CUDA graphs only where this is set (same results, several times
    # faster at batch 1: bench/bench_gpu_inference.py)
    "UNSLOTH_DECODE_CUDA_GRAPHS": "1",
}


def set_environment_defaults() -> None:
    """Put ENVIRONMENT_DEFAULTS into os.environ where the user has not set them."""
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)


def load_env(path=None) -> None:
    """Read `.env` (HF_TOKEN and friends) into os.environ without overriding what is set."""
    load_dotenv(path or ROOT / ".env", override=False)


def hf_token() -> str | None:
    """The Hugging Face token from the environment or `.env`; never printed anywhere."""
    load_env()
    return os.environ.get("HF_TOKEN") or None


def redact(text, secret: str | None = None) -> str:
    """Remove the secrets (`secret`, else the HF token and the W&B key) from a text before it reaches a terminal, a
    log or a report."""
    secrets = [secret] if secret is not None else [os.environ.get(name) for name in SECRETS]
    text = str(text)
    for value in filter(None, secrets):
        text = text.replace(value, "***")
    return text


def read_constant_comments(script_path) -> dict[str, str]:
    """Map each top-level UPPER_CASE constant of a script to its trailing one-line comment."""
    comments = {}
    for line in Path(script_path).read_text(encoding="utf-8").splitlines():
        match = _CONSTANT_LINE.match(line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def read_script_constants(script_path) -> dict:
    """The values of a script's top-level UPPER_CASE constants, read from its file without running it."""
    script_path = Path(script_path)
    constants = {}
    for node in ast.parse(script_path.read_text(encoding="utf-8")).body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id.isupper() and node.value is not None:
            try:
                constants[target.id] = ast.literal_eval(node.value)
            except ValueError:
                raise SettingsError(f"{script_path.name}, line {node.lineno}: {target.id} must be a plain value "
                                    f"(a number, text, True/False, None or a list).") from None
    return constants


def _field_type(hint):
    """(the type a value must have, whether None is allowed) of a settings field's annotation."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None)), True
    return typing.get_origin(hint) or hint, False


def _checked(name, value, hint, where):
    kind, optional = _field_type(hint)
    if value is None and optional:
        return None
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
        return value
    wanted = {bool: "True or False", int: "a whole number", float: "a number", str: "text",
              list: "a list of texts"}[kind] + (" or None" if optional else "")
    raise SettingsError(f"{name} ({where}) must be {wanted}, not {value!r}.")


def settings_from_constants(settings_class, constants: dict, where: str = "settings"):
    """A settings object from UPPER_CASE constants; a missing, unknown or mistyped one is a SettingsError."""
    hints = typing.get_type_hints(settings_class)
    names = {f.name.upper(): f.name for f in fields(settings_class)}
    missing, unknown = sorted(set(names) - set(constants)), sorted(set(constants) - set(names))
    if missing or unknown:
        raise SettingsError(f"The constants of {where} do not match {settings_class.__name__}: "
                            f"missing {missing or 'none'}, unknown {unknown or 'none'} (see common/settings.py).")
    return settings_class(**{field: _checked(name, constants[name], hints[field], where)
                             for name, field in names.items()})


def script_constants(namespace: dict) -> dict:
    """The UPPER_CASE settings of a script namespace, in definition order."""
    return {k: v for k, v in namespace.items()
            if k.isupper() and not k.startswith("_") and isinstance(v, (bool, int, float, str, list, tuple, type(None)))}


def comma_split(words: list[str]) -> list[str]:
    """A list option's words, each split on its commas: ["fact,entity", "shuffled"] -> ["fact", "entity", "shuffled"]."""
    return [part.strip() for word in words for part in word.split(",") if part.strip()]


def build_parser(settings, comments: dict[str, str], description: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of `settings`, its comment as help, its value as default."""
    hints = typing.get_type_hints(type(settings))
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    order = list(comments)  # the script's order: options listed as the constants are
    for field in sorted(fields(settings), key=lambda f: order.index(f.name.upper()) if f.name.upper() in order else 0):
        name, default = field.name.upper(), getattr(settings, field.name)
        flag, help_text = "--" + field.name.replace("_", "-"), comments.get(name, "")
        kind, _ = _field_type(hints[field.name])
        if kind is bool:
            parser.add_argument(flag, dest=name, default=default, help=help_text,
                                action=argparse.BooleanOptionalAction)
        elif kind is list:  # space- or comma-separated (parse_settings splits them): fact entity, or fact,entity
            parser.add_argument(flag, dest=name, default=default, help=help_text, nargs="*", metavar="VALUE")
        else:
            parser.add_argument(flag, dest=name, default=default, help=help_text, type=kind)
    return parser


def parse_settings(settings_class, namespace: dict, argv: list[str] | None = None):
    """The step's settings: the script's constants (`namespace`, its globals()), overridden by the command line."""
    script = Path(namespace["__file__"])
    settings = settings_from_constants(settings_class, script_constants(namespace), where=script.name)
    parser = build_parser(settings, read_constant_comments(script), namespace.get("__doc__"))
    given = {name: comma_split(value) if isinstance(value, list) and value is not getattr(settings, name.lower())
             else value for name, value in vars(parser.parse_args(argv)).items()}
    return settings_from_constants(settings_class, given, where="the command line")
