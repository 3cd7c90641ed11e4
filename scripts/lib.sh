# Shared by scripts/quickstart.sh and scripts/test.sh.

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

APT_UPDATED=
apt_install() {
  command -v apt-get >/dev/null || { echo "Please install: $*" >&2; return 1; }
  [ -n "$APT_UPDATED" ] || { as_root apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Create .venv with Python 3.11+ and install a requirements file into it (pip reuses its cache).
ensure_venv() {
  local req="$1" py="${PYTHON:-python3}"
  "$py" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "VSM needs Python 3.11 or newer (found $("$py" --version 2>&1))" >&2; exit 1; }
  if [ ! -x .venv/bin/python ]; then
    step "Creating the virtual environment .venv"
    "$py" -m venv .venv 2>/dev/null || { apt_install python3-venv && "$py" -m venv .venv; }
  fi
  step "Installing Python packages from $req"
  # A download cut short or altered on the way fails pip's hash check; the second try skips
  # pip's cache and fetches every file again.
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req" \
    || { echo "pip failed; trying once more without its cache" >&2
         .venv/bin/python -m pip install -q --disable-pip-version-check --no-cache-dir -r "$req"; }
}
