#!/usr/bin/env bash
# Install ptz-edge as a systemd service on a Debian-based device (Raspberry Pi OS
# bookworm, Jetson Linux / Ubuntu 22.04, Debian 12, Ubuntu 22.04+). Idempotent: rerun it
# to upgrade the binary; the settings file is never overwritten.
#
#   sudo deploy/install.sh ./ptz-edge-aarch64        # install or upgrade, enable, (re)start
#   sudo deploy/install.sh --no-start ./ptz-edge     # install and enable, don't start now
#   sudo deploy/install.sh                           # refresh unit/packages, keep the binary
#   deploy/install.sh --root /mnt/img --no-apt BIN   # into an image tree (no systemd calls)
#
# What it does:
#   1. apt: the GStreamer runtime (plugins base/good/bad/ugly, libav); no -dev packages
#   2. BINARY -> /usr/local/bin/ptz-edge (checks CPU architecture and glibc >= 2.34)
#   3. ptz-edge.service -> /etc/systemd/system/, plus a drop-in for group render when
#      that group exists; docs/deploy.md -> /usr/local/share/doc/ptz-edge/ if present
#   4. ptz-edge.env -> /etc/ptz-edge/ptz-edge.env (mode 0600) only if absent
#   5. systemctl daemon-reload, enable, and start (restart if anything changed)
#
# Options: --no-start  --no-apt  --root DIR (implies --no-apt; offline `systemctl
# --root` enable)  -h|--help
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
RUNTIME_PACKAGES=(
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav
)
MIN_GLIBC=2.34

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

START=1
APT=1
ROOT=''
BINARY=''
while [[ $# -gt 0 ]]; do
    case $1 in
    --no-start) START=0 ;;
    --no-apt) APT=0 ;;
    --root) ROOT=${2:?--root needs a directory}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1' (try --help)" ;;
    *)
        [[ -z $BINARY ]] || die "only one binary, got '$BINARY' and '$1'"
        BINARY=$1
        ;;
    esac
    shift
done
if [[ -n $ROOT ]]; then
    [[ -d $ROOT ]] || die "--root $ROOT is not a directory"
    ROOT=$(cd -- "$ROOT" && pwd)
    APT=0
fi
[[ -n $ROOT || $(id -u) -eq 0 ]] || die "run as root (sudo $0 ...)"

UNIT_SRC=$here/ptz-edge.service
ENV_SRC=$here/ptz-edge.env
DOC_SRC=$here/../docs/deploy.md
[[ -f $UNIT_SRC && -f $ENV_SRC ]] || die "ptz-edge.service / ptz-edge.env not found next to $0"

BIN_DST=$ROOT/usr/local/bin/ptz-edge
UNIT_DST=$ROOT/etc/systemd/system/ptz-edge.service
DROPIN_DIR=$ROOT/etc/systemd/system/ptz-edge.service.d
ENV_DST=$ROOT/etc/ptz-edge/ptz-edge.env
DOC_DST=$ROOT/usr/local/share/doc/ptz-edge/deploy.md
CHANGED=0

# install_file SRC DST MODE: copy atomically when the content differs; sets CHANGED.
install_file() {
    local src=$1 dst=$2 mode=$3
    if [[ -f $dst ]] && cmp -s -- "$src" "$dst"; then
        log "unchanged: $dst"
        return 0
    fi
    mkdir -p -- "$(dirname -- "$dst")"
    install -m "$mode" -- "$src" "$dst.new.$$"
    mv -f -- "$dst.new.$$" "$dst"
    log "installed: $dst"
    CHANGED=1
}

# ELF e_machine of a file: aarch64, x86_64, arm, or the raw number.
elf_machine() {
    local magic machine
    magic=$(od -An -tx1 -N4 -- "$1" | tr -d ' \n')
    [[ $magic == 7f454c46 ]] || { printf 'not-elf'; return 0; }
    machine=$(od -An -tu2 -j18 -N2 -- "$1" | tr -d ' \n')
    case $machine in
    183) printf 'aarch64' ;;
    62) printf 'x86_64' ;;
    40) printf 'arm' ;;
    *) printf 'machine-%s' "$machine" ;;
    esac
}

# --- checks ---------------------------------------------------------------------------
if [[ -n $BINARY ]]; then
    [[ -f $BINARY ]] || die "no such file: $BINARY"
    bin_arch=$(elf_machine "$BINARY")
    [[ $bin_arch != not-elf ]] || die "$BINARY is not an ELF executable"
    if [[ -z $ROOT ]]; then
        host_arch=$(uname -m)
        [[ $host_arch == arm64 ]] && host_arch=aarch64
        [[ $bin_arch == "$host_arch" ]] ||
            die "$BINARY is built for $bin_arch but this machine is $host_arch (cross/build-aarch64.sh builds aarch64)"
    fi
