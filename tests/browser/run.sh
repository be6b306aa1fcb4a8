#!/usr/bin/env bash
# Real-browser tests: start JupyterLab headless on 127.0.0.1 (free port, random token, config/settings/workspaces/
# runtime in a temporary folder), wait until it answers, run the Playwright tests in tests/browser against it, and
# always stop it. Screenshots and the server log go to artifacts/browser/. Extra arguments go to pytest.
# Needs Debian's chromium (CHROMIUM, default /usr/bin/chromium); never runs `playwright install`.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PY=${PYTHON:-python}
ART=$ROOT/artifacts/browser
mkdir -p "$ART"
rm -f "$ART"/*.png "$ART"/lab.log

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fcb-browser.XXXXXX")
LAB_PID=""
stop_lab() {
  if [ -n "$LAB_PID" ] && kill -0 "$LAB_PID" 2>/dev/null; then
    kill -TERM "$LAB_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$LAB_PID" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$LAB_PID" 2>/dev/null || true
  fi
  [ -f "$TMP/lab.log" ] && cp "$TMP/lab.log" "$ART/lab.log"
  rm -rf "$TMP"
}
trap stop_lab EXIT
trap 'exit 130' INT TERM

# Isolated JupyterLab: no cell virtualisation (off-screen cells stay in the DOM), no news pop-up, fresh workspace.
CFG=$TMP/cfg
mkdir -p "$CFG/lab-settings/@jupyterlab/notebook-extension" "$CFG/lab-settings/@jupyterlab/apputils-extension" \
         "$CFG/ws" "$CFG/rt" "$TMP/ipython" "$TMP/root"
echo '{ "windowingMode": "none" }' > "$CFG/lab-settings/@jupyterlab/notebook-extension/tracker.jupyterlab-settings"
echo '{ "fetchNews": "false", "checkForUpdates": false }' \
  > "$CFG/lab-settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
export JUPYTER_CONFIG_DIR=$CFG JUPYTERLAB_SETTINGS_DIR=$CFG/lab-settings JUPYTERLAB_WORKSPACES_DIR=$CFG/ws \
       JUPYTER_RUNTIME_DIR=$CFG/rt IPYTHONDIR=$TMP/ipython
# The kernel imports this checkout's package, whatever is installed.
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

# The notebooks are served from a copy, so that JupyterLab's autosave never writes outputs into nbs/.
cp "$ROOT/nbs/10_tutorial.ipynb" "$TMP/root/"

PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
TOKEN=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
"$PY" -m jupyterlab --no-browser --allow-root --ip=127.0.0.1 --port="$PORT" \
  --IdentityProvider.token="$TOKEN" --ServerApp.root_dir="$TMP/root" --LabApp.expose_app_in_browser=True \
  > "$TMP/lab.log" 2>&1 &
LAB_PID=$!

# Ready when /api/status answers; give up after 60 s or when the server exits.
if ! "$PY" - "$PORT" "$TOKEN" "$LAB_PID" <<'PY'; then
import os, sys, time, urllib.request
port, token, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    try: os.kill(pid, 0)
    except OSError: sys.exit("JupyterLab exited during start-up")
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2).read()
        sys.exit(0)
    except OSError: time.sleep(0.2)
sys.exit("JupyterLab did not answer within 60 s")
PY
  echo "JupyterLab did not become ready on 127.0.0.1:$PORT; its log:" >&2
  tail -n 50 "$TMP/lab.log" >&2
  exit 1
fi
echo "JupyterLab ready on 127.0.0.1:$PORT (pid $LAB_PID)"

export FCB_LAB_URL="http://127.0.0.1:$PORT" FCB_LAB_TOKEN=$TOKEN FCB_LAB_ROOT=$TMP/root FCB_ARTIFACTS=$ART
set +e
"$PY" -m pytest "$ROOT/tests/browser" -q -p no:cacheprovider "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "the browser suite ran no tests" >&2; rc=1; fi
exit $rc
