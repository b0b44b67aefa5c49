#!/usr/bin/env bash
# One-command set-up: find Python 3.12, make .venv, install dp_screen with its dev extra.
# Usage: bash scripts/setup.sh   (VENV=path to choose another folder)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"

find_python312() {
  for cand in python3.12 "$(command -v pyenv >/dev/null 2>&1 && PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null)" \
              "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$cand" ] || continue
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  return 1
}

PY="$(find_python312)" || { echo "error: Python 3.12 not found (tried python3.12 on PATH and ~/.pyenv/versions/3.12*)" >&2; exit 1; }
echo "using $PY"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() {
  # pip prints a warning per package for this machine's absent local mirrors; show everything but those lines
  local log status
  log="$(mktemp)"
  status=0
  "$VENV/bin/python" -m pip install --quiet "$@" >"$log" 2>&1 || status=$?
  grep -v "is ignored: it is neither a file nor a directory" "$log" || true
  rm -f "$log"
  return $status
}
pip_install --upgrade pip
pip_install -e ".[dev]"
"$VENV/bin/python" -c "import dp_screen, mace, torch_sim; print('dp_screen', dp_screen.__version__, 'installed in $VENV')"
