# The mail piece (sourced by testenv.sh): aiosmtpd from the venv on 127.0.0.1:2525, keeping every message in
# $TE/smtp/mail for the notification tests (see smtp_sink.py). Needs the venv piece.

SMTP_DIR="$TE/smtp"
SMTP_ADDRESS=127.0.0.1
SMTP_PORT=2525
SMTP_SINK="$TESTENV_SRC/smtp_sink.py"

smtp_pidfile() { echo "$SMTP_DIR/sink.pid"; }
smtp_running() { running_pid "$(smtp_pidfile)" "$SMTP_SINK" >/dev/null; }

smtp_up() {
    local started stamp
    started=$(now_ms)
    venv_current || die "the smtp piece needs the venv piece: testenv.sh up venv smtp"
    mkdir -p "$SMTP_DIR/mail"
    stamp=$(sha256sum "$SMTP_SINK" | cut -d' ' -f1)
    if ! smtp_running || [[ $(cat "$SMTP_DIR/sink.sha256" 2>/dev/null) != "$stamp" ]]; then
        mark_down smtp
        smtp_stop
        listening "$SMTP_ADDRESS" "$SMTP_PORT" &&
            die "$SMTP_ADDRESS:$SMTP_PORT is already in use by a process this environment did not start"
        spawn "$SMTP_DIR/sink.log" "$(smtp_pidfile)" "$VENV/bin/python" "$SMTP_SINK" \
            --address "$SMTP_ADDRESS" --port "$SMTP_PORT" --maildir "$SMTP_DIR/mail"
        echo "$stamp" >"$SMTP_DIR/sink.sha256"
    fi
    wait_for 15 listening "$SMTP_ADDRESS" "$SMTP_PORT" ||
        die "the mail sink is not listening on $SMTP_ADDRESS:$SMTP_PORT (see $SMTP_DIR/sink.log)"
    mark_ready smtp
    say "smtp up: $SMTP_ADDRESS:$SMTP_PORT, messages in $SMTP_DIR/mail ($(since "$started"))"
}

smtp_stop() {
    local pid
    pid=$(cat "$(smtp_pidfile)" 2>/dev/null) || return 0
    stop_tree 5 "$pid" "$SMTP_SINK"
    rm -f "$(smtp_pidfile)"
}

smtp_down() {
    mark_down smtp
    smtp_stop
    say "smtp down"
}

smtp_status() {
    if smtp_running; then
        say "smtp: running (pid $(cat "$(smtp_pidfile)")) on $SMTP_ADDRESS:$SMTP_PORT"
    else
        say "smtp: not running"
        return 1
    fi
}

smtp_json() {
    if ready smtp; then
        printf '{"host": %s, "port": %d, "maildir": %s}' "$(json_str "$SMTP_ADDRESS")" "$SMTP_PORT" \
            "$(json_str "$SMTP_DIR/mail")"
    else
        printf '{"host": "", "port": 0, "maildir": ""}'
    fi
}
