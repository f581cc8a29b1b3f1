#!/usr/bin/env bash
# Installs the presidio-analyzer peer (PII detection, pattern recognizers only) and Faker
# (the synthetic corpus generator of bench/pii) into .peers/presidio-venv, at pinned
# versions, from PyPI. Idempotent: does nothing when the pinned versions are already there.
# Used by bench/pii/run.sh; see docs/BENCHMARKS.md ("PII detection vs presidio-analyzer").
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.peers/presidio-venv
presidio_version=2.2.366
faker_version=40.54.0
want="presidio-analyzer==${presidio_version} faker==${faker_version}"
stamp="$venv/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
mkdir -p .peers
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "presidio-analyzer==${presidio_version}" "faker==${faker_version}"
echo "$want" > "$stamp"
