"""Render nbs/index.ipynb to README.md without Quarto (standard library only, deterministic).

Markdown cells are copied; code cells become ```python fences with `#|` directive lines removed; cells marked
`#| hide` are dropped; plain-text outputs, when a cell has any, follow their cell in a ``` fence.

    python tools/render_readme.py [--check]
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    parts = []
    for cell in nb['cells']:
        src = ''.join(cell['source'])
        lines = src.splitlines()
        directives = [l.strip() for l in lines if l.strip().startswith('#|')]
        if any(d.replace(' ', '') in ('#|hide', '#|exporti') for d in directives): continue
        body = '\n'.join(l for l in lines if not l.strip().startswith('#|')).strip('\n')
        if cell['cell_type'] == 'markdown':
            parts.append(body)
        elif cell['cell_type'] == 'code' and body:
            parts.append(f'```python\n{body}\n```')
            for out in cell.get('outputs', []):
                text = out.get('text') or out.get('data', {}).get('text/plain')
                if text: parts.append('```\n' + ''.join(text).rstrip('\n') + '\n```')
    return '<!-- Generated from nbs/index.ipynb by tools/render_readme.py: edit the notebook, not this file. -->\n\n' \
        + '\n\n'.join(p for p in parts if p) + '\n'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = render(ROOT / 'nbs' / 'index.ipynb')
    target = ROOT / 'README.md'
    if '--check' in argv:
        if not target.exists() or target.read_text() != text:
            print('README.md is out of date: run python tools/render_readme.py'); return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