elif [[ ! -x $BIN_DST ]]; then
    die "no binary given and none installed at $BIN_DST; usage: $0 [--no-start] PATH/TO/ptz-edge"
fi
if [[ -z $ROOT ]]; then
    glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}' || true)
    if [[ -n $glibc ]] && ! dpkg --compare-versions "$glibc" ge "$MIN_GLIBC" 2>/dev/null; then
        die "glibc $glibc is too old: ptz-edge needs >= $MIN_GLIBC (Raspberry Pi OS bookworm, Debian 12, Ubuntu 22.04 / JetPack 6 or newer)"
    fi
fi

# --- 1. packages --------------------------------------------------------------------------
if [[ $APT == 1 ]]; then
    missing=()
    for p in "${RUNTIME_PACKAGES[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) == 'install ok installed' ]] || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "apt-get install ${missing[*]}"
        apt-get update -q
        apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
        CHANGED=1
    else
        log "GStreamer runtime packages already installed"
    fi
fi

# --- 2.-4. files ----------------------------------------------------------------------------
if [[ -n $BINARY ]]; then
    install_file "$BINARY" "$BIN_DST" 0755
fi
install_file "$UNIT_SRC" "$UNIT_DST" 0644

# /dev/dri/renderD* (VA-API) belong to group render. SupplementaryGroups= naming a group
# that does not exist stops the unit from starting, so it is added only where it exists.
render_exists=0
if [[ -n $ROOT ]]; then
    grep -q '^render:' "$ROOT/etc/group" 2>/dev/null && render_exists=1
else
    getent group render >/dev/null && render_exists=1
fi
if [[ $render_exists == 1 ]]; then
    dropin_tmp=$(mktemp)
    printf '# Written by deploy/install.sh: group render exists here (/dev/dri/renderD*, VA-API).\n[Service]\nSupplementaryGroups=render\n' >"$dropin_tmp"
    install_file "$dropin_tmp" "$DROPIN_DIR/10-render-group.conf" 0644
    rm -f -- "$dropin_tmp"
elif [[ -f $DROPIN_DIR/10-render-group.conf ]]; then
    rm -f -- "$DROPIN_DIR/10-render-group.conf"
    CHANGED=1
fi

if [[ -f $DOC_SRC ]]; then
    install_file "$DOC_SRC" "$DOC_DST" 0644
fi

if [[ -f $ENV_DST ]]; then
    log "kept: $ENV_DST (settings are never overwritten; the shipped defaults are in $ENV_SRC)"
else
    mkdir -p -- "$(dirname -- "$ENV_DST")"
    chmod 0755 -- "$(dirname -- "$ENV_DST")"
    # 0600: it may hold PTZ_EDGE_TOKEN. systemd (root) reads it, not the service user.
    install -m 0600 -- "$ENV_SRC" "$ENV_DST"
    log "installed: $ENV_DST"
    CHANGED=1
fi

# --- 5. systemd -------------------------------------------------------------------------------
if [[ -n $ROOT ]]; then
    systemctl --root="$ROOT" enable ptz-edge.service
    log "enabled in $ROOT; it starts at the image's next boot"
    exit 0
fi
if [[ ! -d /run/systemd/system ]]; then
    warn "systemd is not running here (container/chroot?): files installed, service not enabled/started"
    exit 0
fi
systemctl daemon-reload
systemctl enable ptz-edge.service
if [[ $START == 0 ]]; then
    log "enabled, not started (--no-start): sudo systemctl start ptz-edge"
    exit 0
fi
if systemctl is-active --quiet ptz-edge.service && [[ $CHANGED == 1 ]]; then
    log "restarting ptz-edge (binary or configuration changed)"
    systemctl restart ptz-edge.service
else
    systemctl start ptz-edge.service
fi

# Report, but don't fail the install on it: the journal tells why.
port=$(sed -n 's/^[[:space:]]*PORT=\([0-9]\{1,5\}\)[[:space:]]*$/\1/p' "$ENV_DST" | tail -n 1)
port=${port:-3000}
if command -v curl >/dev/null; then
    for _ in $(seq 1 40); do
        if curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null; then
            log "ptz-edge is up: http://$(hostname -I 2>/dev/null | awk '{print $1}'):$port/health"
            exit 0
        fi
        systemctl is-failed --quiet ptz-edge.service && break
        sleep 0.5
    done
    warn "GET /health on port $port did not answer within 20 s; see: journalctl -u ptz-edge -n 50"
    systemctl --no-pager --lines=20 status ptz-edge.service || true
else
    systemctl --no-pager --lines=10 status ptz-edge.service || true
fi
