#!/usr/bin/env bash
# Install what the tests need and run the whole suite twice: on SQLite with the ORM broker,
# and on PostgreSQL with the Redis broker (servers at 127.0.0.1:5432 and :6379; installed
# and started here when missing and we may use apt). Extra arguments go to pytest.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -k jobs         # a subset, on both databases
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command -v chromium >/dev/null || { step "Installing Chromium for the browser tests"; apt_install chromium; }
# Chinese text and emoji in the browser tests' screenshots (the user guide shows them).
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || ! command -v apt-get >/dev/null || { step "Installing CJK and emoji fonts for the screenshots"
  apt_install fonts-noto-cjk fonts-noto-color-emoji || echo "Fonts not installed: screenshots show boxes for Chinese."; }
# llama-cpp-python compiles llama.cpp from source. Built for this CPU's newest instructions (its
# default), it has segfaulted in decode on machines with AMX / AVX-512; a build for AVX2 runs on
# every x86-64 machine of the last decade. A wheel already in pip's cache is checked, and rebuilt
# once if it crashes.
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
[ "$(uname -m)" = x86_64 ] && export CMAKE_ARGS="${CMAKE_ARGS:-$LLAMA_CMAKE_ARGS}"
ensure_venv requirements-dev.txt
if ! .venv/bin/python scripts/llama_smoke.py; then
  step "Rebuilding llama-cpp-python for AVX2 (the build in pip's cache crashed on this CPU)"
  .venv/bin/python -m pip cache remove llama_cpp_python >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q --disable-pip-version-check --force-reinstall --no-deps \
    "$(grep -i '^llama-cpp-python' requirements-dev.txt | sed 's/\[server\]//')"
  .venv/bin/python scripts/llama_smoke.py || { echo "llama-cpp-python crashes on this machine" >&2; exit 1; }
fi
bash scripts/gguf_converter.sh  # llama.cpp's GGUF converter, in its own folder (see the script)

PG_URL="${VSM_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS_URL="${VSM_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"

pg_up() { .venv/bin/python -c "import psycopg,sys; psycopg.connect(sys.argv[1].replace('postgres://','postgresql://',1), connect_timeout=3).close()" "$PG_URL" 2>/dev/null; }
redis_up() { .venv/bin/python -c "import redis,sys; redis.from_url(sys.argv[1], socket_timeout=3).ping()" "$REDIS_URL" 2>/dev/null; }

if ! pg_up; then
  step "Starting PostgreSQL"
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql
    PG_URL="${VSM_TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/test}"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | tail -1)" main start || true
  sleep 2
  as_root su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
  as_root su postgres -c "createdb test" >/dev/null 2>&1 || true
  pg_up || { echo "PostgreSQL is not reachable at $PG_URL (set VSM_TEST_POSTGRES_URL)" >&2; exit 1; }
fi
if ! redis_up; then
  step "Starting Redis"
  command -v redis-server >/dev/null || apt_install redis-server
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  sleep 1
  redis_up || { echo "Redis is not reachable at $REDIS_URL (set VSM_TEST_REDIS_URL)" >&2; exit 1; }
fi

unset DATABASE_URL VSM_BROKER DJANGO_SETTINGS_MODULE
step "Test suite on SQLite with the ORM broker"
.venv/bin/python -m pytest "$@"
step "Test suite on PostgreSQL with the Redis broker"
DATABASE_URL="$PG_URL" VSM_BROKER="$REDIS_URL" .venv/bin/python -m pytest "$@"
