"""Driving a notebook in a browser with Playwright: open, Run All, run one cell, wait for the kernel, read outputs.

One page-driver class per front end: `LabPage` (a JupyterLab tab) and `Notebook7Page` (Notebook 7's one-notebook
page). Notebook 7 is built from JupyterLab's components, so the cells, outputs, menus and widgets carry the same
classes, and with `expose_app_in_browser` both put the application at `window.jupyterapp`, whose
`shell.currentWidget` is the notebook panel; what differs is the URL of a notebook and one known page error.

Selectors follow the project's browser-testing notes (JupyterLab 4.6, Notebook 7.6, ipywidgets 8). Text checks look
only inside `.jp-OutputArea-output`, never at the whole notebook, because cell sources contain the same words.
"""
import os, re, time
from pathlib import Path

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
# The kernel of the current notebook tab is connected and idle (the toolbar indicator already reads "idle" while
# the kernel is still starting, so ask the session itself; needs the server's expose_app_in_browser).
KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""


class LabPage:
    "One notebook open in a JupyterLab tab of `page` (the server started with --LabApp.expose_app_in_browser)."
    name, app_name = 'lab', 'JupyterLab'
    # page errors the front end itself raises, whatever the notebook does (regexes)
    known_page_errors = ()

    def __init__(self, page, url: str, token: str, path: str, artifacts: Path):
        self.page, self.url, self.token, self.path, self.artifacts = page, url, token, path, Path(artifacts)

    # -- opening and screenshots
    def notebook_url(self) -> str:
        "The notebook in a reset workspace (no restored tabs)."
        return f'{self.url}/lab/tree/{self.path}?token={self.token}&reset'

    def open(self, timeout: float = 60) -> 'LabPage':
        "Open the notebook and wait for its kernel to be connected and idle."
        self.page.goto(self.notebook_url(), timeout=timeout * 1000)
        self.page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=timeout * 1000)
        self.page.wait_for_function(KERNEL_IDLE, timeout=timeout * 1000)
        app = self.page.evaluate('() => window.jupyterapp.name')
        assert app == self.app_name, f'{self.notebook_url()} opened {app!r}, not {self.app_name!r}'
        return self

    def artifact(self, name: str) -> Path:
        "The path of artifacts/browser/<front end>-<name>."
        return self.artifacts / f'{self.name}-{name}'

    def screenshot(self, name: str, locator=None) -> Path:
        "Save a screenshot of the page (or of `locator`) as artifacts/browser/<front end>-<name>.png."
        path = self.artifact(f'{name}.png')
        (locator or self.page).screenshot(path=str(path))
        return path

    def page_errors(self, errors) -> list:
        "The page errors in `errors` that are not the front end's own known ones."
        return [e for e in errors if not any(re.search(rx, e) for rx in self.known_page_errors)]

    # -- cells
    @property
    def cells(self):
        return self.page.locator('.jp-Notebook .jp-Cell')

    def cell(self, index: int):
        return self.cells.nth(index)

    def sources(self) -> list:
        "`(cell_type, source)` of every cell, from the notebook model (what the editors hold)."
        return [tuple(c) for c in self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells"
            ".map(c => [c.cell_type, c.getSource()])")]

    def find_cell(self, text: str, exact: bool = False) -> int:
        "Index of the only code cell whose source contains `text` (with `exact`, is `text` but for blank ends)."
        found = [i for i, (kind, src) in enumerate(self.sources())
                 if kind == 'code' and (src.strip() == text if exact else text in src)]
        assert len(found) == 1, f'{len(found)} code cells contain {text!r}'
        return found[0]

    def outputs(self, index: int) -> list:
        "The visible text of each output of cell `index`."
        return self.cell(index).locator('.jp-OutputArea-output').all_inner_texts()

    def model_outputs(self) -> list:
        "Every cell's outputs as nbformat dicts, from the notebook model."
        return self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells"
            ".map(c => c.cell_type === 'code' ? c.getOutputs() : [])")

    def execution_counts(self) -> list:
        "The execution count of every code cell (None for a cell that did not run), from the model."
        return self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells"
            ".map(c => c.cell_type === 'code' ? c.execution_count : null)")

    def src(self, index: int, selector: str):
        "The `src` of the first element matching `selector` in cell `index` (an Image widget's blob URL), or None."
        found = self.cell(index).locator(selector)
        if not found.count(): return None
        try: return found.first.get_attribute('src', timeout=1000)
        except Exception: return None           # replaced between the two calls: the panel just finished

    def drag(self, locator, dx: float, steps: int = 8) -> None:
        "Drag the centre of `locator` by `dx` pixels to the right (negative: left) with the mouse."
        box = locator.bounding_box()
        x, y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
        self.page.mouse.move(x, y)
        self.page.mouse.down()
        self.page.mouse.move(x + dx, y, steps=steps)
        self.page.mouse.up()

    # -- running
    def _busy_prompts(self) -> int:
        return self.page.locator('.jp-Notebook .jp-InputPrompt', has_text='*').count()

    def _idle(self) -> bool:
        return self._busy_prompts() == 0 and self.page.evaluate(KERNEL_IDLE)

    def wait_idle(self, timeout: float = 60, settle: float = 0.3) -> None:
        "Wait until no cell is running or queued and the kernel is idle (twice, `settle` s apart)."
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._idle():
                time.sleep(settle)
                if self._idle(): return
            time.sleep(0.1)
        raise TimeoutError(f'the notebook was still running after {timeout} s')

    def run_all(self) -> None:
        "Run All Cells from the Run menu (the kernel keeps its state)."
        self.page.click('.lm-MenuBar-itemLabel:text-is("Run")')
        self.page.click('.lm-Menu-itemLabel:text-is("Run All Cells")')

    def select(self, index: int) -> None:
        "Make cell `index` the active cell, in command mode."
        self.cell(index).locator('.jp-InputArea-editor').click()
        self.page.keyboard.press('Escape')

    def run_cell(self, index: int) -> None:
        "Run cell `index` (Shift+Enter), without waiting for it."
        self.select(index)
        self.page.keyboard.press('Shift+Enter')

    def run_from(self, index: int) -> None:
        "Run cell `index` and every cell below it (Run > Run Selected Cell and All Below)."
        self.select(index)
        self.page.click('.lm-MenuBar-itemLabel:text-is("Run")')
        self.page.click('.lm-Menu-itemLabel:text-is("Run Selected Cell and All Below")')

    def wait_output(self, index: int, pattern: str, timeout: float = 30) -> str:
        "Wait until an output of cell `index` matches the regex `pattern`; return that output's text."
        deadline, rx = time.monotonic() + timeout, re.compile(pattern)
        while time.monotonic() < deadline:
            for text in self.outputs(index):
                if rx.search(text): return text
            time.sleep(0.1)
        raise TimeoutError(f'no output of cell {index} matched {pattern!r} within {timeout} s: {self.outputs(index)}')


