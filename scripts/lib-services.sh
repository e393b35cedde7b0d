# shellcheck shell=bash
# Helpers for scripts/test.sh: Debian packages and a loopback-only RabbitMQ
# for the integration tests, sourced by test.sh. No systemd needed: RabbitMQ is
# started by hand as a private node of the current user. Run directly (see
# the end of this file) it starts/stops that node or runs its CLI against it.
#
# Knobs (environment):
#   FLEETGATE_TEST_AMQP_URL     already set: use that broker, start nothing
#   FLEETGATE_RABBITMQ_DIR      state dir of the private node
#                               (default ${XDG_STATE_HOME:-$HOME/.local/state}/fleetgate/rabbitmq)
#   FLEETGATE_RABBITMQ_TIMEOUT  seconds to wait for the node to boot (default 120)
#   FLEETGATE_STOP_SERVICES     1: stop a broker this run started when it ends
#                               (default 1 when CI=true, else 0: left up so the next run is fast)
#   FLEETGATE_SKIP_APT          1: never call apt-get

fg_section() { printf '\n==> %s\n' "$*"; }
fg_info() { printf '    %s\n' "$*"; }
fg_die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------

fg_as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@" || sudo "$@"
    else
        fg_die "need root for: $* (not root and no sudo)"
    fi
}

fg_pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# fg_ensure_packages PKG...: install whatever of PKG is missing; apt-get update
# only when something is missing.
fg_ensure_packages() {
    local missing=() p
    for p in "$@"; do
        fg_pkg_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        fg_info "all present: $*"
        return 0
    fi
    if [ "${FLEETGATE_SKIP_APT:-0}" = 1 ]; then
        fg_die "missing Debian packages: ${missing[*]} (FLEETGATE_SKIP_APT=1)"
    fi
    command -v apt-get >/dev/null 2>&1 || fg_die "missing packages ${missing[*]} and no apt-get"
    fg_info "installing: ${missing[*]}"
    local t0=$SECONDS
    local apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    fg_as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 update
    fg_as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" \
        --no-install-recommends "${missing[@]}" </dev/null
    fg_info "installed in $((SECONDS - t0))s"
}

# --------------------------------------------------------------------------
# RabbitMQ
# --------------------------------------------------------------------------

FG_AMQP_HOST=127.0.0.1
FG_AMQP_PORT=5672
FG_RABBIT_DIST_PORT=25672
FG_RABBIT_NODENAME=fleetgate-test@localhost
FG_RABBIT_STARTED=0
FG_RABBIT_LAUNCHER=

# True when something accepts TCP connections on HOST:PORT (no ss/nc needed).
fg_port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

fg_rabbit_dir() {
    local home=${HOME:-}
    [ -n "$home" ] || home=$(getent passwd "$(id -u)" | cut -d: -f6)
    printf '%s' "${FLEETGATE_RABBITMQ_DIR:-${XDG_STATE_HOME:-$home/.local/state}/fleetgate/rabbitmq}"
}

# The Debian package puts the real scripts in /usr/lib/rabbitmq/bin; /usr/sbin
# has wrappers that, run as root, switch to the rabbitmq user (HOME
# /var/lib/rabbitmq, its own Erlang cookie). We run our own node as the
# current user, so call the real scripts with our own HOME (= our cookie).
fg_rabbit_bin() {
    local d
    for d in /usr/lib/rabbitmq/bin /usr/lib/rabbitmq/sbin; do
        [ -x "$d/$1" ] && { printf '%s/%s' "$d" "$1"; return 0; }
    done
    command -v "$1"
}

# The environment of our private node, as NAME=VALUE words for env(1).
fg_rabbit_envvars() {
    local dir
    dir=$(fg_rabbit_dir)
    FG_RABBIT_ENV=(
        HOME="$dir/home"
        ERL_EPMD_ADDRESS=127.0.0.1
        ERL_CRASH_DUMP="$dir/log/erl_crash.dump"
        RABBITMQ_NODENAME="$FG_RABBIT_NODENAME"
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
        RABBITMQ_MNESIA_BASE="$dir/mnesia"
        RABBITMQ_LOG_BASE="$dir/log"
        RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
        RABBITMQ_NODE_IP_ADDRESS="$FG_AMQP_HOST"
        RABBITMQ_NODE_PORT="$FG_AMQP_PORT"
        RABBITMQ_DIST_PORT="$FG_RABBIT_DIST_PORT"
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
        RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    )
}

