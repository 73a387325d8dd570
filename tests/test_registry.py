"""The method registry as the one place that names a method: its API (``register``,
``names``), the lists derived from it, the rule that no other module names a method, and
the import graph of the package (no cycles). Fast: nothing is trained."""

import ast
import sys

import ml_collections
import pytest

from adaptive_data import config_args, methods, validation
from adaptive_data.config_rules import Rule, integer

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "adaptive_data"


def _spec(name="tiny_test_method", summary="a test method", **fields):
    return methods.MethodSpec(name, lambda config, context: None, summary, **fields)


# ------------------------------------------------------------------ register / names


def test_register_adds_the_method_to_every_derived_list_and_unregister_removes_it():
    spec = _spec(
        defaults=lambda arg: ml_collections.ConfigDict({"size": 3}),
        rules=(Rule("tiny_test_method.size", *integer(1)),),
        scorer="lm_forward",
    )
    assert methods.register(spec) is spec
    try:
        assert methods.names()[-1] == "tiny_test_method"
        assert "tiny_test_method" in methods.names(selecting=True, needs_other_runs=False)
        config = config_args.load_config("configs/default.py:method=tiny_test_method,runlocal")
        assert config.tiny_test_method.size == 3
        validation.validate_config(config)
        config.tiny_test_method.size = 0
        with pytest.raises(validation.ConfigError, match=r"tiny_test_method.size=0: must be"):
            validation.validate_config(config)
    finally:
        methods.unregister("tiny_test_method")
    assert "tiny_test_method" not in methods.names()
    with pytest.raises(ValueError, match="config.method='tiny_test_method': must be one of"):
        validation.validate_config(config)


def test_register_refuses_a_duplicate_name():
    with pytest.raises(ValueError, match="'anograd' is already registered"):
        methods.register(_spec("anograd"))


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"name": "no spaces"}, "must be a Python identifier"),
        ({"scorer": "oracle"}, "scorer='oracle' must be one of"),
        ({"summary": ""}, "summary must be a non-empty"),
        ({"rules": [Rule("x.y", *integer(0))]}, "rules must be a tuple"),
        ({"needs_runs": {"workdir": methods.NeededRun("a run")}}, "needs_runs must map dotted"),
        ({"needs_runs": {"x.workdir": "a run"}}, "needs_runs must map dotted"),
        ({"defaults": {"a": 1}}, "defaults must be None or callable"),
        (
            {"diagnosis": "bogus"},
            r"diagnosis='bogus' must be one of \('', 'exact_scores', 'learned_weights'\)",
        ),
    ],
)
def test_register_refuses_a_malformed_spec_and_says_what_is_wrong(fields, message):
    fields = {"name": "tiny_test_method", **fields}
    spec = _spec(**fields)
    with pytest.raises(ValueError, match=message):
        methods.register(spec)
    assert "tiny_test_method" not in methods.METHODS
    with pytest.raises(TypeError, match="takes an adaptive_data.methods.MethodSpec"):
        methods.register({"name": "x"})


def test_the_preflight_verdict_of_each_built_in_method():
    """The exact-score filters share one verdict, the methods learning weights online
    another; the rest rest on no gradient alignment with the target, so the test says
    nothing about them."""
    families = {}
    for name, spec in methods.METHODS.items():
        families.setdefault(spec.diagnosis, set()).add(name)
    assert methods.DIAGNOSES == ("", "exact_scores", "learned_weights")
    assert families["exact_scores"] == {"align_filter", "l2rw"}
    assert families["learned_weights"] == {"anograd", "soba", "dds"}
    assert {"base", "mixing", "finetune", "classifier", "dsir", "cds", "rho"} <= families[""]


def test_needs_other_runs_is_exactly_the_methods_with_workdir_keys():
    needing = set(methods.names(needs_other_runs=True))
    assert needing == {n for n, s in methods.METHODS.items() if s.needs_runs}
    assert needing == {"finetune", "cds", "rho"}  # the built-ins that chain after other runs
    assert set(methods.names(needs_other_runs=False)) | needing == set(methods.METHODS)
    # Each needed workdir is refused empty, and a reading run of a reserved-shard
    # reference without a reserved shard (rho's); both accepted once given.
    for name in needing:
        spec = methods.METHODS[name]
        config = config_args.load_config(f"configs/default.py:method={name},runlocal")
        lines = validation.violations(config)
        reserved = any(need.reserved_shard for need in spec.needs_runs.values())
        assert {line.split("=")[0] for line in lines} == {
            f"config.{key}" for key in spec.needs_runs
        } | ({"config.data.reserved_fraction"} if reserved else set())
        config.data.reserved_fraction = 0.2
        for key in spec.needs_runs:
            block, field = key.split(".")
            config[block][field] = "/some/run"
        assert validation.violations(config) == []
        config.data.generic_shard = "reserved"
        assert [line.split("=")[0] for line in validation.violations(config)] == (
            ["config.data.generic_shard"] if reserved else []
        )
    assert [
        n for n in needing if any(x.reserved_shard for x in methods.METHODS[n].needs_runs.values())
    ] == ["rho"]


def test_the_bench_scripts_default_method_lists_pass_validation():
    """benchlib.ALL_METHODS (bench_alignment's and bench_throughput's default --methods)
    must hold no method that needs other runs' workdirs: every default config validates."""
    sys.path.insert(0, str(REPO_ROOT / "experiments"))
    import benchlib

    assert benchlib.ALL_METHODS and set(benchlib.SELECTION_METHODS) <= set(benchlib.ALL_METHODS)
    for name in benchlib.ALL_METHODS:
        validation.validate_config(
            config_args.load_config(f"configs/default.py:method={name},runlocal")
        )