class Notebook7Page(LabPage):
    """One notebook open in Notebook 7 (`jupyter notebook`, started with
    --JupyterNotebookApp.expose_app_in_browser): its page at /notebooks/<path> shows that notebook alone, with the
    same menu bar (Run > Run All Cells, Run Selected Cell and All Below) and the same cell and output classes."""
    name, app_name = 'notebook', 'Jupyter Notebook'
    # Notebook 7.6.5 with JupyterLab 4.6 packages: when its /notebooks/ (and /tree) router loads the document
    # manager's settings, the shortcuts extension's pluginChanged handler reads `plugins[id].schema` of a plugin its
    # registry does not hold yet, on every page load, before any cell runs (found with the debugger: id
    # '@jupyterlab/docmanager-extension:plugin'). It changes nothing on the page.
    known_page_errors = (r"^Cannot read properties of undefined \(reading 'schema'\)$",)

    def notebook_url(self) -> str:
        return f'{self.url}/notebooks/{self.path}?token={self.token}'


FRONT_ENDS = {'lab': LabPage, 'notebook': Notebook7Page}


def error_outputs(outputs_per_cell) -> list:
    "`(cell index, 'ename: evalue')` of every error output."
    return [(i, f"{o.get('ename')}: {o.get('evalue')}")
            for i, outs in enumerate(outputs_per_cell) for o in outs if o.get('output_type') == 'error']
