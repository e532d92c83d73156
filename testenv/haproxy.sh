# The load-balancer piece (sourced by testenv.sh): Debian's haproxy, installed when missing. It starts nothing:
# a test of several servers writes its own configuration (its servers listen on ports chosen at start) and runs
# its own haproxy (host/tests/common/balancer.rs). Debian's package leaves its service unstarted here.

HAPROXY_BIN=/usr/sbin/haproxy

haproxy_up() {
    local started
    started=$(now_ms)
    [[ -x $HAPROXY_BIN ]] || apt_install haproxy
    [[ -x $HAPROXY_BIN ]] || die "haproxy installed but $HAPROXY_BIN is missing"
    "$HAPROXY_BIN" -v >/dev/null 2>&1 || die "$HAPROXY_BIN -v failed"
    mark_ready haproxy
    say "haproxy up: $("$HAPROXY_BIN" -v 2>/dev/null | head -1 | cut -d' ' -f1-3) (each test runs its own) ($(since "$started"))"
}

haproxy_down() {
    mark_down haproxy
    say "haproxy down (nothing was running)"
}

haproxy_status() {
    if [[ -x $HAPROXY_BIN ]]; then
        say "haproxy: installed ($HAPROXY_BIN)"
    else
        say "haproxy: not installed"
        return 1
    fi
}

haproxy_json() {
    if ready haproxy; then
        printf '{"binary": %s}' "$(json_str "$HAPROXY_BIN")"
    else
        printf '{"binary": ""}'
    fi
}