# Run a RabbitMQ program (rabbitmqctl, rabbitmq-diagnostics...) against our node.
fg_rabbit_env() {
    local prog
    prog=$(fg_rabbit_bin "$1") || fg_die "RabbitMQ program $1 not found"
    shift
    fg_rabbit_envvars
    env "${FG_RABBIT_ENV[@]}" "$prog" "$@"
}

fg_rabbit_log_tail() {
    local dir f
    dir=$(fg_rabbit_dir)
    for f in "$dir/log/stdout.log" "$dir/log/$FG_RABBIT_NODENAME.log"; do
        [ -s "$f" ] || continue
        printf -- '---- last lines of %s ----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

# Our launcher's pid (the rabbitmq-server script, which runs as long as the node).
fg_rabbit_pid_alive() {
    local pidf
    pidf="$(fg_rabbit_dir)/launcher.pid"
    [ -s "$pidf" ] || return 1
    local pid
    pid=$(cat "$pidf")
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q rabbitmq
}

# While we boot the node: is it still there? The launcher we just forked is
# checked by pid alone, because until its subshell has exec'd, its cmdline is
# still this script's (the cmdline test in fg_rabbit_pid_alive is for stale pid
# files from earlier runs, and raced with that exec: CI saw "exited" at 0 s).
fg_rabbit_booting() {
    if [ -n "${FG_RABBIT_LAUNCHER:-}" ]; then
        kill -0 "$FG_RABBIT_LAUNCHER" 2>/dev/null
    else
        fg_rabbit_pid_alive
    fi
}

fg_rabbit_write_config() {
    local dir=$1
    mkdir -p "$dir/home" "$dir/log" "$dir/mnesia"
    chmod 700 "$dir/home"
    : >"$dir/rabbitmq-env.conf" # keep /etc/rabbitmq/rabbitmq-env.conf out of it
    cat >"$dir/rabbitmq.conf" <<EOF
# written by scripts/lib-services.sh; a throwaway test broker
listeners.tcp.1 = $FG_AMQP_HOST:$FG_AMQP_PORT
loopback_users.guest = true
default_user = guest
default_pass = guest
log.file.level = info
log.console = false
disk_free_limit.absolute = 50MB
EOF
    printf '[].\n' >"$dir/advanced.config"
    printf '[].\n' >"$dir/enabled_plugins"
}

# Start the private node (fresh data every start) and wait until it serves.
fg_rabbit_start() {
    local dir timeout t0
    dir=$(fg_rabbit_dir)
    timeout=${FLEETGATE_RABBITMQ_TIMEOUT:-120}
    t0=$SECONDS
    if fg_rabbit_pid_alive; then
        fg_info "our node (pid $(cat "$dir/launcher.pid")) is still booting; waiting for it"
    else
        fg_rabbit_write_config "$dir"
        rm -rf "${dir:?}/mnesia"/* "$dir/log"/*
        fg_info "starting RabbitMQ node $FG_RABBIT_NODENAME on $FG_AMQP_HOST:$FG_AMQP_PORT (state: $dir)"
        local prog
        prog=$(fg_rabbit_bin rabbitmq-server) || fg_die "rabbitmq-server not found"
        fg_rabbit_envvars
        # setsid + redirections: the node must not hold our stdout/stderr
        # (a CI runner would wait on them) nor die with our process group.
        # -w: should setsid have to fork (we lead a process group), it still
        # lives as long as the node, so the launcher pid stays meaningful.
        (cd "$dir" && exec setsid -w env "${FG_RABBIT_ENV[@]}" "$prog" >"$dir/log/stdout.log" 2>&1 </dev/null) &
        FG_RABBIT_LAUNCHER=$!
        echo "$FG_RABBIT_LAUNCHER" >"$dir/launcher.pid"
        # shellcheck disable=SC2034 # read by scripts/test.sh
        FG_RABBIT_STARTED=1
    fi
    # Poll the AMQP port (opens near the end of boot), then confirm with the
    # CLI that boot has completed.
    local next=5
    while ! fg_port_open "$FG_AMQP_HOST" "$FG_AMQP_PORT"; do
        if ! fg_rabbit_booting; then
            fg_rabbit_log_tail
            fg_die "RabbitMQ exited while starting (logs in $dir/log)"
        fi
        if [ $((SECONDS - t0)) -ge "$timeout" ]; then
            fg_rabbit_log_tail
            fg_die "RabbitMQ did not open $FG_AMQP_HOST:$FG_AMQP_PORT within ${timeout}s (logs in $dir/log)"
        fi
        if [ $((SECONDS - t0)) -ge "$next" ]; then
            fg_info "waiting for RabbitMQ... $((SECONDS - t0))s"
            next=$((next + 5))
        fi
        sleep 0.5
    done
    if ! fg_rabbit_env rabbitmqctl -q await_startup --timeout "$timeout" >/dev/null; then
        fg_rabbit_log_tail
        fg_die "rabbitmqctl await_startup failed (logs in $dir/log)"
    fi
    if ! fg_rabbit_env rabbitmqctl -q authenticate_user guest guest >/dev/null; then
        fg_rabbit_log_tail
        fg_die "RabbitMQ is up but guest/guest does not authenticate"
    fi
    fg_info "RabbitMQ ready in $((SECONDS - t0))s (pid $(cat "$dir/launcher.pid"), log $dir/log/$FG_RABBIT_NODENAME.log)"
}

fg_rabbit_stop() {
    fg_rabbit_pid_alive || return 0
    fg_info "stopping RabbitMQ node $FG_RABBIT_NODENAME"
    local pid t0=$SECONDS
    pid=$(cat "$(fg_rabbit_dir)/launcher.pid")
    fg_rabbit_env rabbitmqctl -q stop --idempotent >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    # rabbitmqctl returns before the VM has exited: wait, so that a new start
    # does not meet the old node.
    while fg_rabbit_pid_alive; do
        if [ $((SECONDS - t0)) -ge 30 ]; then
            fg_info "still running after 30s; killing $pid"
            kill -9 "$pid" 2>/dev/null || true
            pkill -9 -P "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    fg_info "stopped in $((SECONDS - t0))s"
}

# Make sure a broker answers on 127.0.0.1:5672 and export
# FLEETGATE_TEST_AMQP_URL. Serialised with flock: several runs may start at once.
fg_ensure_rabbitmq() {
    if [ -n "${FLEETGATE_TEST_AMQP_URL:-}" ]; then
        fg_info "FLEETGATE_TEST_AMQP_URL is set by the caller; using that broker as is"
        return 0
    fi
    local url="amqp://guest:guest@$FG_AMQP_HOST:$FG_AMQP_PORT/%2f"
    if fg_port_open "$FG_AMQP_HOST" "$FG_AMQP_PORT"; then
        fg_info "a broker already answers on $FG_AMQP_HOST:$FG_AMQP_PORT; using it"
    else
        local dir
        dir=$(fg_rabbit_dir)
        mkdir -p "$dir"
        exec 9>"$dir/.lock"
        flock -w "$((${FLEETGATE_RABBITMQ_TIMEOUT:-120} + 60))" 9 || fg_die "timed out waiting for $dir/.lock"
        if fg_port_open "$FG_AMQP_HOST" "$FG_AMQP_PORT"; then
            fg_info "a broker came up on $FG_AMQP_HOST:$FG_AMQP_PORT meanwhile; using it"
        else
            fg_rabbit_start
        fi
        flock -u 9
        exec 9>&-
    fi
    export FLEETGATE_TEST_AMQP_URL="$url"
    fg_info "FLEETGATE_TEST_AMQP_URL=$FLEETGATE_TEST_AMQP_URL"
}

# Run directly, it manages the test broker by hand:
#   bash scripts/lib-services.sh start|stop|status
#   bash scripts/lib-services.sh rabbitmqctl list_queues   (any RabbitMQ CLI, against our node)
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
    start) fg_ensure_rabbitmq ;;
    stop) fg_rabbit_stop ;;
    status) fg_rabbit_env rabbitmq-diagnostics -q status ;;
    rabbitmqctl | rabbitmq-diagnostics | rabbitmq-plugins | rabbitmq-queues) fg_rabbit_env "$@" ;;
    *) fg_die "usage: bash $0 start|stop|status|rabbitmqctl ARGS..." ;;
    esac
fi
