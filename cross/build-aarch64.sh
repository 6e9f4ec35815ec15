#!/usr/bin/env bash
# Cross-build the `ptz-edge` appliance for aarch64-unknown-linux-gnu (Raspberry Pi 4/5,
# Jetson) on a plain Debian 12 (bookworm) amd64 machine, from Debian's packages alone:
# no container engine, no rustup target, and no change to the host's amd64 GStreamer
# dev packages (the arm64 ones can't be co-installed with them, so GStreamer for arm64
# lives in a private sysroot folder instead).
#
#   cross/build-aarch64.sh                   # build; reuses the cached sysroot
#   cross/build-aarch64.sh --smoke           # then run it under qemu (cross/run-aarch64.sh)
#   cross/build-aarch64.sh --refresh-sysroot # re-download the arm64 packages (security updates)
#
# Environment (all optional):
#   CARGO_TARGET_DIR    cargo's target dir (default: <repo>/target)
#   PTZ_SYSROOT_CACHE   sysroot cache (default: $CARGO_TARGET_DIR/aarch64-sysroot, ~1.2 GB)
#   PTZ_DIST_DIR        where the stripped binary goes (default: $CARGO_TARGET_DIR/dist)
#   PTZ_CROSS_LOCKED=0  build without --locked (default is --locked: a device build must
#                       use exactly the committed Cargo.lock)
#   CARGO_BUILD_JOBS    the usual cargo parallelism knob
#
# Needs root only to apt-get install the host tools the first time (see HOST_PACKAGES).
# See docs/deploy.md and shared notes "aarch64-cross.md" for the why of each step.
set -euo pipefail

# shellcheck source=cross/common.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

# Host (amd64) tools. rustc-web/cargo-web come from bookworm-security (1.96; plain
# bookworm has 1.85, too old for gstreamer-rs 0.25, which wants >= 1.92).
HOST_PACKAGES=(
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
    qemu-user-static rustc-web cargo-web pkg-config ca-certificates curl
)
MIN_RUSTC=1.92
# arm64 packages unpacked into the sysroot: headers + .pc files to link against, the
# runtime plugins to run under qemu (the decoders: libav's avdec_h264, rtspsrc from
# good, h264parse from bad), gst-inspect/gst-launch for the smoke test's preflight, and
# Debian's aarch64 Rust std matching the host's rustc-web (version pinned below).
SYSROOT_PACKAGES=(
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
    libstd-rust-web-dev
)

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

SMOKE=0
REFRESH=0
SYSROOT_ONLY=0
SMOKE_ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --smoke) SMOKE=1 ;;
    --refresh-sysroot) REFRESH=1 ;;
    --sysroot-only) SYSROOT_ONLY=1 ;;
    --) shift; SMOKE_ARGS=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

# --- phase 1: host tools -----------------------------------------------------------

pkg_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true) == 'install ok installed' ]]
}

rustc_web_candidate() {
    apt-cache policy rustc-web 2>/dev/null | awk '/Candidate:/ {print $2}'
}

# Make sure apt can see bookworm-security, where rustc-web 1.96 lives.
ensure_security_suite() {
    local cand
    cand=$(rustc_web_candidate)
    if [[ -n $cand && $cand != '(none)' ]] && dpkg --compare-versions "$cand" ge "$MIN_RUSTC"; then
        return 0
    fi
    if grep -rqs -- '-security' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        die "rustc-web candidate is '${cand:-none}', need >= $MIN_RUSTC, although a -security suite is configured; check 'apt-cache policy rustc-web'"
    fi
    local codename
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")
    log "adding ${codename}-security to apt sources (/etc/apt/sources.list.d/debian-security.sources): rustc-web >= $MIN_RUSTC is only there"
    cat >/etc/apt/sources.list.d/debian-security.sources <<EOF
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: ${codename}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -q
    cand=$(rustc_web_candidate)
    if [[ -z $cand || $cand == '(none)' ]] || ! dpkg --compare-versions "$cand" ge "$MIN_RUSTC"; then
        die "rustc-web candidate still '${cand:-none}' after adding ${codename}-security"
    fi
}