# ------------------------------------------------------------------ no other module names a method


def _docstring_nodes(tree):
    nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                nodes.add(id(body[0].value))
    return nodes


# Where a method's name may appear as a string literal (docstrings and comments aside):
# a method's own module (``adaptive_data/methods/<name>.py``: its name, and the methods
# whose objectives it reuses, e.g. domain_mixture's hypergradient objective ``anograd``),
# and the core modules that implement the maths (e.g. those objectives, core/mixture.py).
# Experiments may name the roles every comparison has: the baselines ``base`` and
# ``mixing`` and the ``finetune`` stage; and an experiment's design, the methods it chose
# to compare, as a module-level constant named ``*_METHODS`` (a choice of what to run,
# never a rule of how a method runs: no ``if method == ...``).
MAY_NAME_METHODS = ("adaptive_data/core/",)
METHOD_MODULES = "adaptive_data/methods/"
PROTOCOL_ROLES = {"base", "mixing", "finetune"}


def _design_nodes(tree):
    """Ids of the constants inside module-level ``SOMETHING_METHODS = (...)`` assignments."""
    nodes = set()
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id.endswith("_METHODS") for t in statement.targets
        ):
            nodes.update(id(n) for n in ast.walk(statement.value))
    return nodes


def test_no_module_but_its_own_and_core_names_a_method():
    registered = set(methods.names())
    offenders = []
    files = sorted(PACKAGE.rglob("*.py")) + sorted((REPO_ROOT / "experiments").rglob("*.py"))
    for path in files:
        rel = path.relative_to(REPO_ROOT).as_posix()
        if rel.startswith(MAY_NAME_METHODS):
            continue
        # base is every comparison's reference: step_cost prices methods against it.
        allowed = PROTOCOL_ROLES if rel.startswith("experiments/") else {"base"}
        if rel.startswith(METHOD_MODULES) and path.stem in registered:
            continue
        tree = ast.parse(path.read_text())
        exempt = _docstring_nodes(tree)
        if rel.startswith("experiments/"):
            exempt |= _design_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in registered - allowed
                and id(node) not in exempt
            ):
                offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not offenders, (
        "Method names outside their own modules (derive the list from adaptive_data.methods."
        "names(...) or read the spec instead):\n" + "\n".join(offenders)
    )


# ------------------------------------------------------------------ import graph


def _modules(root=REPO_ROOT, package=PACKAGE):
    """Dotted module name -> file, for every module of ``package`` (a folder under
    ``root``)."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(path, modules):
    """The package modules ``path`` imports anywhere: at import time or inside its
    functions (an import inside a function closes a circle as surely, only later);
    ``from a.b import c`` imports ``a.b.c`` when that is a module, else ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules}


def _import_cycles(modules):
    """Every chain ``a -> b -> ... -> a`` of imports between ``modules`` (a package's
    submodules importing the package itself left out: Python imports it first)."""
    graph = {}
    for name, path in modules.items():
        ancestors = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        graph[name] = _imports(path, modules) - ancestors - {name}
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], {start}
        while stack:
            node, chain = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(chain + (start,)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, chain + (nxt,)))
    return cycles


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    cycles = _import_cycles(_modules())
    assert not cycles, "Import cycles:\n" + "\n".join(sorted(cycles))


def test_the_cycle_check_sees_an_import_inside_a_function(tmp_path):
    """The check itself, on a two-module package whose circle closes inside a function
    (the shape of the old embedded_corpus <-> sources circle)."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def load():\n    from pkg.a import thing\n")
    assert sorted(_import_cycles(_modules(tmp_path, package))) == [
        "pkg.a -> pkg.b -> pkg.a",
        "pkg.b -> pkg.a -> pkg.b",
    ]


def test_registry_and_config_rules_do_not_import_validation():
    modules = _modules()
    for name in ("adaptive_data.methods.registry", "adaptive_data.config_rules"):
        assert "adaptive_data.validation" not in _imports(modules[name], modules)


def test_every_module_of_a_method_package_is_imported_without_a_list(tmp_path, monkeypatch):
    """A new method module registers by being in the package: ``import_submodules``
    imports the modules no import line names (the way adaptive_data.methods finds one)."""
    from adaptive_data.methods import registry

    package = tmp_path / "discovered_methods"
    package.mkdir()
    (package / "__init__.py").write_text("SEEN = []\n")
    for name in ("zeta", "alpha"):
        (package / f"{name}.py").write_text(
            f"from discovered_methods import SEEN\nSEEN.append({name!r})\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    import discovered_methods

    imported = registry.import_submodules("discovered_methods", discovered_methods.__path__)
    assert imported == ["discovered_methods.alpha", "discovered_methods.zeta"]
    assert discovered_methods.SEEN == ["alpha", "zeta"]
    registry.import_submodules("discovered_methods", discovered_methods.__path__)
    assert discovered_methods.SEEN == ["alpha", "zeta"]  # imported once


def test_each_method_module_of_the_package_registered_its_method():
    package = REPO_ROOT / "adaptive_data" / "methods"
    mechanics = {"__init__", "builders", "registry", "step", "types"}
    modules = {p.stem for p in package.glob("*.py")} - mechanics
    assert modules and modules <= set(methods.METHODS)
