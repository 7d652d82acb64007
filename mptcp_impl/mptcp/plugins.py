"""Loading research plug-ins: a scheduler, coupled congestion controller or path manager named
by a shipped name, by ``FILE.py:Class`` (a user's file, imported as is), or given as a class or
an instance (from Python). One loader for the CLI (``--scheduler``, ``--cc``, ``--pm``), the
experiment files' ``[stacks.userspace]`` and ``MptcpConfig``."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_MODULES: dict[str, Any] = {}


def is_file_spec(spec: Any) -> bool:
    return isinstance(spec, str) and ".py:" in spec


def load_class(spec: str) -> Any:
    """``path/to/file.py:Class`` -> the class (the file is imported once per path)."""
    path, _, name = spec.rpartition(":")
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ValueError(f"{spec!r}: no such file {str(p)!r}")
    key = str(p)
    mod = _MODULES.get(key)
    if mod is None:
        modname = "mptcp_plugin_" + hashlib.sha1(key.encode()).hexdigest()[:12]
        ispec = importlib.util.spec_from_file_location(modname, p)
        if ispec is None or ispec.loader is None:
            raise ValueError(f"{spec!r}: cannot import {str(p)!r}")
        mod = importlib.util.module_from_spec(ispec)
        sys.modules[modname] = mod  # dataclasses and pickling look the module up
        try:
            ispec.loader.exec_module(mod)
        except Exception as e:
            del sys.modules[modname]
            raise ValueError(f"{spec!r}: importing {p.name} failed: {type(e).__name__}: {e}") from e
        _MODULES[key] = mod
    try:
        return getattr(mod, name)
    except AttributeError:
        have = sorted(k for k, v in vars(mod).items() if isinstance(v, type) and k[0] != "_")
        raise ValueError(f"{spec!r}: {p.name} has no {name!r} (classes: {have})") from None


def resolve(spec: Any, registry: dict[str, Any], kind: str) -> Any:
    """A name, ``FILE.py:Class``, a class or an instance -> a class or an instance."""
    if isinstance(spec, str):
        if is_file_spec(spec):
            return load_class(spec)
        try:
            return registry[spec]
        except KeyError:
            raise ValueError(
                f"unknown {kind} {spec!r} (have {sorted(registry)}, or FILE.py:Class)"
            ) from None
    return spec


def load(spec: Any, registry: dict[str, Any], kind: str, ok: Callable[[Any], bool]) -> Any:
    """A new instance for ``spec`` (a class is instantiated without arguments, an instance is
    used as is), checked with ``ok``."""
    obj = resolve(spec, registry, kind)
    if isinstance(obj, type):
        obj = obj()
    if not ok(obj):
        raise ValueError(f"{kind} {spec!r}: {type(obj).__name__} lacks the {kind} interface")
    return obj


def check(spec: Any, registry: dict[str, Any], kind: str) -> None:
    """Raise ValueError now (for the CLI and experiment files) if ``spec`` cannot be loaded."""
    resolve(spec, registry, kind)