missing_host_packages() {
    local p
    for p in "${HOST_PACKAGES[@]}"; do
        pkg_installed "$p" || printf '%s\n' "$p"
    done
}

install_host_tools() {
    local missing=("$@")
    [[ $(id -u) -eq 0 ]] || die "missing host packages: ${missing[*]}; run this script as root once, or: sudo apt-get install ${missing[*]}"
    log "installing host packages: ${missing[*]}"
    apt-get update -q
    ensure_security_suite
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"
}

check_host_tools() {
    [[ -x /usr/bin/rustc && -x /usr/bin/cargo ]] || die "/usr/bin/rustc or /usr/bin/cargo missing (packages rustc-web, cargo-web)"
    local v
    v=$(/usr/bin/rustc --version | awk '{print $2}')
    dpkg --compare-versions "$v" ge "$MIN_RUSTC" || die "Debian rustc is $v, need >= $MIN_RUSTC (rustc-web from bookworm-security)"
    command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc not found (package gcc-aarch64-linux-gnu)"
    command -v qemu-aarch64-static >/dev/null || die "qemu-aarch64-static not found (package qemu-user-static)"
    command -v pkg-config >/dev/null || die "pkg-config not found"
    RUSTC_WEB_VERSION=$(dpkg-query -W -f='${Version}' rustc-web)
    log "host: $(/usr/bin/rustc --version), $(/usr/bin/cargo --version), $(aarch64-linux-gnu-gcc -dumpfullversion) aarch64 gcc"
}

# --- phase 2+3: the arm64 sysroot ---------------------------------------------------
# apt runs with a private state (lists, cache, an always-empty dpkg status) so it
# resolves the whole arm64 closure "as if nothing were installed" and never touches the
# host's dpkg database or architectures. Sources and keys are the host's (/etc/apt).

APT_DIR=$SYSROOT_CACHE/apt
APT_OPTS=(
    -o "Dir::State=$APT_DIR/state"
    -o "Dir::State::status=$APT_DIR/status"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "APT::Architecture=$DEB_ARCH"
    -o "APT::Architectures::=$DEB_ARCH"
    -o "APT::Install-Recommends=false"
    -o "APT::Sandbox::User=root"
    -o "Acquire::Languages=none"
)

sysroot_stamp_text() {
    printf 'arch=%s\nrustc-web=%s\npackages=%s\n' "$DEB_ARCH" "$RUSTC_WEB_VERSION" "${SYSROOT_PACKAGES[*]}"
}

download_debs() {
    rm -rf "$APT_DIR"
    mkdir -p "$APT_DIR/state/lists/partial" "$APT_DIR/cache/archives/partial"
    : >"$APT_DIR/status"
    log "apt update (private $DEB_ARCH lists in $APT_DIR)"
    apt-get "${APT_OPTS[@]}" -q update
    local pkgs=("${SYSROOT_PACKAGES[@]/#libstd-rust-web-dev/libstd-rust-web-dev=$RUSTC_WEB_VERSION}")
    log "apt download ($DEB_ARCH): ${pkgs[*]}"
    if ! apt-get "${APT_OPTS[@]}" -q -y install --download-only "${pkgs[@]}" >"$APT_DIR/download.log" 2>&1; then
        tail -n 30 "$APT_DIR/download.log" >&2
        if grep -q 'libstd-rust-web-dev' "$APT_DIR/download.log"; then
            warn "the arm64 Rust std must equal the host's rustc-web ($RUSTC_WEB_VERSION); if the archive moved on, run: apt-get install --only-upgrade rustc-web cargo-web"
        fi
        die "apt could not download the $DEB_ARCH packages (full log: $APT_DIR/download.log)"
    fi
    local n size
    n=$(find "$APT_DIR/cache/archives" -maxdepth 1 -name '*.deb' | wc -l)
    size=$(du -sm "$APT_DIR/cache/archives" | cut -f1)
    log "downloaded $n packages, $size MB"
}

# dpkg -x every .deb into a fresh tree, then the two fix-ups dpkg's maintainer scripts
# would have done on a real system. Built beside the old one and swapped in at the end,
# so an interrupted run never leaves a half sysroot that looks finished.
unpack_sysroot() {
    local new=$SYSROOT_CACHE/root.new deb n=0
    rm -rf "$new"
    mkdir -p "$new"
    for deb in "$APT_DIR"/cache/archives/*.deb; do
        dpkg-deb -x "$deb" "$new"
        n=$((n + 1))
    done
    # 1. Absolute symlinks (e.g. libfoo.so -> /lib/aarch64-linux-gnu/libfoo.so.1) would
    #    point into the host; make them relative so they resolve inside the sysroot.
    local link target fixed=0
    while IFS= read -r -d '' link; do
        target=$(readlink -- "$link")
        ln -sfn -- "$(realpath -sm --relative-to="$(dirname -- "$link")" -- "$new$target")" "$link"
        fixed=$((fixed + 1))
    done < <(find "$new" -type l -lname '/*' -print0)
    # 2. update-alternatives links never made by dpkg -x: without libblas.so.3 and
    #    liblapack.so.3, libavcodec's dependency chain fails and avdec_h264 won't load.
    local libdir=$new/usr/lib/aarch64-linux-gnu alt
    for alt in blas/libblas.so.3 lapack/liblapack.so.3; do
        if [[ -e $libdir/$alt && ! -e $libdir/${alt#*/} ]]; then
            ln -s "$alt" "$libdir/${alt#*/}"
        fi
    done
    [[ -e $new/usr/lib/pkgconfig/gstreamer-1.0.pc || -e $libdir/pkgconfig/gstreamer-1.0.pc ]] ||
        die "gstreamer-1.0.pc missing from the unpacked sysroot; see $APT_DIR/download.log"
    compgen -G "$new/usr/lib/rustlib/$TARGET_TRIPLE/lib/libstd-*.rlib" >/dev/null ||
        die "Debian's $TARGET_TRIPLE Rust std missing from the sysroot (libstd-rust-web-dev:$DEB_ARCH)"
    sysroot_stamp_text >"$new/.ptz-sysroot-stamp"
    rm -rf "$SYSROOT"
    mv "$new" "$SYSROOT"
    log "unpacked $n packages into $SYSROOT ($(du -sm "$SYSROOT" | cut -f1) MB), made $fixed symlinks relative"
}

sysroot_is_current() {
    [[ -f $SYSROOT/.ptz-sysroot-stamp ]] && [[ $(cat "$SYSROOT/.ptz-sysroot-stamp") == "$(sysroot_stamp_text)" ]]
}

# --- phase 4: cargo -----------------------------------------------------------------

cargo_build() {
    if [[ -n ${RUSTFLAGS:-} || -n ${CARGO_ENCODED_RUSTFLAGS:-} ]]; then
        # They would silently replace the target rustflags below (--sysroot), and the
        # build would then fail with a confusing "can't find crate for std".
        warn "ignoring RUSTFLAGS/CARGO_ENCODED_RUSTFLAGS from the environment for the cross build"
        unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
    fi
    local locked=(--locked)
    [[ ${PTZ_CROSS_LOCKED:-1} == 0 ]] && locked=()
    local tkey="target.$TARGET_TRIPLE"
    local t_=${TARGET_TRIPLE//-/_}
    # Machine-specific paths go on the command line / environment, never into the
    # committed .cargo/config.toml. Rustflags only reach target crates (cargo is given
    # --target), so build scripts and proc-macros still use the host std.
    #   --sysroot=<root>/usr        : Debian's aarch64 std (usr/lib/rustlib/<triple>/lib)
    #   -C link-arg=--sysroot=<root>: the linker finds arm64 libgstreamer & co. there, and
    #                                 resolves absolute paths inside libc.so linker scripts
    local cmd=(
        /usr/bin/cargo build --release "${locked[@]}"
        --target "$TARGET_TRIPLE" --no-default-features --bin ptz-edge
        --manifest-path "$REPO_ROOT/Cargo.toml"
        --config "$tkey.linker=\"aarch64-linux-gnu-gcc\""
        --config "$tkey.rustflags=[\"--sysroot=$SYSROOT/usr\", \"-C\", \"link-arg=--sysroot=$SYSROOT\"]"
    )
    log "RUSTC=/usr/bin/rustc ${cmd[*]}"
    # rustup's rustc comes first on PATH and rejects Debian's std (E0514): name ours.
    env RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        CARGO_TARGET_DIR="$TARGET_DIR" \
        PKG_CONFIG_ALLOW_CROSS=1 \
        "PKG_CONFIG_SYSROOT_DIR_$t_=$SYSROOT" \
        "PKG_CONFIG_LIBDIR_$t_=$SYSROOT/usr/lib/aarch64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig" \
        "PKG_CONFIG_PATH_$t_=" \
        "CC_$t_=aarch64-linux-gnu-gcc" "AR_$t_=aarch64-linux-gnu-ar" \
        nice -n 10 "${cmd[@]}"
}

report_binary() {
    local bin=$TARGET_DIR/$TARGET_TRIPLE/release/ptz-edge
    [[ -f $bin ]] || die "cargo finished but $bin is missing"
    mkdir -p "$DIST_DIR"
    aarch64-linux-gnu-strip --strip-all -o "$DIST_BIN.tmp" "$bin"
    mv -f "$DIST_BIN.tmp" "$DIST_BIN"
    local glibc needed
    glibc=$(aarch64-linux-gnu-objdump -T "$DIST_BIN" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)
    needed=$(aarch64-linux-gnu-readelf -d "$DIST_BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
    printf '\nbinary   : %s\n' "$DIST_BIN" >&2
    printf 'cargo out: %s, %s\n' "$bin" "$(human_size "$(stat -c %s "$bin")")" >&2
    printf 'stripped : %s\n' "$(human_size "$(stat -c %s "$DIST_BIN")")" >&2
    printf 'glibc    : needs >= %s on the device\n' "${glibc#GLIBC_}" >&2
    printf 'libs     : %s\n' "$needed" >&2
}

# --- main ---------------------------------------------------------------------------

on_exit() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        phase_summary
        printf '\nFAILED (exit %s)\n' "$rc" >&2
    fi
}
trap on_exit EXIT

phase_begin 'host tools (apt)'
mapfile -t MISSING < <(missing_host_packages)
if [[ ${#MISSING[@]} -gt 0 ]]; then
    install_host_tools "${MISSING[@]}"
    phase_end
else
    phase_end 'already installed'
fi
check_host_tools

# One sysroot writer at a time (two engineers or CI jobs sharing PTZ_SYSROOT_CACHE).
mkdir -p "$SYSROOT_CACHE"
exec 9>"$SYSROOT_CACHE/.lock"
if ! flock -n 9; then
    log "waiting for another build using $SYSROOT_CACHE"
    flock -w 1800 9 || die "timed out waiting for the lock on $SYSROOT_CACHE/.lock"
fi
if [[ $REFRESH == 0 ]] && sysroot_is_current; then
    log "sysroot $SYSROOT is current (delete it or pass --refresh-sysroot to rebuild)"
    phase_begin 'arm64 sysroot'
    phase_end 'cached'
else
    phase_begin 'arm64 packages (apt download)'
    download_debs
    phase_end
    phase_begin 'arm64 sysroot (unpack + fix-ups)'
    unpack_sysroot
    phase_end
fi

flock -u 9
exec 9>&-

if [[ $SYSROOT_ONLY == 1 ]]; then
    phase_summary
    exit 0
fi

phase_begin 'cargo build (release, aarch64)'
cargo_build
phase_end
report_binary
phase_summary

if [[ $SMOKE == 1 ]]; then
    exec "$REPO_ROOT/cross/run-aarch64.sh" "${SMOKE_ARGS[@]}"
fi
