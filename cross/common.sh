# shellcheck shell=bash disable=SC2034
# Shared by cross/build-aarch64.sh and cross/run-aarch64.sh: paths, logging, phase timing.
# Sourced, not executed. Every path can be moved with an environment variable so that
# several engineers (or CI) can share one machine without sharing a cargo lock.

TARGET_TRIPLE=aarch64-unknown-linux-gnu
DEB_ARCH=arm64

REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# Cargo's own variable; the default is the repo's target/ like plain `cargo build`.
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
# Cache for the arm64 sysroot (apt lists, .debs, unpacked tree). ~1.2 GB; reruns reuse it.
SYSROOT_CACHE=${PTZ_SYSROOT_CACHE:-$TARGET_DIR/aarch64-sysroot}
SYSROOT=$SYSROOT_CACHE/root
# Where the stripped device binary is copied.
DIST_DIR=${PTZ_DIST_DIR:-$TARGET_DIR/dist}
DIST_BIN=$DIST_DIR/ptz-edge-aarch64

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Phase timing: `phase_begin NAME` ... `phase_end`; `phase_summary` prints the table.
PHASE_NAMES=()
PHASE_MS=()
_phase_name=''
_phase_t0=0
_phase_open=0
_now_ms() {
    local t=${EPOCHREALTIME/./}
    printf '%s' "$((10#$t / 1000))"
}
phase_begin() {
    _phase_name=$1
    _phase_t0=$(_now_ms)
    _phase_open=1
    log "[$_phase_name] start"
}
# phase_end [NOTE]: NOTE (e.g. "cached") is shown next to the time.
phase_end() {
    local ms=$(($(_now_ms) - _phase_t0))
    local label=$_phase_name
    if [[ $# -gt 0 && -n $1 ]]; then label="$label ($1)"; fi
    PHASE_NAMES+=("$label")
    PHASE_MS+=("$ms")
    _phase_open=0
    log "[$_phase_name] done in $(fmt_ms "$ms")"
}
# For an EXIT trap: closes a phase that was still running as FAILED.
phase_abort() {
    if [[ $_phase_open == 1 ]]; then phase_end FAILED; fi
}
fmt_ms() { printf '%d.%03d s' "$(($1 / 1000))" "$(($1 % 1000))"; }
phase_summary() {
    phase_abort
    local i total=0
    printf '\n%-50s %12s\n' 'phase' 'time' >&2
    for i in "${!PHASE_NAMES[@]}"; do
        printf '%-50s %12s\n' "${PHASE_NAMES[$i]}" "$(fmt_ms "${PHASE_MS[$i]}")" >&2
        total=$((total + PHASE_MS[i]))
    done
    printf '%-50s %12s\n' 'total' "$(fmt_ms "$total")" >&2
}

human_size() {
    local bytes=$1
    if ((bytes >= 1048576)); then
        printf '%d bytes (%d.%02d MiB)' "$bytes" "$((bytes / 1048576))" "$(((bytes % 1048576) * 100 / 1048576))"
    else
        printf '%d bytes (%d KiB)' "$bytes" "$((bytes / 1024))"
    fi
}
