"""The package in layers (docs/DESIGN.md, "Layout"), checked by walking the code of
`src/features/`: every import, at module level or inside a function, goes to its own package
or a lower layer, with no cycle; the low layers stay free of storage and search libraries;
no module reaches into another package's private names; one exception hierarchy; and
`import features` stays light."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "features"

# bottom to top; a module belongs to the first prefix it starts with
LAYERS = [
    ("kernels and shared checks", ("features._ext", "features._shared", "features.exceptions",
                                   "features.presets")),
    ("sources and decode", ("features.sources", "features.decode")),
    ("extraction", ("features.extract",)),
    ("vocabulary", ("features.codebook",)),
    ("encodings", ("features.encodings",)),
    ("store", ("features.store",)),
    ("index", ("features.index",)),
    ("search", ("features.search",)),
    ("pipeline", ("features.pipeline",)),
    ("apps", ("features.cli", "features.serve", "features.baseline", "features.demo",
              "features.__main__")),
]
# Old import paths kept for code written against them: one re-export each, nothing else.
COMPAT = {"features.lock": "features.store.lock", "features.assign": "features.codebook.assign",
          "features.aggregate": "features.pipeline.aggregate"}
# The package's own __init__ imports nothing of its own eagerly (see test_import_is_light).
FACADE = "features"

HEAVY = ("h5py", "faiss", "joblib", "distributed", "dask", "aiohttp", "sklearn", "matplotlib")
STDLIB_PRIVATE_OK = {("os", "_exit")}


def _modules():
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


MODULES = _modules()


def _package_of(module, path):
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module):
    """(line, target module, imported name or None) for every import of ``module``,
    function-level ones included; relative imports resolved."""
    path, tree = MODULES[module]
    package = _package_of(module, path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                # ``from pkg import module`` imports the module
                sub = f"{target}.{a.name}"
                if sub in MODULES:
                    yield node.lineno, sub, None
                else:
                    yield node.lineno, target, a.name


def _layer(module):
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _top_package(module):
    """The package an import rule speaks of: ``features.store``, ``features.cli`` ..."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _internal_edges():
    for module in MODULES:
        if module in COMPAT or module == FACADE:
            continue
        for line, target, name in _imports(module):
            if target.split(".")[0] != "features":
                continue
            # an import of a module reaches it; of a name, the module that holds it
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            yield module, line, target, name


def test_every_module_has_a_layer():
    unplaced = [m for m in MODULES if _layer(m) is None and m not in COMPAT and m != FACADE]
    assert not unplaced, f"modules outside every layer (add them to docs/DESIGN.md): {unplaced}"


def test_imports_go_to_the_same_package_or_a_lower_layer():
    wrong = []
    for module, line, target, name in _internal_edges():
        if _top_package(module) == _top_package(target):
            continue
        if target == FACADE and name == "__version__":
            continue        # the version lives where Python looks for it
        if target == FACADE:
            wrong.append(f"{module}:{line} imports the package facade `features`")
        elif _layer(target) > _layer(module):
            wrong.append(f"{module}:{line} -> {target} "
                         f"({LAYERS[_layer(module)][0]} -> {LAYERS[_layer(target)][0]})")
    assert not wrong, "imports that run up the layers:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = {m: set() for m in MODULES}
    for module, _, target, _ in _internal_edges():
        # a package's __init__ importing its own modules is an edge too: a module that
        # imported a name through its own package's __init__ would close a circle
        if target != module:
            graph[module].add(target)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", ["features.extract", "features.codebook",
                                     "features.encodings"])
def test_arrays_in_arrays_out_below_the_store(package):
    wrong = []
    for module in MODULES:
        if not (module == package or module.startswith(package + ".")):
            continue
        for line, target, _ in _imports(module):
            if target.split(".")[0] in HEAVY:
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("package, forbidden", [
    ("features.store", ("faiss", "features.sources", "features.decode")),
    ("features.index", ("features.sources", "features.decode")),
    ("features.serve", ("features.baseline", "features.demo", "features.cli")),
    ("features.baseline", ("features.serve", "features.demo", "features.cli")),
    ("features.demo", ("features.serve", "features.baseline", "features.cli")),
])
def test_packages_that_must_not_meet(package, forbidden):
    wrong = []
    for module in MODULES:
        if not (module == package or module.startswith(package + ".")):
            continue
        for line, target, _ in _imports(module):
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_of_another_package():
    wrong = []
    for module, line, target, name in _internal_edges():
        if _top_package(module) == _top_package(target):
            continue
        private_module = [p for p in target.split(".")[1:]
                          if p.startswith("_") and p not in ("_ext", "_shared")]
        if private_module or (name and name.startswith("_") and not name.startswith("__")):
            wrong.append(f"{module}:{line} takes {target}{'.' + name if name else ''}")
    assert not wrong, "private names of other packages:\n" + "\n".join(wrong)


def test_no_private_attribute_of_another_object():
    """``obj._attr`` only on ``self`` or ``cls``: a class that other code needs to drive
    gives it a public method (as ``Assigner`` does for k-means)."""
    wrong = []
    for module, (path, tree) in MODULES.items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                owner = node.value.id if isinstance(node.value, ast.Name) else None
                if owner in ("self", "cls") or (owner, node.attr) in STDLIB_PRIVATE_OK:
                    continue
                wrong.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    assert not wrong, "\n".join(wrong)


def test_compat_modules_only_re_export():
    for module, target in COMPAT.items():
        path, tree = MODULES[module]
        body = [n for n in tree.body if not (isinstance(n, ast.Expr)
                                             and isinstance(n.value, ast.Constant))]
        assert body and all(isinstance(n, ast.ImportFrom) for n in body), module
        _, imported, _ = next(_imports(module))
        assert imported == target, (module, imported)


def test_one_exception_hierarchy():
    """Every exception class of the package is defined in features/exceptions.py, under
    FeaturesError (an HTTP response the server builds is not an error of the library)."""
    from features import exceptions

    allowed = {("features.serve.app", "ApiError")}
    stray = []
    for module, (path, tree) in MODULES.items():
        if module == "features.exceptions":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(b).endswith(("Error", "Exception", "Died", "Locked"))
                    for b in node.bases) and (module, node.name) not in allowed:
                stray.append(f"{module}.{node.name}")
    assert not stray, stray
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, exceptions.FeaturesError), name


def test_import_is_light():
    """`import features` loads no heavy library; the public names load on first use."""
    code = ("import sys, features; "
            "heavy = [m for m in ('faiss', 'h5py', 'cv2', 'scipy', 'joblib', 'sklearn') "
            "if m in sys.modules]; "
            "assert not heavy, heavy; "
            "assert callable(features.sift) and 'cv2' in sys.modules; "
            "assert not {'faiss', 'h5py'} & set(sys.modules); "
            "features.Store; assert 'h5py' in sys.modules and 'faiss' not in sys.modules; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_documented_api_resolves():
    import features

    for name in features.__all__:
        assert getattr(features, name) is not None, name
    assert set(features.__all__) <= set(dir(features))
    with pytest.raises(AttributeError):
        features.no_such_name
