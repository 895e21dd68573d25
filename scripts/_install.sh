# Shared by scripts/serve and scripts/test: create .venv if needed and install the package with the given extras.
# A stamp (hash of pyproject.toml + extras) skips the install when nothing changed, so a second start is quick.
set -euo pipefail
EXTRAS="$1"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "scripts: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
STAMP=".venv/.voiceserver-installed"
WANT="$(cat pyproject.toml | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "scripts: installing voiceserver[$EXTRAS] (llama-cpp-python builds from source the first time: ~6 min)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi
