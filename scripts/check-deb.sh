#!/usr/bin/env bash
# Checks the Debian package as an operator meets it. CI runs it (as root,
# before the tests); by hand: `sudo bash scripts/check-deb.sh [ARGS]`, ARGS
# passed to build-deb.sh (e.g. `--binary PATH` to check a binary built
# elsewhere).
#
#  1. builds it (scripts/build-deb.sh --profile $FLEETGATE_DEB_PROFILE;
#     default debug: the binary the tests build anyway, no release build);
#  2. installs it with dpkg -i: the user fleetgate, the owners, the conffile;
#  3. systemd-analyze verify accepts the unit, and its sandbox's exposure
#     (systemd-analyze security) stays at most $FLEETGATE_DEB_MAX_EXPOSURE;
#     LimitNOFILE covers mqtt.max_connections; the memory bound is under
#     the 150 MiB the config promises;
#  4. check-config accepts the installed config, as root and as the service
#     user;
#  5. runs the installed binary as the unit does (its ExecStart, user,
#     LimitNOFILE, working directory, no new privileges, a clean
#     environment) on the installed config with only its three listen
#     addresses moved to 127.0.0.1:0: it serves /healthz and MQTT, reloads
#     on SIGHUP (ExecReload), writes its spool, logs plain text, and exits
#     0 on SIGTERM;
#  6. again with auth turned on as README says (`fleetgate passwd add`,
#     [auth] uncommented): anonymous MQTT and tokenless HTTP are
#     refused, a user's token works, a user added later works after SIGHUP;
#  7. purges the package, and removes the user if this run created it.
#
# systemd itself need not run (CI's machine is a container): where it does,
# postinst has started the service on the installed ports, and this check
# stops it first. The sandbox is checked as the unit states it, not
# enforced here.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib-services.sh
source scripts/lib-services.sh

PROFILE=${FLEETGATE_DEB_PROFILE:-debug}
MAX_EXPOSURE=${FLEETGATE_DEB_MAX_EXPOSURE:-2.0}
UNIT=/lib/systemd/system/fleetgate.service
CONF=/etc/fleetgate/fleetgate.toml
T0=$SECONDS

fail() {
    printf 'check-deb: FAILED: %s\n' "$*" >&2
    exit 1
}
ok() { fg_info "ok: $*"; }

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs and purges the package)"

fg_section "Debian packages"
fg_ensure_packages systemd adduser binutils util-linux

# One check at a time on a machine: each installs and purges the package.
mkdir -p /run/lock
exec 8>/run/lock/fleetgate-check-deb.lock
flock -w 600 8 || fail "another check-deb.sh holds /run/lock/fleetgate-check-deb.lock"

if fg_pkg_installed fleetgate; then
    [ "${CI:-}" = true ] || fail "fleetgate is installed here; this check would replace and purge it (CI=true to allow)"
    fg_info "a fleetgate package is installed (an earlier run?): purging it first"
    dpkg --purge fleetgate
fi
user_existed=0
getent passwd fleetgate >/dev/null && user_existed=1

work=$(mktemp -d)
chmod 0755 "$work"
GW_PID=
cleanup() {
    local rc=$?
    set +e
    [ -n "$GW_PID" ] && kill -KILL "$GW_PID" 2>/dev/null
    if fg_pkg_installed fleetgate || dpkg-query -W fleetgate >/dev/null 2>&1; then
        dpkg --purge fleetgate >/dev/null
    fi
    if [ "$user_existed" = 0 ] && getent passwd fleetgate >/dev/null; then
        userdel fleetgate
        getent group fleetgate >/dev/null && groupdel fleetgate
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

fg_section "Build: scripts/build-deb.sh --profile $PROFILE"
t0=$SECONDS
deb=$(bash scripts/build-deb.sh --profile "$PROFILE" --out "$work" "$@" | tail -n 1)
[ -f "$deb" ] || fail "build-deb.sh made no package"
fg_info "$deb in $((SECONDS - t0))s"
contents=$(dpkg-deb --contents "$deb" | awk '{print $NF}')
for path in ./usr/bin/fleetgate ./etc/fleetgate/fleetgate.toml ./lib/systemd/system/fleetgate.service \
    ./var/lib/fleetgate/ ./usr/share/doc/fleetgate/copyright; do
    grep -qxF "$path" <<<"$contents" || fail "the package has no $path"
done
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = "$CONF" ] || fail "$CONF is not the one conffile"
ok "contents and conffiles"

