#!/usr/bin/env bash
# Offline checks of deploy/ptz-edge.service and deploy/ptz-edge.env; no running systemd
# needed (works in a container or CI):
#   1. systemd-analyze verify: every key known and well-formed. It wants ExecStart's
#      binary to exist, so it checks a temporary copy whose ExecStart points at
#      $PTZ_EDGE_BIN (default /usr/local/bin/ptz-edge) or, if that is absent, /bin/true.
#      Warnings (unknown key, bad value) exit 0 in systemd-analyze; here they fail.
#   2. systemd-analyze security --offline: exposure must stay <= $MAX_EXPOSURE (default
#      3.0, "OK"; the unit scores 1.9 as written).
#   3. the env file holds only comments and KEY=value lines.
# Usage: deploy/verify-unit.sh [UNIT_FILE]
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
unit=${1:-$here/ptz-edge.service}
envfile=$here/ptz-edge.env
max_exposure=${MAX_EXPOSURE:-3.0}
shipped_exec=/usr/local/bin/ptz-edge

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
[[ -f $unit ]] || die "no unit file at $unit"
if ! command -v systemd-analyze >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "systemd-analyze missing: apt-get install systemd"
    echo "installing systemd-analyze (package systemd)" >&2
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 systemd >&2
fi

grep -qx "ExecStart=$shipped_exec" "$unit" || die "$unit: expected 'ExecStart=$shipped_exec' (install.sh puts the binary there)"

tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
bin=${PTZ_EDGE_BIN:-$shipped_exec}
if [[ ! -x $bin ]]; then
    echo "note: $bin not installed here; verifying with ExecStart=/bin/true" >&2
    bin=/bin/true
fi
# Same file name: systemd-analyze derives the unit name from it.
sed "s|^ExecStart=$shipped_exec\$|ExecStart=$bin|" "$unit" >"$tmp/ptz-edge.service"

rc=0
out=$(systemd-analyze verify "$tmp/ptz-edge.service" 2>&1) || rc=$?
# Lines about other units (dependencies on this host) are shown, not counted.
ours=$(grep -F 'ptz-edge' <<<"$out" || true)
others=$(grep -vF 'ptz-edge' <<<"$out" || true)
[[ -n $others ]] && printf 'systemd-analyze (other units, ignored):\n%s\n' "$others" >&2
if [[ $rc -ne 0 || -n $ours ]]; then
    printf '%s\n' "${ours//$tmp\//}" >&2
    die "systemd-analyze verify: $unit has problems (exit $rc)"
fi
echo "verify: OK ($(systemd-analyze --version | head -n 1))"

threshold=$(awk -v x="$max_exposure" 'BEGIN { printf "%d", x * 10 + 0.5 }')
sec_rc=0
sec=$(systemd-analyze security --offline=yes --threshold="$threshold" "$tmp/ptz-edge.service" 2>&1) || sec_rc=$?
overall=$(grep -o 'Overall exposure level.*' <<<"$sec" || true)
if [[ $sec_rc -ne 0 ]]; then
    printf '%s\n' "$sec" | grep -E '^ *✗' >&2 || true
    die "security: ${overall:-systemd-analyze security failed (exit $sec_rc)}; must be <= $max_exposure"
fi
echo "security: ${overall:-?} (limit $max_exposure)"

if [[ -f $envfile ]]; then
    bad=$(grep -nvE '^[[:space:]]*(#.*)?$|^[A-Za-z_][A-Za-z0-9_]*=' "$envfile" || true)
    [[ -z $bad ]] || die "$envfile: not KEY=value: $bad"
    echo "env file: OK ($(grep -c '^#[A-Z_]*=' "$envfile") settings documented)"
fi
