"""The package's imports run one way (docs/ARCHITECTURE.md): every import, also one inside a
function, goes to the same layer or a lower one of :data:`LAYERS`, and no modules import each
other in a cycle. Read from the source with ``ast`` (nothing is imported, so no side effects).
"""
import ast
import os

import pytest

from .helpers import REPO

PACKAGE = "part_distillation"
# lowest first; a module may import its own layer and the layers before it
LAYERS = ("utils", "config", "visualization", "data", "modeling", "evaluation", "manual_eval", "engine", "labelers", "stages")


def module_files(root=os.path.join(REPO, PACKAGE)):
    """``{module name: file path}`` of every module of the package."""
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return out


def imports_of(name, path, modules):
    """``[(line, imported module)]`` for every import statement of the module (any depth), the
    imported names resolved to submodules where they are ones; only the package's own modules."""
    is_pkg = path.endswith("__init__.py")
    out = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".")
                base = parts[: len(parts) - node.level + (1 if is_pkg else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules and "." in t:  # "pkg.mod.attr" -> "pkg.mod"
                t = t.rsplit(".", 1)[0]
            if t in modules and t.split(".")[0] == PACKAGE:
                out.append((node.lineno, t))
    return out


def layer_of(module):
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def import_graph(modules):
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def against_the_order(modules, graph):
    bad = []
    for m, edges in graph.items():
        lm = layer_of(m)
        for line, t in edges:
            lt = layer_of(t)
            if lm is not None and lt is not None and lt > lm:
                bad.append(f"{os.path.relpath(modules[m], REPO)}:{line} imports {t} "
                           f"({LAYERS[lt]} is above {LAYERS[lm]})")
    return bad


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan), or a self-import."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for _, w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or any(t == v for _, t in graph.get(v, [])):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_subpackage_is_in_a_layer():
    tops = {m.split(".")[1] for m in module_files() if m.count(".") >= 1}
    assert tops <= set(LAYERS), f"place {sorted(tops - set(LAYERS))} in LAYERS and docs/ARCHITECTURE.md"


def test_imports_follow_the_layer_order():
    modules = module_files()
    bad = against_the_order(modules, import_graph(modules))
    assert not bad, "imports against the layer order " + " -> ".join(LAYERS) + ":\n" + "\n".join(bad)


def test_no_import_cycles_counting_imports_inside_functions():
    found = cycles(import_graph(module_files()))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_nothing_imports_the_deprecated_stage_base_path():
    """``stages/base.py`` only re-exports the split framework for users; the package itself imports
    the modules that hold the names, and every name it lists resolves (with a warning)."""
    import warnings

    modules = module_files()
    users = [m for m, edges in import_graph(modules).items() for _, t in edges if t == f"{PACKAGE}.stages.base"]
    assert not users, f"import the framework from its modules, not stages.base: {users}"
    from part_distillation.stages import base

    for name, module in base.MOVED_NAMES.items():
        with pytest.warns(FutureWarning, match=f"import it from part_distillation.stages.{module}"):
            obj = getattr(base, name)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert obj is getattr(__import__(f"{PACKAGE}.stages.{module}", fromlist=[name]), name)
    with pytest.raises(AttributeError):
        base.no_such_name  # noqa: B018


def test_the_checks_catch_a_cycle_and_an_upward_import(tmp_path):
    """The walker finds a function-level cycle and an import from a lower layer to a higher one in
    a hand-built package (so that the tests above can fail)."""
    root = tmp_path / PACKAGE
    for sub, text in (("utils/a.py", "def f():\n    from ..stages import s\n"),
                      ("stages/s.py", "from ..utils import a\n"),
                      ("data/d.py", "import part_distillation.data.e\n"),
                      ("data/e.py", "def g():\n    from . import d\n")):
        (root / sub).parent.mkdir(parents=True, exist_ok=True)
        (root / sub).write_text(text)
        (root / sub).parent.joinpath("__init__.py").touch()
    (root / "__init__.py").touch()
    modules = module_files(str(root))
    graph = import_graph(modules)
    assert sorted(map(tuple, cycles(graph))) == [(f"{PACKAGE}.data.d", f"{PACKAGE}.data.e"),
                                                 (f"{PACKAGE}.stages.s", f"{PACKAGE}.utils.a")]
    bad = against_the_order(modules, graph)
    assert len(bad) == 1 and "imports part_distillation.stages.s (stages is above utils)" in bad[0]


@pytest.mark.parametrize("folder", ["tools", "bench", "demo"])
def test_tools_import_the_installed_package(folder):
    """Entry points import the installed package (the set-up installs it editable), never by
    putting the repository on ``sys.path``."""
    bad = [f for f in sorted(os.listdir(os.path.join(REPO, folder))) if f.endswith(".py")
           and "sys.path.insert" in open(os.path.join(REPO, folder, f)).read()]
    assert not bad, f"{folder}/ files that edit sys.path: {bad}"


def test_doc_links_resolve():
    """Every relative link of the README and docs/*.md names a file that exists."""
    import re

    docs = [os.path.join(REPO, "README.md")] + [os.path.join(REPO, "docs", f) for f in
                                                os.listdir(os.path.join(REPO, "docs")) if f.endswith(".md")]
    missing = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", open(doc).read()):
            if "://" not in target and not os.path.exists(os.path.join(os.path.dirname(doc), target)):
                missing.append(f"{os.path.relpath(doc, REPO)} -> {target}")
    assert not missing, f"links to missing files: {missing}"
