"""Settings as dataclasses read from nested mappings (YAML, ``key.sub=value`` overrides, a
checkpoint's saved config): typed fields, unknown keys and bad values as one-line errors.

A field whose type has a ``from_mapping(values, prefix)`` classmethod builds itself (the
model section picks its dataclass by ``kind``); every other dataclass field is built here.
"""

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from mixerflow.core.errors import UserError


def require(condition: bool, key: str, message: str) -> None:
    """A UserError ``config key 'KEY' MESSAGE`` unless ``condition``."""
    if not condition:
        raise UserError(f"config key {key!r} {message}")


def choice(value: str, key: str, choices: tuple[str, ...]) -> None:
    require(value in choices, key, f"must be one of {', '.join(choices)}; got {value!r}")


def at_least(section: Any, prefix: str, minimum: int, *names: str) -> None:
    """Each field ``names`` of ``section`` must be at least ``minimum``."""
    for name in names:
        require(getattr(section, name) >= minimum, prefix + name, f"must be at least {minimum}")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type (int, float, bool, str, or X | None)."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    if options:
        if value is None and type(None) in options:
            return None
        annotation = next(t for t in options if t is not type(None))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"config key {key!r} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UserError(f"config key {key!r} must be a finite number, got {value!r}")
            return float(value)
        raise UserError(f"config key {key!r} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise UserError(f"config key {key!r} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {annotation!r} for {key!r}")


def build(cls: type, values: Any, prefix: str) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``values``; ``prefix`` names
    the section in messages (``"model."``)."""
    if not isinstance(values, dict):
        raise UserError(f"config section {prefix.rstrip('.') or '<top>'!r} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown config key {prefix + str(unknown[0])!r}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if hasattr(hint, "from_mapping"):
            kwargs[name] = hint.from_mapping(value, f"{prefix}{name}.")
        elif dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, hint, prefix + name)
    return cls(**kwargs)


def apply_override(tree: dict, override: str) -> None:
    """Set ``key.sub=value`` (the value read as YAML) in the nested mapping ``tree``."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise UserError(f"override {override!r} is not of the form key.sub=value")
    *sections, leaf = key.split(".")
    node = tree
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise UserError(f"override {override!r}: {section!r} is not a section")
    node[leaf] = yaml.safe_load(raw) if raw else ""


class _KeyTwice(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(f"key {key!r} is written twice (line {line}); keep one")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with a key written twice (YAML would keep
    the last silently, dropping the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _KeyTwice(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The mapping in the YAML file ``path``; ``what`` lists the sections it may hold, for
    the message when it holds something else."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {str(path)!r} is a folder; name a YAML file")
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} not found")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except _KeyTwice as err:
        raise UserError(f"config file {str(path)!r}: {err}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file {str(path)!r} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())
        raise UserError(f"config file {str(path)!r} is not valid YAML ({reason})") from None
    if not isinstance(tree, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of sections ({what}), "
                        f"not a {type(tree).__name__}")
    return tree
