"""Fixtures for the real-browser tests. `tests/browser/run.sh` starts a JupyterLab server and a Notebook 7 server and
sets, for each front end it started, FCB_<FRONT END>_URL and FCB_<FRONT END>_ROOT (front ends: `lab`, `notebook`),
plus FCB_JUPYTER_TOKEN and FCB_ARTIFACTS; without them (a plain `pytest tests`) these tests are skipped.

Every test that uses `page` (or `open_notebook`) runs once per started front end: `frontend` is a module-scoped
parameter, so pytest runs a module's tests in file order against JupyterLab, then against Notebook 7."""
import os, sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_page import CHROMIUM, CHROMIUM_ARGS, FRONT_ENDS

TOKEN = os.environ.get('FCB_JUPYTER_TOKEN')
SERVERS = {name: os.environ[f'FCB_{name.upper()}_URL'] for name in FRONT_ENDS
           if os.environ.get(f'FCB_{name.upper()}_URL')}
ARTIFACTS = Path(os.environ.get('FCB_ARTIFACTS', 'artifacts/browser'))


def pytest_collection_modifyitems(config, items):
    if SERVERS and TOKEN: return
    skip = pytest.mark.skip(reason='needs JupyterLab / Notebook 7 servers: run tests/browser/run.sh')
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent: item.add_marker(skip)


@pytest.fixture(scope='module', params=list(SERVERS) or list(FRONT_ENDS))
def frontend(request) -> str:
    "The front end under test: 'lab' (JupyterLab) or 'notebook' (Notebook 7)."
    return request.param


@pytest.fixture(scope='session')
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope='module')
def page(browser, frontend):
    "A fresh browser context and page, shared by the tests of one module and front end; page errors in `.errors`."
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={'width': 1400, 'height': 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.errors = []
    page.on('pageerror', lambda e: page.errors.append(str(e)))
    yield page
    context.close()


@pytest.fixture(scope='module')
def open_notebook(page, frontend):
    "`open_notebook(path)` opens a notebook of the served folder in the front end and returns its page driver."
    def _open(path):
        return FRONT_ENDS[frontend](page, SERVERS[frontend], TOKEN, path, ARTIFACTS).open()
    return _open


@pytest.fixture(scope='module')
def server_root(frontend) -> Path:
    "The folder the front end's server serves (a copy, one per server: writing there never touches nbs/)."
    return Path(os.environ[f'FCB_{frontend.upper()}_ROOT'])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    "On a failing test, save a screenshot of its page as artifacts/browser/FAILED-<test>.png."
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get('page') if hasattr(item, 'funcargs') else None
    if report.when == 'call' and report.failed and page is not None:
        try: page.screenshot(path=str(ARTIFACTS / f'FAILED-{item.name}.png'))
        except Exception as e: report.sections.append(('screenshot', f'no screenshot: {e}'))
