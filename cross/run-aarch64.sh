#!/usr/bin/env bash
# Smoke-test the cross-built aarch64 `ptz-edge` on this amd64 machine under qemu-user:
#
#   1. preflight  the sysroot's arm64 GStreamer decodes H.264 to JPEG under qemu
#                 (gst-launch: videotestsrc ! x264enc ! avdec_h264 ! jpegenc), and
#                 rtspsrc / h264parse / appsink are present
#   2. start      ptz-edge under `qemu-aarch64-static -L <sysroot>` on 127.0.0.1:<free port>,
#                 wait for GET /health = 200
#   3. simulator  the host's native `camera-sim` (cargo build --bin camera-sim), which
#                 prints {"rtsp_port":N,"urls":[...]} on its first stdout line
#   4. connect    POST /api/cameras/connect {"cameraId":"cam1","ip":"127.0.0.1","port":N,...}
#   5. frame      GET /api/cameras/cam1/frame until it is a JPEG; GET .../status
#   6. stop       POST /api/cameras/disconnect, SIGTERM, the process must exit
#
#   cross/run-aarch64.sh                # after cross/build-aarch64.sh
#   cross/run-aarch64.sh --no-camera    # stop after /health (no simulator)
#   cross/run-aarch64.sh --sim PATH     # use an already built camera-sim
#   cross/run-aarch64.sh --binary PATH  # another aarch64 ptz-edge
#
# Environment (optional): CARGO_TARGET_DIR, PTZ_SYSROOT_CACHE (as for the build script),
#   HEALTH_TIMEOUT=90 SIM_TIMEOUT=60 CONNECT_TIMEOUT=60 FRAME_TIMEOUT=60 STOP_TIMEOUT=15
#   (seconds), SIM_ARGS (camera-sim arguments; default "--port 0 --size 640x360 --fps 15"),
#   SIM_STREAM_PATH (default: the path of the simulator's first URL, else /1),
#   RUST_LOG (default info),
#   PTZ_SMOKE_DIR (logs and the fetched frame; default $CARGO_TARGET_DIR/aarch64-smoke).
# Exit status 0 only if every phase that ran passed.
set -euo pipefail

# shellcheck source=cross/common.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-90}
SIM_TIMEOUT=${SIM_TIMEOUT:-60}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-60}
FRAME_TIMEOUT=${FRAME_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-15}
WORK=${PTZ_SMOKE_DIR:-$TARGET_DIR/aarch64-smoke}
CAMERA_ID=cam1

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

BIN=$TARGET_DIR/$TARGET_TRIPLE/release/ptz-edge
SIM_BIN=''
CAMERA=1
PREFLIGHT=1
while [[ $# -gt 0 ]]; do
    case $1 in
    --binary) BIN=${2:?--binary needs a path}; shift ;;
    --sim) SIM_BIN=${2:?--sim needs a path}; shift ;;
    --no-camera) CAMERA=0 ;;
    --no-preflight) PREFLIGHT=0 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

command -v qemu-aarch64-static >/dev/null || die "qemu-aarch64-static not found: apt-get install qemu-user-static (or run cross/build-aarch64.sh)"
command -v curl >/dev/null || die "curl not found: apt-get install curl"
[[ -d $SYSROOT/usr/lib/aarch64-linux-gnu ]] || die "no arm64 sysroot at $SYSROOT: run cross/build-aarch64.sh first"
[[ -f $BIN ]] || die "no aarch64 binary at $BIN: run cross/build-aarch64.sh first"
mkdir -p "$WORK"

