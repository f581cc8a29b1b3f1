#!/usr/bin/env bash
# Webhook peers for bastion-payments' interop tests (DESIGN.md, "Real peers"): independent
# signers and verifiers, run by the tests as separate processes.
#   - stripe (npm) 23.1.0 into .peers/node            — webhooks.generateTestHeaderString, constructEvent
#   - standardwebhooks (PyPI) 1.1.0 into .peers/webhooks-venv — Webhook.sign / Webhook.verify
# Idempotent: each step is skipped when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."

STRIPE_VERSION=23.1.0
STANDARDWEBHOOKS_VERSION=1.1.0

node_dir=.peers/node
mkdir -p "$node_dir"
installed_stripe=$(node -p "try { require('./$node_dir/node_modules/stripe/package.json').version } catch (e) { '' }")
if [ "$installed_stripe" != "$STRIPE_VERSION" ]; then
  npm install --prefix "$node_dir" --no-audit --no-fund --save-exact "stripe@$STRIPE_VERSION"
fi

venv=.peers/webhooks-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
installed_sw=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('standardwebhooks'))" 2>/dev/null || true)
if [ "$installed_sw" != "$STANDARDWEBHOOKS_VERSION" ]; then
  "$venv/bin/python" -m pip install --quiet "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
fi
echo "webhook peers: stripe@$STRIPE_VERSION in $node_dir, standardwebhooks==$STANDARDWEBHOOKS_VERSION in $venv"
