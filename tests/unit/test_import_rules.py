"""The import rules of docs/architecture.md, checked on the source (an AST walk).

Imports point one way: domain code imports only other domain code (and leaf
modules that import no engine); each third-party engine is imported by the one
adapter that owns it; nothing imports the composition root but the CLI. Imports
under ``if TYPE_CHECKING:`` and inside functions count too: a dependency is a
dependency even when it is deferred.

Run ``python tests/unit/test_import_rules.py`` to print every broken rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "omega"

#: Domain: plain functions and classes over plain data. New domain modules are
#: added here (the federation maths is listed ahead of its arrival).
DOMAIN = (
    "omega.protocol",
    "omega.protocol.*",
    "omega.shard.state",
    "omega.shard.commands",
    "omega.brain.content",
    "omega.brain.profile",
    "omega.brain.learning",
    "omega.brain.recommender",
    "omega.brain.errors",
    "omega.index.interface",
    "omega.index.errors",
    "omega.index.settings",
    "omega.federation.report",
    "omega.federation.sums",
    "omega.federation.accountant",
    "omega.federation.release",
    "omega.federation.trends",
    "omega.federation.clipping",
    "omega.federation.noise",
    "omega.federation.neighbours",
    "omega.federation.popularity",
    "omega.federation.thresholds",
    "omega.federation.batches",
    "omega.federation.hub",
    "omega.federation.publish",
    "omega.federation.forward",
    "omega.sync.contrib",
    "omega.sync.schedule",
    "omega.sync.shardmap",
    "omega.sync.accountant",
    "omega.sync.errors",
)

#: Leaf modules every layer may import: they import no engine and nothing above them.
LEAVES = (
    "omega",
    "omega.errors",
    "omega.schema",
    "omega.reply",
    "omega.transport_settings",
    "omega.raft.ports",
    # Settings: validated frozen dataclasses of config, read by the code they tune.
    "omega.brain.settings",
    "omega.index.settings",
    "omega.shard.settings",
    "omega.raft.settings",
    "omega.federation.settings",
    "omega.sync.settings",
)

#: Third-party engines and the only modules allowed to import each.
ENGINES: dict[str, tuple[str, ...]] = {
    "pynng": ("omega.transport._nng",),
    "pysyncobj": ("omega.raft.node",),
    "lmdb": ("omega.brain.memory", "omega.raft.kv", "omega.federation.shuffle"),
    "onnxruntime": ("omega.brain.onnx_model",),
    "faiss": ("omega.index.hnsw",),
    "pykka": ("omega.actors.*",),
}

#: Packages a domain module must never reach, even if a rule above forgot one.
ADAPTERS_AND_ACTORS = (
    "omega.actors*",
    "omega.transport",
    "omega.transport.*",
    "omega.raft",
    "omega.raft.*",
    "omega.ops*",
    "omega.sim*",
    "omega.node",
    "omega.cli",
    "omega.client",
)

#: (importer pattern, imported pattern, why)
FORBIDDEN: tuple[tuple[str, str, str], ...] = (
    ("*", "omega.node", "only the CLI imports the composition root"),
    ("omega.ops*", "omega.sim*", "operators' tools never import the simulator"),
    ("omega.actors*", "omega.sim*", "actors never import the simulator"),
    ("omega.config", "omega.transport", "loading a config must not load the transport"),
    ("omega.config", "omega.transport.*", "loading a config must not load the transport"),
)
FORBIDDEN_EXCEPT = {"omega.node": ("omega.cli",)}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> Iterator[Import]:
    """Every module ``path`` imports (``from a import b`` yields ``a`` and ``a.b``)."""
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importer.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield Import(importer, module, node.lineno)
            for alias in node.names:
                yield Import(importer, f"{module}.{alias.name}", node.lineno)


def all_imports(root: Path = PACKAGE) -> list[Import]:
    return [imp for path in sorted(root.rglob("*.py")) for imp in imports_of(path)]


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def known_modules(root: Path = PACKAGE) -> set[str]:
    return {module_name(p) for p in root.rglob("*.py")}


def violations(imports: list[Import], modules: set[str]) -> list[str]:
    out: list[str] = []
    for imp in imports:
        top = imp.imported.split(".")[0]
        where = f"{imp.importer}:{imp.line} imports {imp.imported}"
        # `from omega.x import Name` also yields "omega.x.Name": judge real modules only.
        is_ours = top == "omega" and imp.imported in modules
        if top in ENGINES and not matches(imp.importer, ENGINES[top]):
            out.append(f"{where}: only {', '.join(ENGINES[top])} may import {top}")
        if matches(imp.importer, DOMAIN) and is_ours:
            leaf = matches(imp.imported, LEAVES)
            if not leaf and (
                matches(imp.imported, ADAPTERS_AND_ACTORS) or not matches(imp.imported, DOMAIN)
            ):
                out.append(f"{where}: domain code imports only domain code and leaf modules")
        for importer, imported, why in FORBIDDEN:
            if (
                is_ours
                and fnmatchcase(imp.importer, importer)
                and fnmatchcase(imp.imported, imported)
                and imp.importer not in FORBIDDEN_EXCEPT.get(imported, ())
            ):
                out.append(f"{where}: {why}")
    return sorted(set(out))


def test_the_tree_keeps_the_import_rules() -> None:
    broken = violations(all_imports(), known_modules())
    assert broken == [], "\n".join(broken)


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        ("omega/shard/state.py", "import pynng\n", "only omega.transport._nng may import pynng"),
        ("omega/brain/profile.py", "from omega.actors import base\n", "domain code imports"),
        ("omega/protocol/codec.py", "import lmdb\n", "may import lmdb"),
        ("omega/actors/roles.py", "from omega.node import run_node\n", "composition root"),
        ("omega/ops/tvcli.py", "from omega.sim import movielens\n", "simulator"),
        ("omega/brain/api.py", "from pysyncobj import SyncObj\n", "may import pysyncobj"),
    ],
)
def test_a_forbidden_import_is_caught(
    tmp_path: Path, importer: str, source: str, expected: str
) -> None:
    """The checker itself: each kind of broken rule is reported (it could fail)."""
    path = ROOT / importer
    imports = [*all_imports(), *_imports_of_text(path, source)]
    assert any(expected in v for v in violations(imports, known_modules())), expected


def _imports_of_text(path: Path, source: str) -> list[Import]:
    importer = module_name(path)
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [Import(importer, a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(Import(importer, node.module, node.lineno))
    return out


@pytest.mark.parametrize(
    ("module", "engines"),
    [
        ("omega.config", ("pynng", "pysyncobj", "lmdb", "faiss", "onnxruntime", "pykka")),
        ("omega.cli", ("pynng", "pysyncobj", "lmdb", "faiss", "onnxruntime", "pykka")),
        ("omega.reply", ("pynng",)),
        ("omega.actors.context", ("pynng", "pysyncobj", "lmdb", "faiss", "onnxruntime")),
    ],
)
def test_a_leaf_module_loads_no_engine(module: str, engines: tuple[str, ...]) -> None:
    """At run time too (package ``__init__`` files count): checked in a fresh interpreter."""
    code = (
        f"import sys, {module}\n"
        f"print(' '.join(e for e in {engines!r} if e in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"


if __name__ == "__main__":  # pragma: no cover - a developer's view of the rules
    found = violations(all_imports(), known_modules())
    print("\n".join(found) or "import rules: all kept")
    sys.exit(1 if found else 0)
