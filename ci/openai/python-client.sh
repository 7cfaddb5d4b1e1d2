#!/usr/bin/env bash
# The official `openai` Python client, in a virtual environment of its own (PyPI is reachable
# here; nothing else is): prints the path of its python. The OpenAI-compatibility test runs
# the client through it (VERITAS_OPENAI_PYTHON). Cached: a second run does no work.
set -euo pipefail
OPENAI_VERSION=3.60.0
venv=${VERITAS_PY_CACHE:-/var/cache/veritas-py}/openai-$OPENAI_VERSION
log() { echo "ci/openai/python-client.sh: $*" >&2; }

if ! "$venv/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" 2>/dev/null; then
  log "installing openai $OPENAI_VERSION from PyPI into $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_VERSION" >&2
  "$venv/bin/python" -c "import openai; print('openai', openai.__version__)" >&2
fi
echo "$venv/bin/python"
