"""Reading config.yaml: the strict YAML parse, and the secrets a config points to.

Secrets are read from where the config says ({env}, {file}, {credential}); a config file
every user may read is refused when it holds them written literally.
"""

from __future__ import annotations

import functools
import stat
from collections.abc import Collection, Hashable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from walletwatch.errors import ConfigError
from walletwatch.schema import Invalid, describe

SECRET_FORMS = "{env: NAME}, {file: PATH} or {credential: NAME}"  # noqa: S105 (not a secret)


class _StrictKeys:
    """Refuses a key written twice in one mapping instead of keeping the last (a mixin)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Check the mapping's own keys for duplicates (merged ``<<`` keys may be overridden)."""
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[attr-defined]
            if not isinstance(key, Hashable):
                continue  # SafeLoader reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)  # type: ignore[misc,no-any-return]


class _StrictLoader(_StrictKeys, yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice in one mapping instead of keeping the last."""


class _FastStrictLoader(_StrictKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """_StrictLoader on libyaml's parser, when PyYAML was built with it.

    The pure-Python parser takes seconds for a config of 10,000 accounts (1.8 MB), holding
    the GIL all along; libyaml's takes a fraction of that for the same data. Its error
    messages are worded differently, so a file it refuses is read again by _StrictLoader
    for the message users and tests know.
    """


def read_yaml(path: Path) -> Mapping[Any, object]:
    """The YAML mapping in the file at ``path``, unvalidated; ConfigError if there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([f"{path}: cannot read config: {err.strerror or err}"]) from err
    except UnicodeDecodeError as err:
        raise ConfigError([f"{path}: not UTF-8 text"]) from err
    try:
        data = _parse_yaml(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = ", ".join(part for part in (err.context, err.problem) if part)
        raise ConfigError([f"{path}: invalid YAML{where}: {problem}"]) from err
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: invalid YAML: {err}"]) from err
    if data is None:
        raise ConfigError([f"{path}: the file is empty"])
    if not isinstance(data, Mapping):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {describe(data)}"])
    return data


def _parse_yaml(text: str) -> object:
    """The YAML document in ``text``, parsed fast; a refusal is worded by the Python parser."""
    try:
        return yaml.load(text, Loader=_FastStrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def refuse_exposed_secrets(
    path: Path, data: Mapping[Any, object], public: Collection[str] = ()
) -> None:
    """Refuse a config file every user may read that holds credentials written in it.

    ``public`` names the credentials that name rather than authenticate (never secret).
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # read a moment ago; the parse reports anything else
    if not mode & stat.S_IROTH:
        return
    literal = _literal_secrets(data, public)
    if literal:
        more = len(literal) - 3
        shown = ", ".join(literal[:3]) + (f" and {more} more" if more > 0 else "")
        problem = (
            f"{path}: readable by every user (mode {stat.S_IMODE(mode):04o}) but holds "
            f"literal secrets ({shown}): run 'chmod 600 {path}', or take them from "
            f"{SECRET_FORMS}"
        )
        raise ConfigError([problem])


@functools.cache
def _published() -> frozenset[str]:
    """The simulator's demo credentials (walletwatch/demo.yaml, printed by ``simulate``).

    They are public by design, so a world-readable config may hold them: that is what lets
    examples/simulator.yaml run from a fresh checkout.
    """
    text = resources.files("walletwatch").joinpath("demo.yaml").read_text()
    accounts = yaml.safe_load(text)["accounts"]
    return frozenset(
        str(value) for account in accounts for value in account["credentials"].values()
    )


def _literal_secrets(data: Mapping[Any, object], public: Collection[str]) -> list[str]:
    """Paths of the credential values (and webhook URLs, headers, secrets) written literally."""
    found: list[str] = []
    places: list[tuple[str, object]] = [("defaults", data.get("defaults"))]
    accounts = data.get("accounts")
    if isinstance(accounts, list):
        places.extend((f"accounts[{i}]", item) for i, item in enumerate(accounts))
    for prefix, entry in places:
        credentials = entry.get("credentials") if isinstance(entry, Mapping) else None
        if isinstance(credentials, Mapping):
            found.extend(
                f"{prefix}.credentials.{name}"
                for name, value in credentials.items()
                if isinstance(value, str) and name not in public and value not in _published()
            )
    sinks = data.get("sinks")
    for i, sink in enumerate(sinks if isinstance(sinks, list) else ()):
        if not isinstance(sink, Mapping):
            continue
        values = [("url", sink.get("url")), ("secret", sink.get("secret"))]
        headers = sink.get("headers")
        if isinstance(headers, Mapping):
            values.extend((f"headers.{name}", value) for name, value in headers.items())
        # A webhook URL may carry its token; any literal URL counts, to be safe.
        found.extend(f"sinks[{i}].{key}" for key, value in values if isinstance(value, str))
    return found


def resolve_secret(
    value: object, base_dir: Path, environ: Mapping[str, str], *, offline: bool = False
) -> str:
    """A credential's text from a literal, {env}, {file} or {credential}; never echoed.

    ``offline``: a well-formed reference is not read, and stands as UNREAD.
    """
    if isinstance(value, str):
        if not value:
            raise Invalid("empty value")
        return value
    if not isinstance(value, Mapping) or len(value) != 1:
        raise Invalid(f"expected text or one of {SECRET_FORMS}, got {kind_of(value)}")
    ((kind, arg),) = value.items()
    if kind not in ("env", "file", "credential"):
        raise Invalid(f"unknown source {describe(kind)}: expected {SECRET_FORMS}")
    if not isinstance(arg, str) or not arg:
        raise Invalid(f"{kind}: expected a non-empty name, got {describe(arg)}")
    if offline:
        return UNREAD
    if kind == "env":
        if arg not in environ:
            raise Invalid(f"environment variable {arg} is not set")
        if not environ[arg]:
            raise Invalid(f"environment variable {arg} is empty")
        return environ[arg]
    if kind == "file":
        return _read_secret(base_dir / arg)
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise Invalid(
            f"credential {arg!r}: CREDENTIALS_DIRECTORY is not set "
            "(systemd sets it for LoadCredential=)"
        )
    if "/" in arg or arg in (".", ".."):
        raise Invalid(f"invalid credential name {arg!r}")
    return _read_secret(Path(directory) / arg)


UNREAD = "(not read: --offline)"
"""What an offline check holds for a secret reference: never sent anywhere."""


def _read_secret(path: Path) -> str:
    """A secret file's text without its trailing newline; refused if every user may read it.

    The same rule as for a config holding literal secrets: a secret every user of the host can
    read is no secret (``chmod 600`` it; systemd's credentials are 0400 already).
    """
    try:
        mode = path.stat().st_mode
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise Invalid(f"cannot read {path}: {err.strerror or type(err).__name__}") from None
    except UnicodeDecodeError:
        raise Invalid(f"{path} is not UTF-8 text") from None
    if mode & stat.S_IROTH:
        raise Invalid(
            f"{path}: readable by every user (mode {stat.S_IMODE(mode):04o}): "
            f"run 'chmod 600 {path}'"
        )
    text = text.rstrip("\r\n")
    if not text:
        raise Invalid(f"{path} is empty")
    return text


def kind_of(value: object) -> str:
    """Name a value's YAML type without showing it (for credentials)."""
    if isinstance(value, bool) or value is None:
        return describe(value)
    if isinstance(value, int | float):
        return "a number (quote it)"
    return "text" if isinstance(value, str) else describe(value)
