#!/usr/bin/env bash
# The test environment: `testenv.sh up|down|status [PIECE…]`, PIECE one of ssh, netns, venv, salt, func, chromium, smtp, haproxy
# (default: all, in that order for up; the reverse for down). See testenv/README.md.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$TESTENV_SRC/ssh.sh"
source "$TESTENV_SRC/netns.sh"
source "$TESTENV_SRC/venv.sh"
source "$TESTENV_SRC/salt.sh"
source "$TESTENV_SRC/func.sh"
source "$TESTENV_SRC/chromium.sh"
source "$TESTENV_SRC/smtp.sh"
source "$TESTENV_SRC/haproxy.sh"

PIECES=(ssh netns venv salt func chromium smtp haproxy)

# env.json (read by host/tests/common/testenv.rs). Written as soon as any piece is up (`up chromium` alone is
# enough for the browser tests); a piece that is not up has placeholder values (empty strings and lists, port 0)
# so the shape stays valid. Removed when every piece is down.
write_env_json() {
    local piece any=""
    for piece in "${PIECES[@]}"; do ready "$piece" && any=yes; done
    if [[ -z $any ]]; then
        rm -f "$TE/env.json"
        return
    fi
    # The salt password is in it: readable by its owner only.
    (umask 077 && printf '{\n  "ssh": %s,\n  "netns": %s,\n  "ansible": %s,\n  "schemathesis": %s,\n  "salt": %s,\n  "func": %s,\n  "chromium": %s,\n  "smtp": %s,\n  "haproxy": %s\n}\n' \
        "$(ssh_json)" "$(netns_json)" "$(venv_json)" "$(schemathesis_json)" "$(salt_json)" "$(func_json)" "$(chromium_json)" "$(smtp_json)" "$(haproxy_json)" >"$TE/env.json.tmp")
    py -c 'import json, sys; json.load(open(sys.argv[1]))' "$TE/env.json.tmp" || die "env.json would not be valid JSON"
    mv "$TE/env.json.tmp" "$TE/env.json"
}

# The piece `up` is bringing up; when the script fails during it, that piece is not up.
CURRENT=""
on_exit() {
    local status=$?
    [[ $status -ne 0 && -n $CURRENT ]] && mark_down "$CURRENT"
    write_env_json
    exit "$status"
}

usage() { echo "usage: testenv.sh up|down|status [ssh|netns|venv|salt|func|chromium|smtp|haproxy]…" >&2; exit 2; }

main() {
    local command=${1:-}
    [[ -n $command ]] || usage
    shift
    local pieces=("$@") piece
    ((${#pieces[@]})) || pieces=("${PIECES[@]}")
    for piece in "${pieces[@]}"; do
        [[ " ${PIECES[*]} " == *" $piece "* ]] || usage
    done
    mkdir -p "$TE" "$STATE"
    resolve_python
    # One up/down at a time per runtime directory; status does not need the lock.
    if [[ $command != status ]]; then
        exec 9>"$TE/.lock"
        flock 9
    fi
    # Whatever happens (a piece failing included), env.json ends up describing what is up.
    [[ $command == status ]] || trap on_exit EXIT
    case $command in
    up)
        local started
        started=$(now_ms)
        for piece in "${pieces[@]}"; do
            CURRENT=$piece
            "${piece}_up"
            CURRENT=""
            write_env_json
        done
        say "up in $(since "$started"); environment described in $TE/env.json"
        ;;
    down)
        local i
        for ((i = ${#pieces[@]} - 1; i >= 0; i--)); do
            "${pieces[i]}_down"
            write_env_json
        done
        ;;
    status)
        local rc=0
        for piece in "${pieces[@]}"; do "${piece}_status" || rc=3; done
        [[ -f $TE/env.json ]] && say "env.json: $TE/env.json" || say "env.json: absent"
        return $rc
        ;;
    *) usage ;;
    esac
}

main "$@"