fg_section "Install: dpkg -i"
dpkg -i "$deb"
if [ -d /run/systemd/system ]; then
    fg_info "systemd runs here: stopping the service postinst started, so this check owns the ports and the spool"
    systemctl stop fleetgate.service
fi
uid=$(id -u fleetgate) || fail "postinst created no user fleetgate"
[ "$uid" -lt 1000 ] || fail "fleetgate is not a system user (uid $uid)"
[ "$(getent passwd fleetgate | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the user fleetgate has a login shell"
[ "$(stat -c '%U:%G %a' /var/lib/fleetgate)" = "fleetgate:fleetgate 750" ] || fail "/var/lib/fleetgate is $(stat -c '%U:%G %a' /var/lib/fleetgate)"
[ "$(stat -c '%U:%G %a' /etc/fleetgate)" = "root:fleetgate 750" ] || fail "/etc/fleetgate is $(stat -c '%U:%G %a' /etc/fleetgate)"
ok "user fleetgate (uid $uid, no shell), /var/lib/fleetgate its own, /etc/fleetgate root:fleetgate 750"

fg_section "The unit: systemd-analyze verify, security, limits"
# verify also reads the units this one names (network-online.target...):
# any complaint about ours fails, and so does a non-zero status.
verify=$(systemd-analyze verify "$UNIT" 2>&1) || fail "systemd-analyze verify: $verify"
if grep -i fleetgate <<<"$verify"; then fail "systemd-analyze verify complains about the unit"; fi
ok "systemd-analyze verify $UNIT${verify:+ (about other units: $verify)}"
# --threshold counts in tenths of the level it prints (20: 2.0).
threshold=$(awk -v e="$MAX_EXPOSURE" 'BEGIN { printf "%d", e * 10 + 0.5 }')
security=$(systemd-analyze security --offline=true --threshold="$threshold" "$UNIT" 2>&1) || {
    printf '%s\n' "$security" >&2
    fail "the unit's exposure is over $MAX_EXPOSURE (the sandbox was loosened?)"
}
ok "$(grep -o 'Overall exposure level.*' <<<"$security") (at most $MAX_EXPOSURE)"

unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -n 1; }
for line in ProtectSystem=strict ProtectHome=yes PrivateTmp=yes NoNewPrivileges=yes \
    ReadWritePaths=/var/lib/fleetgate "ExecReload=/bin/kill -HUP \$MAINPID" User=fleetgate; do
    [ "$(unit_value "${line%%=*}")" = "${line#*=}" ] || fail "the unit does not say $line"
done
ok "ProtectSystem=strict, ProtectHome, PrivateTmp, NoNewPrivileges, ReadWritePaths=/var/lib/fleetgate only, reload by SIGHUP"

[ "$(grep -c '^ReadWritePaths=' "$UNIT")" -eq 1 ] || fail "the unit has more than one ReadWritePaths= line"

effective=$(/usr/bin/fleetgate check-config --config "$CONF") || fail "check-config refuses $CONF"
# One descriptor per MQTT connection (hand-offs to rumqttd use an
# in-process pipe), and room for HTTP, SMQ, the uplink and the spool. The
# Debug dump lists mqtt first: the first max_connections is mqtt's.
max_connections=$(sed -n 's/^ *max_connections: \([0-9]*\),$/\1/p' <<<"$effective" | head -n 1)
nofile=$(unit_value LimitNOFILE)
[ "$nofile" -ge "$((max_connections + 1024))" ] ||
    fail "LimitNOFILE=$nofile < mqtt.max_connections $max_connections + 1024 spare"
ok "LimitNOFILE=$nofile covers mqtt.max_connections $max_connections + 1024 spare"
bound=$(sed -n 's/^ *total *\([0-9.]*\) MiB$/\1/p' <<<"$effective")
# What the config's header promises a small box.
grep -q "memory bound of this file is under 150 MiB" "$CONF" || fail "$CONF no longer says its memory bound is under 150 MiB"
awk -v b="$bound" 'BEGIN { exit !(b > 0 && b < 150) }' || fail "the memory bound of $CONF is ${bound:-unknown} MiB, not under 150 as it says"
ok "memory bound $bound MiB, under the 150 MiB the config promises"

