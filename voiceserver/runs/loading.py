"""Objects named by an import path (``"package.module:object"``): tools, workflows and schemas declared in the
settings, and a suspended run's structured-output schema re-imported when it continues."""

from __future__ import annotations

import importlib
import re
from typing import Any

from .errors import AgentConfigError

_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def load_object(path: str) -> Any:
    """Import ``"package.module:object"`` (the object part may be dotted: ``"pkg.mod:Class.attr"``)."""
    if not isinstance(path, str) or not _PATH.fullmatch(path.strip()):
        raise AgentConfigError(f"{path!r} is not an import path: use 'package.module:object'")
    module_name, attr = path.strip().split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise AgentConfigError(f"cannot load {path!r}: module {module_name!r} not found") from None
        raise AgentConfigError(f"cannot load {path!r}: importing {module_name!r} failed: "
                               f"no module named {missing!r}") from None
    except Exception as exc:  # noqa: BLE001 - user code at import time: report, whatever it raised
        raise AgentConfigError(f"cannot load {path!r}: importing {module_name!r} raised "
                               f"{type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AgentConfigError(f"cannot load {path!r}: module {module_name!r} has no attribute {attr!r}") \
                from None
    return obj
