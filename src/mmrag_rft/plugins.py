"""Extensions from outside the package. The modules named in MMRAG_PLUGINS (comma-separated import paths) and those
installed under the `mmrag_rft.plugins` entry-point group are imported once, before any command runs: importing one
runs its `register_reward` / `register_dataset` / `register_engine` lines, and a `register(app)` function in it adds
its own `mmrag` commands (see README, Extending)."""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from types import ModuleType

ENTRY_POINT_GROUP = "mmrag_rft.plugins"


class PluginError(ImportError):
    pass


def plugin_names() -> list[str]:
    """Module paths from MMRAG_PLUGINS, then the installed entry points, without repeats."""
    names = [n.strip() for n in os.environ.get("MMRAG_PLUGINS", "").split(",") if n.strip()]
    names += [ep.value.split(":")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys(names))


def load_plugins() -> list[ModuleType]:
    """Import every plugin module; PluginError naming the module (and where it was named) when one fails."""
    modules = []
    for name in plugin_names():
        try:
            modules.append(importlib.import_module(name))
        except Exception as e:  # a user's module can fail in any way; name it instead of a traceback
            raise PluginError(f"plugin {name!r} (MMRAG_PLUGINS or the {ENTRY_POINT_GROUP!r} entry points) "
                              f"failed to import: {type(e).__name__}: {e}") from e
    return modules