fg_section "check-config, as root and as the service user"
setpriv_fleetgate=(setpriv --reuid=fleetgate --regid=fleetgate --init-groups --no-new-privs --)
/usr/bin/fleetgate check-config --config "$CONF" >/dev/null
"${setpriv_fleetgate[@]}" /usr/bin/fleetgate check-config --config "$CONF" >/dev/null ||
    fail "the user fleetgate cannot use $CONF"
ok "fleetgate check-config --config $CONF"

# The unit's ExecStart, on a copy of the config with free ports.
read -ra exec_start <<<"$(unit_value ExecStart)"
[[ " ${exec_start[*]} " == *" --config $CONF "* ]] || fail "ExecStart does not use $CONF"
workdir=$(unit_value WorkingDirectory)

GW_LOG=
HTTP_ADDR=
MQTT_ADDR=
gw_start() {
    local config=$1 label=$2 waited=0 i
    local args=("${exec_start[@]}")
    for i in "${!args[@]}"; do [ "${args[$i]}" = "$CONF" ] && args[i]=$config; done
    GW_LOG=$work/$label.log
    (cd "$workdir" && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        prlimit --nofile="$nofile:$nofile" "${setpriv_fleetgate[@]}" "${args[@]}") \
        </dev/null >/dev/null 2>"$GW_LOG" &
    GW_PID=$!
    until grep -q 'fleetgate serving' "$GW_LOG"; do
        kill -0 "$GW_PID" 2>/dev/null || { cat "$GW_LOG" >&2; fail "$label: the gateway exited before serving"; }
        [ "$waited" -lt 600 ] || { cat "$GW_LOG" >&2; fail "$label: not serving after 60 s"; }
        sleep 0.1
        waited=$((waited + 1))
    done
    [ "$(readlink "/proc/$GW_PID/exe")" = /usr/bin/fleetgate ] || fail "$label: pid $GW_PID is not /usr/bin/fleetgate"
    [ "$(stat -c %U "/proc/$GW_PID")" = fleetgate ] || fail "$label: the gateway does not run as fleetgate"
    HTTP_ADDR=$(sed -n 's/.*fleetgate serving.* http_addr=\([0-9.:]*\).*/\1/p' "$GW_LOG")
    MQTT_ADDR=$(sed -n 's/.*fleetgate serving.* mqtt_addr=\([0-9.:]*\).*/\1/p' "$GW_LOG")
    ok "$label: serving (MQTT $MQTT_ADDR, HTTP $HTTP_ADDR) after $((waited / 10)).$((waited % 10)) s, as user fleetgate"
}

gw_stop() {
    local label=$1 rc=0
    kill -TERM "$GW_PID"
    # Within the unit's TimeoutStopSec (30 s), or systemd would SIGKILL.
    timeout 30 tail --pid="$GW_PID" -f /dev/null || fail "$label: still running 30 s after SIGTERM"
    wait "$GW_PID" || rc=$?
    GW_PID=
    [ "$rc" -eq 0 ] || { cat "$GW_LOG" >&2; fail "$label: exit status $rc after SIGTERM"; }
    grep -q 'gateway stopped' "$GW_LOG" || fail "$label: no 'gateway stopped' in the log"
    if grep -q $'\e\[' "$GW_LOG"; then fail "$label: colour codes in a log that is not a terminal"; fi
    ok "$label: SIGTERM: exit 0, 'gateway stopped', plain-text log ($(wc -l <"$GW_LOG") lines)"
}

# gw_sighup LABEL: what `systemctl reload` does; waits for the reload's log line.
gw_sighup() {
    local before waited=0
    before=$(grep -c 'SIGHUP: password and ACL files reloaded' "$GW_LOG" || true)
    kill -HUP "$GW_PID"
    until [ "$(grep -c 'SIGHUP: password and ACL files reloaded' "$GW_LOG" || true)" -gt "$before" ]; do
        grep -q 'SIGHUP: reload refused' "$GW_LOG" && { cat "$GW_LOG" >&2; fail "$1: reload refused"; }
        kill -0 "$GW_PID" 2>/dev/null || { cat "$GW_LOG" >&2; fail "$1: the gateway exited on SIGHUP"; }
        [ "$waited" -lt 100 ] || { cat "$GW_LOG" >&2; fail "$1: no reload 10 s after SIGHUP"; }
        sleep 0.1
        waited=$((waited + 1))
    done
    ok "$1: SIGHUP (ExecReload) reloaded the password and ACL files"
}

