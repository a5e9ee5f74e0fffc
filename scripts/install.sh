#!/usr/bin/env bash
# Installs Diffusion Studio into the current Python: PyTorch pinned first, then the package (editable).
#   scripts/install.sh          the app
#   scripts/install.sh --test   the app plus what the tests need (pytest-qt, and Xvfb for the real-window test)
# On Debian/Ubuntu as root it also installs the system libraries Qt's X11 platform plugin needs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
extras=""
apt_pkgs="libegl1 libgl1 libfontconfig1 libdbus-1-3 libxkbcommon0 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
  libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-randr0 fonts-dejavu-core"
if [ "${1:-}" = "--test" ]; then
  extras="[test]"
  apt_pkgs="$apt_pkgs xvfb xauth"
fi

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # shellcheck disable=SC2086
  if ! dpkg -s $apt_pkgs >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $apt_pkgs >/dev/null
  fi
fi

# torch first and pinned: an unpinned torch (or one pulled in by another package) can replace it with a multi-GB build.
"$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
"$PY" -m pip install -q --disable-pip-version-check -c constraints.txt -e ".$extras"
echo "Diffusion Studio installed: run 'diffusion-studio' to open the app."