# Processes this script started; only these are ever signalled.
APP_PID=''
SIM_PID=''
# stop_pid PID NAME TIMEOUT: SIGTERM, wait, then SIGKILL; sets STOP_STATUS (exit status).
# Not for $(...): `wait` only works in the shell that started the process.
STOP_STATUS=''
stop_pid() {
    local pid=$1 name=$2 timeout=$3 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < timeout * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            warn "$name (pid $pid) ignored SIGTERM for ${timeout}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    STOP_STATUS=0
    wait "$pid" 2>/dev/null || STOP_STATUS=$?
}
cleanup() {
    local rc=$?
    if [[ -n $APP_PID ]]; then stop_pid "$APP_PID" ptz-edge 5; fi
    if [[ -n $SIM_PID ]]; then stop_pid "$SIM_PID" camera-sim 5; fi
    if [[ $rc -ne 0 ]]; then
        phase_summary
        printf '\nFAILED (exit %s). Logs: %s\n' "$rc" "$WORK" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port on 127.0.0.1 (nothing answers a connect to it).
free_port() {
    local p i
    for ((i = 0; i < 50; i++)); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            printf '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# http METHOD URL [JSON]: sets HTTP_CODE, HTTP_TYPE; body in $WORK/body.
http() {
    local method=$1 url=$2 data=${3:-} out
    local args=(-sS -m "${HTTP_MAX_TIME:-10}" -o "$WORK/body" -w '%{http_code} %{content_type}' -X "$method")
    [[ -n $data ]] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
    out=$(curl "${args[@]}" "$url" 2>"$WORK/curl.err") || out='000 -'
    HTTP_CODE=${out%% *}
    HTTP_TYPE=${out#* }
}

show_log() { # show_log FILE LINES
    [[ -s $1 ]] || return 0
    printf -- '--- last %s lines of %s ---\n' "$2" "$1" >&2
    tail -n "$2" "$1" >&2
    printf -- '---\n' >&2
}

GST_ENV=(
    # The arm64 gst-plugin-scanner can't be exec'd without binfmt_misc: scan in-process.
    GST_REGISTRY_FORK=no
    # A registry of its own (the host's amd64 one must not be mixed in), kept across runs.
    "GST_REGISTRY=$SYSROOT_CACHE/gst-registry-aarch64.bin"
    "GST_PLUGIN_SYSTEM_PATH_1_0=$SYSROOT/usr/lib/aarch64-linux-gnu/gstreamer-1.0"
    "GST_PLUGIN_SCANNER_1_0=$SYSROOT/usr/lib/aarch64-linux-gnu/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner"
    "FONTCONFIG_FILE=$SYSROOT/etc/fonts/fonts.conf"
)
QEMU=(qemu-aarch64-static -L "$SYSROOT")
# run_arm64 CMD...: an arm64 program with the sysroot's GStreamer, host plugin paths unset.
run_arm64() {
    env -u GST_PLUGIN_PATH -u GST_PLUGIN_PATH_1_0 -u GST_PLUGIN_SYSTEM_PATH \
        "${GST_ENV[@]}" "${QEMU[@]}" "$@"
}

# --- 1. preflight ---------------------------------------------------------------------
if [[ $PREFLIGHT == 1 ]]; then
    phase_begin 'preflight: arm64 gstreamer under qemu'
    rm -f "$WORK"/preflight-*.jpg
    if ! run_arm64 "$SYSROOT/usr/bin/gst-launch-1.0" -q \
        videotestsrc num-buffers=5 ! video/x-raw,format=I420,width=320,height=240 ! \
        x264enc tune=zerolatency ! h264parse ! avdec_h264 ! videoconvert ! jpegenc ! \
        multifilesink location="$WORK/preflight-%02d.jpg" >"$WORK/preflight.log" 2>&1 ||
        [[ ! -s $WORK/preflight-04.jpg ]]; then
        show_log "$WORK/preflight.log" 30
        die "the sysroot's arm64 GStreamer could not decode H.264 to JPEG under qemu; rebuild it: cross/build-aarch64.sh --refresh-sysroot"
    fi
    for el in rtspsrc rtph264depay h264parse avdec_h264 appsink jpegenc videoscale; do
        run_arm64 "$SYSROOT/usr/bin/gst-inspect-1.0" --exists "$el" ||
            die "GStreamer element '$el' missing from the arm64 sysroot"
    done
    phase_end
fi

# --- 2. start the appliance -----------------------------------------------------------
phase_begin 'start ptz-edge under qemu, GET /health'
PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
rm -f "$WORK/cameras.json"
log "$(file -b "$BIN" 2>/dev/null | cut -d, -f1-2 || true)"
log "PORT=$PORT BIND=127.0.0.1 ${QEMU[*]} $BIN   (log: $WORK/ptz-edge.log)"
run_arm64_app() {
    exec env -u GST_PLUGIN_PATH -u GST_PLUGIN_PATH_1_0 -u GST_PLUGIN_SYSTEM_PATH \
        "${GST_ENV[@]}" PORT="$PORT" BIND=127.0.0.1 RUST_LOG="${RUST_LOG:-info}" \
        PTZ_EDGE_STATE="$WORK/cameras.json" PTZ_EDGE_MDNS=off \
        "${QEMU[@]}" "$BIN"
}
run_arm64_app >"$WORK/ptz-edge.log" 2>&1 </dev/null &
APP_PID=$!
deadline=$((SECONDS + HEALTH_TIMEOUT))
while :; do
    if ! kill -0 "$APP_PID" 2>/dev/null; then
        status=0
        wait "$APP_PID" || status=$?
        APP_PID=''
        show_log "$WORK/ptz-edge.log" 40
        if [[ $status -eq 0 ]]; then
            die "ptz-edge ran under qemu but exited (status 0) before serving /health on port $PORT; is src/main.rs still a stub?"
        fi
        die "ptz-edge exited with status $status before serving /health (see $WORK/ptz-edge.log)"
    fi
    HTTP_MAX_TIME=3 http GET "$BASE/health"
    [[ $HTTP_CODE == 200 ]] && break
    if ((SECONDS >= deadline)); then
        show_log "$WORK/ptz-edge.log" 40
        die "GET /health did not answer 200 within ${HEALTH_TIMEOUT}s (last: HTTP $HTTP_CODE $(head -c 200 "$WORK/curl.err" "$WORK/body" 2>/dev/null || true))"
    fi
    sleep 0.5
done
log "GET /health -> 200 $(head -c 300 "$WORK/body")"
phase_end

if [[ $CAMERA == 0 ]]; then
    phase_begin 'stop (SIGTERM)'
    stop_pid "$APP_PID" ptz-edge "$STOP_TIMEOUT"
    APP_PID=''
    phase_end "exit status $STOP_STATUS"
    phase_summary
    printf '\nOK: ptz-edge (aarch64) started under qemu and answered /health\n' >&2
    exit 0
fi

# --- 3. simulator -----------------------------------------------------------------------
phase_begin 'camera-sim (host build + start)'
if [[ -z $SIM_BIN ]]; then
    log "building the host simulator: cargo build --locked --bin camera-sim (CARGO_TARGET_DIR=$TARGET_DIR)"
    CARGO_TARGET_DIR=$TARGET_DIR nice -n 10 cargo build --locked --quiet \
        --manifest-path "$REPO_ROOT/Cargo.toml" --bin camera-sim ||
        die "could not build camera-sim for the host (cargo error above; it needs the amd64 GStreamer and gstreamer-rtsp-server dev packages)"
    SIM_BIN=$TARGET_DIR/debug/camera-sim
fi
[[ -x $SIM_BIN ]] || die "camera-sim not found at $SIM_BIN"
# Any free port; a small picture keeps qemu's software decode light on a shared machine.
read -r -a sim_args <<<"${SIM_ARGS:---port 0 --size 640x360 --fps 15}"
"$SIM_BIN" "${sim_args[@]}" >"$WORK/camera-sim.out" 2>"$WORK/camera-sim.log" </dev/null &
SIM_PID=$!
deadline=$((SECONDS + SIM_TIMEOUT))
sim_line=''
while :; do
    sim_line=$(head -n 1 "$WORK/camera-sim.out" 2>/dev/null || true)
    [[ $sim_line == *rtsp_port* ]] && break
    if ! kill -0 "$SIM_PID" 2>/dev/null; then
        SIM_PID=''
        show_log "$WORK/camera-sim.log" 30
        die "camera-sim exited before printing its {\"rtsp_port\":N,...} line"
    fi
    if ((SECONDS >= deadline)); then
        show_log "$WORK/camera-sim.log" 30
        die "camera-sim printed no {\"rtsp_port\":N,...} line within ${SIM_TIMEOUT}s"
    fi
    sleep 0.2
done
RTSP_PORT=$(sed -n 's/.*"rtsp_port"[[:space:]]*:[[:space:]]*\([0-9]\{1,5\}\).*/\1/p' <<<"$sim_line")
[[ -n $RTSP_PORT ]] || die "could not read rtsp_port from camera-sim's line: $sim_line"
first_url=$(grep -o 'rtsp://[^"]*' <<<"$sim_line" | head -n 1 || true)
stream_path=${SIM_STREAM_PATH:-}
if [[ -z $stream_path && $first_url =~ ^rtsp://[^/]+(/.*)$ ]]; then
    stream_path=${BASH_REMATCH[1]}
fi
stream_path=${stream_path:-/1}
log "camera-sim: $sim_line"
phase_end

# --- 4. connect ---------------------------------------------------------------------------
phase_begin 'POST /api/cameras/connect'
connect_json=$(printf '{"cameraId":"%s","ip":"127.0.0.1","port":%s,"username":"","password":"","streamPath":"%s"}' \
    "$CAMERA_ID" "$RTSP_PORT" "$stream_path")
log "POST /api/cameras/connect $connect_json"
HTTP_MAX_TIME=$CONNECT_TIMEOUT http POST "$BASE/api/cameras/connect" "$connect_json"
connect_result="HTTP $HTTP_CODE $(head -c 300 "$WORK/body" 2>/dev/null || true)"
log "-> $connect_result"
if [[ $HTTP_CODE == 200 ]] && grep -q '"success"[[:space:]]*:[[:space:]]*true' "$WORK/body"; then
    phase_end
else
    # Software decode under qemu is ~10x slower than on a device: the appliance may give
    # up waiting for the first frame while the camera keeps connecting. The frame phase
    # decides; this is reported either way.
    warn "connect did not answer 200/success: $connect_result"
    phase_end 'not 200'
    CONNECT_FAILED=1
fi

# --- 5. frame --------------------------------------------------------------------------------
phase_begin "GET /api/cameras/$CAMERA_ID/frame"
deadline=$((SECONDS + FRAME_TIMEOUT))
while :; do
    http GET "$BASE/api/cameras/$CAMERA_ID/frame"
    if [[ $HTTP_CODE == 200 && $HTTP_TYPE == image/jpeg* ]] &&
        [[ $(head -c 2 "$WORK/body" | od -An -tx1 | tr -d ' \n') == ffd8 ]]; then
        cp "$WORK/body" "$WORK/frame.jpg"
        break
    fi
    if ! kill -0 "$APP_PID" 2>/dev/null; then
        show_log "$WORK/ptz-edge.log" 40
        die "ptz-edge died while waiting for a frame"
    fi
    if ((SECONDS >= deadline)); then
        show_log "$WORK/ptz-edge.log" 40
        die "no JPEG from /api/cameras/$CAMERA_ID/frame within ${FRAME_TIMEOUT}s (last: HTTP $HTTP_CODE $HTTP_TYPE $(head -c 200 "$WORK/body" 2>/dev/null | tr -c '[:print:]' '.' || true))"
    fi
    sleep 0.5
done
log "frame: $(human_size "$(stat -c %s "$WORK/frame.jpg")"), $(file -b "$WORK/frame.jpg" 2>/dev/null | grep -o '[0-9]\+x[0-9]\+' | tail -n 1 || echo '?') -> $WORK/frame.jpg"
http GET "$BASE/api/cameras/$CAMERA_ID/status"
log "GET /api/cameras/$CAMERA_ID/status -> HTTP $HTTP_CODE $(head -c 400 "$WORK/body")"
phase_end

# --- 6. stop ------------------------------------------------------------------------------------
phase_begin 'disconnect + stop (SIGTERM)'
http POST "$BASE/api/cameras/disconnect" "{\"cameraId\":\"$CAMERA_ID\"}"
log "POST /api/cameras/disconnect -> HTTP $HTTP_CODE $(head -c 200 "$WORK/body")"
stop_pid "$APP_PID" ptz-edge "$STOP_TIMEOUT"
APP_PID=''
app_status=$STOP_STATUS
stop_pid "$SIM_PID" camera-sim 5
SIM_PID=''
phase_end "ptz-edge exit status $app_status"
phase_summary

if [[ ${CONNECT_FAILED:-0} == 1 ]]; then
    printf '\nOK with a warning: a JPEG came through, but connect answered %s\n' "$connect_result" >&2
else
    printf '\nOK: ptz-edge (aarch64, qemu) served /health, connected to camera-sim and returned a JPEG\n' >&2
fi
