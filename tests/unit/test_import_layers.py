"""The agent library's layers, checked on the source: runs/ is below agent/ and network/, the network never imports
the agent package (it sees an agent through runs.ports.NetworkHost), and nothing in them imports lazily inside a
function to dodge a cycle. Read with ast, so TYPE_CHECKING blocks count too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "voiceserver"


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import of ``path``, relative imports resolved."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom):
                base = package.split(".")
                if child.level:
                    base = base[: len(base) - child.level + 1]
                    name = ".".join([*base, child.module] if child.module else base)
                else:
                    name = child.module or ""
                out.append((name, in_function))
            elif isinstance(child, ast.Import):
                out.extend((alias.name, in_function) for alias in child.names)
            visit(child, nested)

    visit(tree, False)
    return out


def package_imports(name: str) -> dict[str, list[tuple[str, bool]]]:
    return {str(p.relative_to(PACKAGE)): imports(p) for p in sorted((PACKAGE / name).rglob("*.py"))}


def test_the_network_and_runs_never_import_the_agent_package():
    for name in ("network", "runs"):
        for path, found in package_imports(name).items():
            offending = [m for m, _ in found if m == "voiceserver.agent" or m.startswith("voiceserver.agent.")]
            assert not offending, f"{path} imports {offending}"


def test_runs_imports_neither_network_nor_agent():
    for path, found in package_imports("runs").items():
        assert not [m for m, _ in found if m.startswith(("voiceserver.network", "voiceserver.agent"))], path


def test_no_lazy_imports_between_agent_network_and_runs():
    for name in ("agent", "network", "runs"):
        for path, found in package_imports(name).items():
            lazy = [m for m, inside in found if inside and m.startswith(("voiceserver.agent", "voiceserver.network",
                                                                         "voiceserver.runs"))]
            assert not lazy, f"{path} imports {lazy} inside a function"


def test_importing_the_network_loads_nothing_of_the_agent():
    code = ("import sys, voiceserver.network; "
            "print(sorted(m for m in sys.modules if m.startswith('voiceserver.agent')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent).stdout.strip()
    assert out == "[]"


def test_an_agent_is_a_network_host():
    from voiceserver.agent import Agent
    from voiceserver.runs import NetworkHost
    from voiceserver.testing.fake_llm import ScriptedChatModel

    assert isinstance(Agent(name="Router", model=ScriptedChatModel(["ok"])), NetworkHost)
