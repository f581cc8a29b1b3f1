#!/usr/bin/env bash
# localstripe peer for bastion-payments' PSP interop tests (DESIGN.md, "Real peers"): a
# stateful Stripe-compatible server with 3DS test cards, run by the tests as a separate
# process through scripts/peers/run-localstripe.py (bound to 127.0.0.1, fresh state).
#   - localstripe (PyPI) 1.15.10 into .peers/localstripe-venv
# localstripe is GPL-3.0: it is only ever run as a separate process, never vendored or linked.
# Idempotent: skipped when the pinned version is already installed.
set -euo pipefail
cd "$(dirname "$0")/../.."

LOCALSTRIPE_VERSION=1.15.10

venv=.peers/localstripe-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
installed=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('localstripe'))" 2>/dev/null || true)
if [ "$installed" != "$LOCALSTRIPE_VERSION" ]; then
  "$venv/bin/python" -m pip install --quiet "localstripe==$LOCALSTRIPE_VERSION"
fi
echo "localstripe peer: localstripe==$LOCALSTRIPE_VERSION in $venv"
