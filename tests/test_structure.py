"""The package's shape (issue 9): imports go one way down the layers of DESIGN.md, at any depth, with no cycle;
no module is over 500 lines and no function over 60; every training entry point has its awaitable twin."""
import ast, inspect
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / 'fastcb_nb'

# The layers, bottom first. A module may import only modules that come before it in this list.
LAYERS = [['core'], ['progress', 'optim', 'callback'], ['data', 'losses', 'metrics'], ['loop'], ['recorder'], ['learner'],
          ['testing'], ['lr_finder'], ['schedule'], ['tracker'], ['fp16'], ['callbacks'],
          ['inference'], ['hooks'], ['mixup', 'misc'], ['tensorboard'], ['trace', 'backup'], ['distributed'], ['demo'],
          ['canvas'], ['panel'], ['picker'], ['preview'], ['widgets'], ['magics'], ['all']]
TOP = {'__init__'}                        # the package itself gathers the chapters that extend Learner
GENERATED = {'_modidx'}                   # nbdev's symbol index, not code


def level(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer: return i
    raise KeyError(name)


def package_imports(path: Path) -> list:
    "`(line, imported module)` for every import of a fastcb_nb module in `path`, at any depth (functions included)."
    tree, out = ast.parse(path.read_text()), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module: out.append((node.lineno, node.module.split('.')[0]))
            elif node.level == 1: out += [(node.lineno, a.name) for a in node.names]        # from . import x
            elif node.module and node.module.split('.')[0] == 'fastcb_nb':
                parts = node.module.split('.')
                if len(parts) > 1: out.append((node.lineno, parts[1]))
                else: out += [(node.lineno, a.name) for a in node.names]                   # from fastcb_nb import x
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split('.')
                if parts[0] == 'fastcb_nb' and len(parts) > 1: out.append((node.lineno, parts[1]))
    return out


MODULES = sorted(p.stem for p in PKG.glob('*.py') if p.stem not in GENERATED)


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if m not in TOP and not any(m in layer for layer in LAYERS)]
    assert not missing, f"modules without a layer in tests/test_structure.py: {missing}"


@pytest.mark.parametrize('module', [m for m in MODULES if m not in TOP])
def test_imports_go_down_the_layers(module):
    bad = [(line, target) for line, target in package_imports(PKG / f'{module}.py')
           if target not in GENERATED and (target in TOP or level(target) >= level(module))]
    assert not bad, f"{module} imports {', '.join(f'{t} (line {l})' for l, t in bad)}: not a lower layer"


def test_no_import_cycle():
    graph = {m: {t for _, t in package_imports(PKG / f'{m}.py') if t in MODULES} for m in MODULES if m not in TOP}
    state = {}
    def visit(m, path):
        if state.get(m) == 'done': return
        assert state.get(m) != 'open', 'import cycle: ' + ' -> '.join(path + [m])
        state[m] = 'open'
        for t in graph.get(m, ()): visit(t, path + [m])
        state[m] = 'done'
    for m in graph: visit(m, [])


def test_the_checker_sees_upward_and_function_level_imports(tmp_path):
    probe = tmp_path / 'probe.py'
    probe.write_text("from .core import *\ndef f():\n    from fastcb_nb.widgets import ShowGraph\n"
                     "    import fastcb_nb.magics\nfrom . import schedule as s\n")
    assert sorted(t for _, t in package_imports(probe)) == ['core', 'magics', 'schedule', 'widgets']


@pytest.mark.parametrize('module', MODULES)
def test_module_and_function_sizes(module):
    text = (PKG / f'{module}.py').read_text()
    assert len(text.splitlines()) <= 500, f"{module}.py has {len(text.splitlines())} lines (at most 500)"
    long = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"functions over 60 lines in {module}.py: {long}"


def test_learner_methods_without_importing_their_chapters_first():
    "`from fastcb_nb.learner import Learner` alone gives the methods later chapters add (the package gathers them)."
    import subprocess, sys
    code = ("from fastcb_nb.learner import Learner\n"
            "names = ['fit', 'afit', 'fit_one_cycle', 'afit_one_cycle', 'lr_find', 'alr_find', 'fit_fc', 'afit_fc',\n"
            "         'clip_grad', 'to_fp16', 'to_distributed', 'lr_find_picker']\n"
            "missing = [n for n in names if not hasattr(Learner, n)]\n"
            "assert not missing, missing\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=PKG.parent)
    assert r.returncode == 0, r.stderr


def test_entry_points_have_one_definition_and_an_awaitable_twin():
    from fastcb_nb.learner import Learner
    for name in ('fit', 'fit_one_cycle', 'fit_fc', 'lr_find'):
        sync, twin, gen = getattr(Learner, name), getattr(Learner, 'a' + name), getattr(Learner, name + '_gen')
        assert sync.awaitable is twin and sync.generator is gen and inspect.iscoroutinefunction(twin)
        assert inspect.signature(sync) == inspect.signature(twin) == inspect.signature(gen)
