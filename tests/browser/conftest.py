"""Fixtures for the real-browser tests. `tests/browser/run.sh` starts JupyterLab and sets FCB_LAB_URL,
FCB_LAB_TOKEN, FCB_LAB_ROOT and FCB_ARTIFACTS; without them (a plain `pytest tests`) these tests are skipped."""
import os, sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_page import CHROMIUM, CHROMIUM_ARGS, NotebookPage

LAB_URL, LAB_TOKEN = os.environ.get('FCB_LAB_URL'), os.environ.get('FCB_LAB_TOKEN')
ARTIFACTS = Path(os.environ.get('FCB_ARTIFACTS', 'artifacts/browser'))


def pytest_collection_modifyitems(config, items):
    if LAB_URL and LAB_TOKEN: return
    skip = pytest.mark.skip(reason='needs JupyterLab: run tests/browser/run.sh')
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent: item.add_marker(skip)


@pytest.fixture(scope='session')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope='module')
def page(browser):
    "A fresh browser context and page, shared by the tests of one module; page errors are collected in `.errors`."
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={'width': 1400, 'height': 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.errors = []
    page.on('pageerror', lambda e: page.errors.append(str(e)))
    yield page
    context.close()


@pytest.fixture(scope='module')
def open_notebook(page):
    "`open_notebook(path)` opens a notebook of the served folder and returns its `NotebookPage`."
    def _open(path):
        return NotebookPage(page, LAB_URL, LAB_TOKEN, path, ARTIFACTS).open()
    return _open


@pytest.fixture(scope='session')
def lab_root() -> Path:
    "The folder JupyterLab serves (a copy: writing there never touches nbs/)."
    return Path(os.environ['FCB_LAB_ROOT'])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    "On a failing test, save a screenshot of its page as artifacts/browser/FAILED-<test>.png."
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get('page') if hasattr(item, 'funcargs') else None
    if report.when == 'call' and report.failed and page is not None:
        try: page.screenshot(path=str(ARTIFACTS / f'FAILED-{item.name}.png'))
        except Exception as e: report.sections.append(('screenshot', f'no screenshot: {e}'))
