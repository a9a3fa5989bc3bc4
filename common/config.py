"""Constants -> command line, .env loading, and small shared settings.

Each script starts with UPPER_CASE constants, each with a one-line comment. `apply_cli_overrides`
turns them into command-line options (`MAX_STEPS` -> `--max-steps`, booleans as `--x/--no-x`),
with the comment as help text, and writes the parsed values back into the script's globals.
"""
import argparse
import ast
import os
import re
from pathlib import Path

from dotenv import load_dotenv

ROOT = Path(__file__).resolve().parent.parent
_CONSTANT_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)\s*(?::[^=]+)?=.*?#\s*(.*)$")


def load_env(path=None):
    """Read `.env` (HF_TOKEN and friends) into os.environ without overriding what is set."""
    load_dotenv(path or ROOT / ".env", override=False)


def hf_token():
    """The Hugging Face token from the environment or `.env`; never printed anywhere."""
    load_env()
    return os.environ.get("HF_TOKEN") or None


def redact(text, secret=None):
    """Remove the HF token from a text before it reaches a terminal, a log or a report."""
    secret = secret if secret is not None else os.environ.get("HF_TOKEN")
    text = str(text)
    return text.replace(secret, "***") if secret else text


def read_constant_comments(script_path):
    """Map each top-level UPPER_CASE constant of a script to its trailing one-line comment."""
    comments = {}
    for line in Path(script_path).read_text(encoding="utf-8").splitlines():
        match = _CONSTANT_LINE.match(line)
        if match:
            comments[match.group(1)] = match.group(2).strip()
    return comments


def script_constants(namespace):
    """The UPPER_CASE settings of a script namespace, in definition order."""
    return {k: v for k, v in namespace.items()
            if k.isupper() and not k.startswith("_") and isinstance(v, (bool, int, float, str, list, tuple, type(None)))}


def _parse_value(text):
    """Command-line text for a constant whose default is None: a number where it reads as one."""
    try:
        value = ast.literal_eval(text)
        return value if isinstance(value, (int, float)) else text
    except (ValueError, SyntaxError):
        return text


def build_parser(namespace, description=None):
    """An argparse parser with one option per constant, its comment as help and its value as default."""
    comments = read_constant_comments(namespace["__file__"])
    parser = argparse.ArgumentParser(description=description or namespace.get("__doc__"),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, default in script_constants(namespace).items():
        flag = "--" + name.lower().replace("_", "-")
        help_text = comments.get(name, "")
        if isinstance(default, bool):
            parser.add_argument(flag, dest=name, default=default, help=help_text,
                                action=argparse.BooleanOptionalAction)
        elif isinstance(default, (list, tuple)):
            parser.add_argument(flag, dest=name, default=default, help=help_text, nargs="*", metavar="VALUE")
        elif default is None:
            parser.add_argument(flag, dest=name, default=None, help=help_text, type=_parse_value)
        else:
            parser.add_argument(flag, dest=name, default=default, help=help_text, type=type(default))
    return parser


def apply_cli_overrides(namespace, argv=None, description=None):
    """Parse the command line and write the values back over the script's constants."""
    args = vars(build_parser(namespace, description).parse_args(argv))
    namespace.update(args)
    return args
