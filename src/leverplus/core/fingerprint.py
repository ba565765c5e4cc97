"""Code fingerprints: a stage reruns when the library code it runs changes, not only when its script does.

Snakemake watches a rule's script, not the modules that script imports. Each rule therefore gets a `code` param:
the sha256 of the source files its workflow script reaches through `leverplus` imports, found by reading the
sources with `ast` (nothing is imported, so no torch at DAG-build time). No list of modules is kept by hand.

How the files are found, starting from `workflow/scripts/<rule>.py`:

* the script's `from leverplus.<m> import <name>` statements name its entry points (the stage function and
  `run_stage`);
* inside a stage (glue) module — `leverplus.stages.*`, `leverplus.tracks.<track>.stages` or
  `leverplus.tracks.<track>.stages.*`: plain functions, one per rule — a name is followed as a *symbol*: its module file is hashed,
  and the names its definition uses — module-level helpers of the same file, imported names, imports inside the
  function — are followed in turn. `candidates` and `beam_search` live in one glue module but reach different
  library code;
* any other `leverplus` module is followed as a whole *module*: its file, every `import` / `from … import` anywhere in
  it (relative and function-level ones included), and the `__init__.py` of each package above it. A module-level
  view is what stays right under registries, decorators and method dispatch, which name-level tracing cannot see.

Imports of other packages (torch, transformers, …) are not followed: their versions are recorded in the results'
signatures instead.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

PACKAGE = "leverplus"


def is_glue(module: str) -> bool:
    """A stage module (functions a rule runs): `leverplus.stages[.*]` or `leverplus.tracks.<track>.stages[.*]`."""
    parts = module.split(".")
    if parts[:2] == [PACKAGE, "stages"]:
        return True
    return len(parts) >= 4 and parts[:2] == [PACKAGE, "tracks"] and parts[3] == "stages"


def package_root() -> Path:
    """The directory that holds the `leverplus` package (located, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(PACKAGE)
    return Path(spec.origin).parent.parent


class _Sources:
    """Parsed `leverplus` sources below `root` (the directory holding the package)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._trees: dict[Path, ast.Module] = {}

    def file(self, module: str) -> Path | None:
        """`a.b.c` → root/a/b/c.py or root/a/b/c/__init__.py; None when it is not a module of the package."""
        if module != PACKAGE and not module.startswith(PACKAGE + "."):
            return None
        base = self.root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def is_package(self, module: str) -> bool:
        path = self.file(module)
        return path is not None and path.name == "__init__.py"

    def tree(self, path: Path) -> ast.Module:
        if path not in self._trees:
            self._trees[path] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        return self._trees[path]

    def parents(self, module: str) -> list[str]:
        """Packages whose `__init__.py` runs before `module` does."""
        parts = module.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts))]

    def absolute(self, node: ast.ImportFrom, module: str) -> str:
        if not node.level:
            return node.module or ""
        package = module if self.is_package(module) else module.rpartition(".")[0]
        parts = package.split(".")
        if node.level - 1 > len(parts) - 1:
            raise ImportError(f"{self.file(module)}: relative import beyond the top-level package")
        base = ".".join(parts[: len(parts) - (node.level - 1)])
        return f"{base}.{node.module}" if node.module else base

    def bindings(self, node: ast.Import | ast.ImportFrom, module: str) -> dict[str, tuple[str, str | None]]:
        """Local name → (module, attribute or None) for one import statement; `leverplus` targets only."""
        out: dict[str, tuple[str, str | None]] = {}
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    out[alias.asname] = (alias.name, None)
                else:  # `import a.b` binds `a` but runs a.b
                    out[alias.name.split(".")[0]] = (alias.name, None)
        else:
            source = self.absolute(node, module)
            for alias in node.names:
                if alias.name == "*":
                    out[f"*{source}"] = (source, None)
                    continue
                sub = f"{source}.{alias.name}"
                target = (sub, None) if self.file(sub) else (source, alias.name)
                out[alias.asname or alias.name] = target
        return {k: v for k, v in out.items() if self.file(v[0])}


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _top_level(tree: ast.Module) -> dict[str, ast.AST]:
    """Names a module defines at top level (functions, classes, assignments) → their statement."""
    out: dict[str, ast.AST] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[stmt.name] = stmt
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = stmt
    return out


def _imports_in(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    return [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]


def dependency_files(entries: list[tuple[str, str | None]], root: Path | None = None) -> list[Path]:
    """Source files reached from `entries`: (module, None) follows a whole module, (module, name) a symbol of a
    stage (glue) module, see `is_glue` (a symbol elsewhere follows its whole module)."""
    src = _Sources(root or package_root())
    files: set[Path] = set()
    seen_modules: set[str] = set()
    seen_symbols: set[tuple[str, str]] = set()
    todo = list(entries)
    while todo:
        module, name = todo.pop()
        path = src.file(module)
        if path is None:
            continue
        if name is not None and not is_glue(module):
            name = None
        if name is None:
            if module in seen_modules:
                continue
            seen_modules.add(module)
        else:
            if (module, name) in seen_symbols:
                continue
            seen_symbols.add((module, name))
        files.add(path)
        todo += [(p, None) for p in src.parents(module)]
        tree = src.tree(path)
        if name is None:  # the whole module: every import statement in it
            for node in _imports_in(tree):
                todo += list(src.bindings(node, module).values())
            continue
        # a symbol of a glue module: what its definition uses
        defs = _top_level(tree)
        top_imports: dict[str, tuple[str, str | None]] = {}
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                top_imports.update(src.bindings(stmt, module))
        if name not in defs:
            if name in top_imports:  # re-exported
                todo.append(top_imports[name])
                continue
            raise ImportError(f"{path}: no top-level definition of {name!r}")
        node = defs[name]
        for imp in _imports_in(node):
            todo += list(src.bindings(imp, module).values())
        for used in _names_used(node) - {name}:
            if used in defs:
                todo.append((module, used))
            elif used in top_imports:
                todo.append(top_imports[used])
    return sorted(files)


def script_entries(script: str | Path, root: Path | None = None) -> list[tuple[str, str | None]]:
    """The `leverplus` names a workflow script imports (its entry points)."""
    src = _Sources(root or package_root())
    tree = ast.parse(Path(script).read_text(encoding="utf-8"), filename=str(script))
    out: list[tuple[str, str | None]] = []
    for node in _imports_in(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise ImportError(f"{script}: a workflow script imports leverplus absolutely")
        out += list(src.bindings(node, "__main__").values())
    if not out:
        raise ImportError(f"{script}: imports nothing from {PACKAGE}; its code cannot be fingerprinted")
    return out


def files_digest(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


@lru_cache(maxsize=None)
def script_fingerprint(script: str) -> str:
    """The `code` param of the rule that runs `script`: a digest of every `leverplus` file it reaches."""
    root = package_root()
    return files_digest(dependency_files(script_entries(script, root), root), root)
