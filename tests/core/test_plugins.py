"""Plugins found through real entry points of an installed test distribution."""

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from dnas_core.plugins.registry import PluginError, make_registry

GOOD = '''
from dataclasses import dataclass
from dnas_core import Domain, hookimpl

@dataclass
class S:
    size: int = 1

@hookimpl
def dnas_register_domains(register):
    register(Domain("alpha", S, default_cost="c"))
    register(Domain("beta", S, default_cost="c"))
'''
BROKEN = "raise ImportError('missing optional dependency frobnicate')\n"
UNKNOWN_HOOK = '''
from dnas_core import hookimpl

@hookimpl
def dnas_make_supernett(domain, settings, data_info):
    return None
'''
BAD_ARGS = '''
from dnas_core import hookimpl

@hookimpl
def dnas_make_task(domain, settings, data_info, extra):
    return None
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    pkg = root / "dnas_testplugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, code in {"good": GOOD, "broken": BROKEN, "unknown": UNKNOWN_HOOK,
                       "badargs": BAD_ARGS}.items():
        (pkg / f"{name}.py").write_text(code)
    (root / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "dnas-testplugins"
        version = "1.2.3"
        [project.entry-points.dnas]
        good = "dnas_testplugins.good"
        broken = "dnas_testplugins.broken"
        unknown = "dnas_testplugins.unknown"
        badargs = "dnas_testplugins.badargs"
        [tool.setuptools]
        packages = ["dnas_testplugins"]
    '''))
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(root)],
                   check=True)
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))


def test_entry_point_plugin_registers_several_domains(installed, monkeypatch):
    monkeypatch.setenv("DNAS_PLUGINS", "good")
    registry = make_registry()
    info = registry.plugins["good"]
    assert info.error is None
    assert (info.version, info.distribution) == ("1.2.3", "dnas-testplugins")
    assert info.domains == ["alpha", "beta"] and info.hooks == ["dnas_register_domains"]
    assert registry.domain("alpha").plugin == "good"
    with pytest.raises(PluginError, match="several domains; choose one of alpha, beta"):
        registry.domain("good")


def test_broken_plugins_are_reported_and_the_others_still_work(installed, monkeypatch):
    monkeypatch.setenv("DNAS_PLUGINS", "good,broken,unknown,badargs")
    registry = make_registry()
    errors = registry.errors()
    assert "missing optional dependency frobnicate" in errors["broken"]
    assert "dnas_testplugins.broken" in errors["broken"]
    assert "unknown hook 'dnas_make_supernett'" in errors["unknown"]
    assert "extra" in errors["badargs"]
    assert set(registry.domains) == {"alpha", "beta"}
    with pytest.raises(PluginError, match="plugin 'broken' is not usable: failed to import"):
        registry.domain("broken")


def test_duplicate_domain_is_rejected(installed, monkeypatch):
    monkeypatch.setenv("DNAS_PLUGINS", "good")
    copy = types.ModuleType("copycat")
    exec(GOOD, copy.__dict__)  # another plugin registering the same domain names
    registry = make_registry([copy])
    assert registry.errors()["copycat"] == \
        "domain 'alpha' is already registered by plugin 'good'"
    assert registry.domain("alpha").plugin == "good"


def test_empty_filter_loads_nothing(monkeypatch):
    monkeypatch.setenv("DNAS_PLUGINS", "")
    assert make_registry().plugins == {}


def _dnas(*args, modules="tests.core.clash_plugin"):
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DNAS_PLUGINS": "", "DNAS_PLUGIN_MODULES": modules,
           "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "dnas_cli.main", *args], capture_output=True,
                          text=True, env=env, cwd=root, timeout=120)


def test_a_plugin_cannot_replace_a_core_command():
    done = _dnas("search", "--help")
    assert done.returncode == 0
    assert "HIJACKED" not in done.stdout and "--experiment" in done.stdout
    assert ("warning: plugin 'tests.core.clash_plugin': command 'search' not added: the name "
            "is taken by a core command") in done.stderr
    assert _dnas("hello").stdout == "hello from the plugin\n"  # its other command is added
    listed = _dnas("plugins")
    assert "warning: command 'search' not added" in listed.stdout
    infos = json.loads(_dnas("plugins", "--json").stdout)
    assert infos[0]["notes"] == ["command 'search' not added: the name is taken by a core "
                                 "command"]
