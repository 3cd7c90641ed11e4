#!/usr/bin/env bash
# Install VSM and run it on the embedded defaults: SQLite and the ORM broker under ./var,
# a web server on http://127.0.0.1:8000 and one background worker. Ctrl-C stops both.
#
#   bash scripts/quickstart.sh            # install (first time), migrate, run
#   bash scripts/quickstart.sh --demo     # first the whole pipeline on the finance sample, then run
#   VSM_PORT=9000 bash scripts/quickstart.sh
#   VSM_DEMO_SAMPLE=manual bash scripts/quickstart.sh --demo   # the English drive manual instead
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv requirements.txt
bash scripts/gguf_converter.sh  # llama.cpp's GGUF converter, in its own folder (see the script)
export VSM_DATA_DIR="${VSM_DATA_DIR:-$PWD/var}"
mkdir -p "$VSM_DATA_DIR"
# A local instance: a secret key generated once and kept in the data dir, plain HTTP on localhost.
if [ -z "${SECRET_KEY:-}" ]; then
  [ -s "$VSM_DATA_DIR/secret_key" ] || (umask 077 && .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))' > "$VSM_DATA_DIR/secret_key")
  export SECRET_KEY="$(cat "$VSM_DATA_DIR/secret_key")"
fi
export ALLOWED_HOSTS="${ALLOWED_HOSTS:-localhost,127.0.0.1}"
export VSM_SECURE_COOKIES="${VSM_SECURE_COOKIES:-0}"
PORT="${VSM_PORT:-8000}"
BIND="${VSM_BIND:-127.0.0.1}"

step "Preparing the database and static files"
.venv/bin/python manage.py migrate --noinput -v0
.venv/bin/python manage.py collectstatic --noinput -v0
.venv/bin/python manage.py bootstrap

if [ "${1:-}" = "--demo" ]; then
  SAMPLE="${VSM_DEMO_SAMPLE:-finance}"
  if .venv/bin/python manage.py shell -c "from domains.pipeline import demo_done; import sys; sys.exit(0 if demo_done('demo') else 1)"; then
    echo "The demo domain is already built (run manage.py run_pipeline demo --resume to continue a stopped one)."
  else
    step "The whole pipeline on the $SAMPLE sample (embedded defaults, offline)"
    .venv/bin/python manage.py run_pipeline demo --sample "$SAMPLE" --owner admin \
      || echo "The pipeline stopped (see above). Fix the cause, then: .venv/bin/python manage.py run_pipeline demo --resume"
  fi
fi

step "Starting a worker and the web server"
.venv/bin/python manage.py qcluster > "$VSM_DATA_DIR/worker.log" 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM
echo "Worker log: $VSM_DATA_DIR/worker.log"
echo "VSM is at http://$BIND:$PORT/  (API docs at /api/docs/, admin at /admin/)"
[ "${1:-}" != "--demo" ] || echo "Ask the demo:  http://$BIND:$PORT/d/demo/chat/  (log in as admin; the password is above)"
.venv/bin/gunicorn vsm_site.wsgi --bind "$BIND:$PORT" --workers 2 --threads 4 --access-logfile - 