# http_status ADDR PATH [HEADER]: the status code of a GET.
http_status() {
    local line extra=
    [ -z "${3:-}" ] || extra="$3"$'\r\n'
    exec 3<>"/dev/tcp/${1%:*}/${1##*:}"
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n' "$2" "$1" "$extra" >&3
    IFS=' ' read -r -t 10 _ line _ <&3 || line=none
    exec 3<&-
    printf '%s' "$line"
}

# mqtt_connack ADDR: CONNECT (client id deb-check, no user name) and print
# the CONNACK's four bytes in hex (20020000: accepted).
mqtt_connack() {
    exec 3<>"/dev/tcp/${1%:*}/${1##*:}"
    printf '\x10\x15\x00\x04MQTT\x04\x02\x00\x3c\x00\x09deb-check' >&3
    timeout 10 head -c 4 <&3 | od -An -tx1 | tr -d ' \n'
    exec 3<&-
}

expect() { # WHAT GOT WANT
    [ "$2" = "$3" ] || fail "$1: got $2, want $3"
    ok "$1: $2"
}

# The installed config with its listeners on free loopback ports; nothing
# else may differ.
copy=$work/fleetgate.toml
sed -E 's/^listen = "127\.0\.0\.1:[0-9]+"$/listen = "127.0.0.1:0"/' "$CONF" >"$copy"
chmod 0644 "$copy"
changed=$(diff "$CONF" "$copy" | grep -c '^>' || true)
[ "$changed" -eq 3 ] || fail "expected to move 3 listen lines (mqtt, http, smq) in the copy, moved $changed"

fg_section "Run: the installed binary on the installed config, as the unit runs it"
gw_start "$copy" installed
expect "GET /healthz" "$(http_status "$HTTP_ADDR" /healthz)" 200
expect "GET /vehicles (no auth as installed)" "$(http_status "$HTTP_ADDR" /vehicles)" 200
expect "MQTT CONNECT" "$(mqtt_connack "$MQTT_ADDR")" 20020000
gw_sighup installed
[ "$(stat -c %U /var/lib/fleetgate/spool 2>/dev/null)" = fleetgate ] || fail "no spool written under /var/lib/fleetgate"
ok "the spool is in /var/lib/fleetgate/spool, owned by fleetgate"
gw_stop installed

fg_section "Run: with auth turned on as README says"
passwd=/etc/fleetgate/passwd
/usr/bin/fleetgate passwd add "$passwd" deb-check --password first-secret --iterations 10000
[ "$(stat -c %G:%a "$passwd")" = fleetgate:640 ] || fail "a new password file should be fleetgate:640, is $(stat -c %G:%a "$passwd")"
auth_copy=$work/fleetgate-auth.toml
sed -e 's/^# \[auth\]$/[auth]/' -e 's/^# password_file = /password_file = /' "$copy" >"$auth_copy"
chmod 0644 "$auth_copy"
grep -q '^password_file = "/etc/fleetgate/passwd"$' "$auth_copy" || fail "the config has no '# password_file = \"$passwd\"' line to uncomment"
gw_start "$auth_copy" auth
expect "GET /healthz without a token" "$(http_status "$HTTP_ADDR" /healthz)" 200
expect "GET /vehicles without a token" "$(http_status "$HTTP_ADDR" /vehicles)" 401
expect "GET /vehicles with a user's token" "$(http_status "$HTTP_ADDR" /vehicles 'Authorization: Bearer deb-check:first-secret')" 200
expect "anonymous MQTT CONNECT" "$(mqtt_connack "$MQTT_ADDR")" 20020005
/usr/bin/fleetgate passwd add "$passwd" deb-later --password later-secret --iterations 10000
expect "a user added since the start, before SIGHUP" "$(http_status "$HTTP_ADDR" /vehicles 'Authorization: Bearer deb-later:later-secret')" 401
gw_sighup auth
expect "the same user after SIGHUP" "$(http_status "$HTTP_ADDR" /vehicles 'Authorization: Bearer deb-later:later-secret')" 200
gw_stop auth

fg_section "Remove: dpkg --purge"
rm -f "$passwd"
dpkg --purge fleetgate
for path in /usr/bin/fleetgate "$UNIT" /etc/fleetgate /var/lib/fleetgate; do
    [ ! -e "$path" ] || fail "$path is still there after purge"
done
ok "purged: no binary, unit, config or spool left"
fg_info "check-deb.sh: all checks passed in $((SECONDS - T0))s"
