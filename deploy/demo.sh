#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and starts ptz-edge with
# the bundled camera simulator connected as camera "demo". Ctrl-C stops it.
# PORT (default 3000) and BIND (default 0.0.0.0) are honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
bash deploy/deps.sh
cargo build --release --bins
echo
echo "ptz-edge demo: open http://127.0.0.1:${PORT:-3000}/ (Ctrl-C to stop)"
# No mDNS announcement on the LAN for a demo unless asked (PTZ_EDGE_MDNS=on).
export PTZ_EDGE_MDNS="${PTZ_EDGE_MDNS:-off}"
exec ./target/release/ptz-edge --demo
