#!/usr/bin/env bash
# Installs what building, running and testing ptz-edge needs on Debian 12 / Ubuntu:
# GStreamer development files and plugins, gst-rtsp-server (the camera simulator),
# pkg-config and a C toolchain. Installs only what is missing; safe to run again.
#
# `--test` (what .ci/run passes) adds what only the test suite needs: Debian's
# `prometheus` package (`promtool check metrics` and a real Prometheus server scraping
# the appliance in tests/metrics.rs) and Python's `openapi-spec-validator` (PyPI), which
# checks docs/openapi.json in the OpenAPI test, Debian's `chromium`, which the console's
# browser test (tests/console.rs) drives headless, and VLC's RTSP server for the interop
# matrix (tests/interop.rs): `vlc-bin` (cvlc) and `vlc-plugin-base` (the `rtp` stream
# output with its RTSP server, `gather`, the MP4 demuxer), without the GUI. A device does
# not need them (nor does `deploy/demo.sh`, which runs this without `--test`); on a
# machine run by systemd the prometheus package also starts a Prometheus service on :9090.
set -euo pipefail

with_tests=false
[ "${1:-}" = "--test" ] && with_tests=true

packages=(
  pkg-config build-essential
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
)
if $with_tests; then
  packages+=(prometheus python3-pip chromium vlc-bin vlc-plugin-base)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps: run as root or install sudo" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: all system packages present"
fi

if $with_tests; then
  if python3 -c 'import openapi_spec_validator' 2>/dev/null; then
    echo "deps: openapi-spec-validator present"
  else
    echo "deps: installing openapi-spec-validator (PyPI)"
    # Debian's own Python refuses pip installs into the system (PEP 668) unless told.
    python3 -m pip install --quiet 'openapi-spec-validator>=0.7' \
      || python3 -m pip install --quiet --break-system-packages 'openapi-spec-validator>=0.7'
  fi
fi

if ! command -v cargo >/dev/null; then
  # A Rust toolchain cannot be downloaded here; rustup's is expected on PATH.
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "deps: cargo is in ~/.cargo/bin; add it to PATH (source ~/.cargo/env)" >&2
  else
    echo "deps: no Rust toolchain found: install one with rustup (https://rustup.rs)" >&2
  fi
  exit 1
fi
