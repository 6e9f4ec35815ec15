#!/usr/bin/env bash
# Installs what building, running and testing ptz-edge needs on Debian 12 / Ubuntu:
# GStreamer development files and plugins, gst-rtsp-server (the camera simulator),
# pkg-config and a C toolchain. With --test also what only the tests need: chromium
# for the console's browser test (tests/console.rs), so `deploy/demo.sh` does not pull a
# browser onto a machine that only runs the demo. Installs only what is missing; safe to
# run again.
set -euo pipefail

packages=(
  pkg-config build-essential
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
)
if [ "${1:-}" = "--test" ]; then
  packages+=(chromium)
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

if ! command -v cargo >/dev/null; then
  # A Rust toolchain cannot be downloaded here; rustup's is expected on PATH.
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "deps: cargo is in ~/.cargo/bin; add it to PATH (source ~/.cargo/env)" >&2
  else
    echo "deps: no Rust toolchain found: install one with rustup (https://rustup.rs)" >&2
  fi
  exit 1
fi
