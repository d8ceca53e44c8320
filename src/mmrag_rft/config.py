"""Typed configs from YAML: dataclass defaults, then a YAML file, then `key.sub=value` overrides.

This is the EasyR1 merge order, done with plain dataclasses so that a typo in a YAML key is an error
that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """`field` (dotted path, as the builder named it) and `problem` are kept apart so that `load` can name a bad
    command-line override as the user typed it."""

    def __init__(self, message: str, *, field: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.problem = problem


def _bad(where: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}", field=where, problem=problem)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # `X | None`: what is wrong with the value as an X
            raise errors[0]
        raise _bad(where, f"{value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise _bad(where, f"must be one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _bad(where, f"expected a mapping, got {type(value).__name__}")
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _bad(where, f"expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(where, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise _bad(where, f"expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise _bad(where, f"expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError, OverflowError):
            raise _bad(where, f"expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise _bad(where, f"expected an integer, got {value!r}")
        if tp is float and not math.isfinite(out):  # no setting means NaN or infinity
            raise _bad(where, f"expected a finite number, got {value!r}")
        return out
    if tp is str:
        if value is None:  # never the string "None"; an empty value is written ""
            raise _bad(where, 'expected a string, got null (write "" for an empty one)')
        if isinstance(value, (dict, list)):
            raise _bad(where, f"expected a string, got {type(value).__name__}")
        return str(value)
    return value


def range_problem(cls: type, name: str, value: Any) -> str | None:
    """What is wrong with `value` for field `name` by the class's `RANGES` {field: (low, high)} (inclusive,
    None = open), or None if it fits."""
    low, high = getattr(cls, "RANGES", {}).get(name, (None, None))
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if (low is not None and value < low) or (high is not None and value > high):
        span = (f"within [{low}, {high}]" if low is not None and high is not None
                else f">= {low}" if low is not None else f"<= {high}")
        return f"must be {span}, got {value!r}"
    return None


def check_ranges(obj: Any) -> None:
    """Raise ValueError naming the first field of dataclass `obj` outside its class's RANGES (for configs built in
    Python; `build` names the dotted field itself)."""
    for name in getattr(type(obj), "RANGES", {}):
        problem = range_problem(type(obj), name, getattr(obj, name))
        if problem:
            raise ValueError(f"{name} {problem}")


def build(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass `cls` from a (nested) mapping; unknown keys and values outside the class's RANGES are
    errors."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _bad(where, f"unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    for k, v in kwargs.items():
        problem = range_problem(cls, k, v)
        if problem:
            raise _bad(f"{where}.{k}", problem)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise _bad(where, f"{e}") from None


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | os.PathLike[str], _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as a mapping; a top-level `base: other.yaml` (relative to this file) is read first and this
    file's keys are merged over it, so a variant is a small overlay on the config it changes."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    base = loaded.pop("base", None)
    if base is None:
        return loaded
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{p}: base must be the path of another config file, got {base!r}")
    base_path = (p.parent / base).resolve()
    if base_path in _seen or base_path == p.resolve():
        raise ConfigError(f"{p}: base {base!r} leads back to itself")
    return merge(read_yaml(base_path, (*_seen, p.resolve())), loaded)


def load(cls: type[T], path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None,
         defaults: dict[str, Any] | None = None) -> T:
    """Dataclass defaults <- `defaults` (e.g. a model's own settings) <- YAML file <- `a.b=value` overrides
    (values parsed as YAML scalars)."""
    data = read_yaml(path) if path is not None else {}
    data = merge(defaults or {}, data)
    given: dict[str, str] = {}
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected key=value")
        k, v = ov.split("=", 1)
        set_dotted(data, k.strip(), yaml.safe_load(v))
        given[k.strip()] = v
    where = str(path) if path else "config"
    try:
        return build(cls, data, where=where)
    except ConfigError as e:
        # a bad value given on the command line is named as the user typed it, not as if the file held it
        msg = str(e)
        rel = e.field[len(where) + 1:] if e.field and e.field.startswith(f"{where}.") else None
        for k, v in given.items():
            if rel is not None and (rel == k or rel.startswith((f"{k}.", f"{k}["))):
                inner = "" if rel == k else f" ({rel})"
                raise ConfigError(f"override {k}={v}{inner}: {e.problem}", field=e.field, problem=e.problem) from None
        if given:  # a cross-field check: the file and the overrides together broke it
            raise ConfigError(f"{msg} (with overrides {', '.join(f'{k}={v}' for k, v in given.items())})") from None
        raise


def field_help(cls: type) -> dict[str, str]:
    """Each field's help: the comment on its line in the class body, else the comment lines right above it (the
    comments are the documentation, so `mmrag config show` prints what the source says)."""
    import inspect
    import re

    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in lines[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# ").strip())
            continue
        m = re.match(r"\s{4}(\w+)\s*:", line)
        if m and m.group(1) in names:
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            out[m.group(1)] = trailing or " ".join(above)
        above = []
    return out


def describe(cfg: Any, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """(dotted key, value, default, help) for every leaf field of a config dataclass instance."""
    rows: list[tuple[str, Any, Any, str]] = []
    helps = field_help(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            rows += describe(value, f"{key}.")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        rows.append((key, value, default, helps.get(f.name, "")))
    return rows


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: configs compared key by key."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump(cfg: Any, path: str | os.PathLike[str]) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write to a temp file in the same folder, then rename: a crash never leaves half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_writer(path, binary=True) as f:
        f.write(data)


def replace_dir(tmp: Path, out: Path) -> None:
    """Put a finished folder `tmp` where `out` is: the old `out` is moved aside, never deleted before the new one is in
    place (restored if the rename fails), then removed. `tmp` must sit beside `out` (same file system)."""
    import shutil
    import uuid

    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def replacing_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp folder beside `out` to write into: when the block finishes cleanly it replaces `out` (`replace_dir`);
    otherwise it is removed and `out` is left as it was."""
    import shutil

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_png(fig: Any, path: str | os.PathLike[str], *, dpi: int = 110) -> None:
    """A matplotlib figure written atomically as PNG (rendered in memory, then renamed into place), then closed."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[IO[Any]]:
    """Stream into a temp file beside `path`, renamed over it only when the block finishes cleanly
    (so a 40k-sample conversion need not sit in memory to be written atomically)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600; the result should be an ordinary file
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cache_dir() -> Path:
    """Where converted models and other derived artefacts live (MMRAG_CACHE overrides)."""
    root = os.environ.get("MMRAG_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                        "mmrag-rft")
    p = Path(root)
    p.mkdir(parents=True, exist_ok=True)
    return p


def current_umask() -> int:
    """The process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
