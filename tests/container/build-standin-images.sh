#!/usr/bin/env bash
# Build the TEST STAND-IN images (names:tags from nix/images.toml). The product images are the
# Nix ones (nix/images.nix); see tests/container/standin_images.py for what differs.
# Needs: a running engine (tests/container/engine.sh), root (debootstrap), host python3 >= 3.11.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
exec "$PY" "$here/standin_images.py" "$@"
