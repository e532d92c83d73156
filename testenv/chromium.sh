# The browser piece (sourced by testenv.sh): Debian's chromium and chromium-driver (installed when missing),
# chromedriver listening on 127.0.0.1:9515 for the console's browser tests, and axe-core from npm (the
# accessibility checker the tests run inside each page). Each test session starts its own headless Chromium
# through it (the flags are the tests' own, in host/tests/common/browser.rs).

CHROMIUM_DIR="$TE/chromium"
CHROMEDRIVER_PORT=9515
# Pinned: a new axe-core release adds rules, and a test run must not start failing by itself.
AXE_VERSION=4.11.4
AXE_SCRIPT="$CHROMIUM_DIR/axe/node_modules/axe-core/axe.min.js"
AXE_STAMP="$CHROMIUM_DIR/axe/.omserver-axe-version"

axe_current() { [[ -f $AXE_SCRIPT && "$(cat "$AXE_STAMP" 2>/dev/null)" == "$AXE_VERSION" ]]; }

# axe-core is a build artefact like the venv: installed once into target/testenv/chromium/axe (ignored), kept by
# down, reinstalled when AXE_VERSION changes.
axe_install() {
    axe_current && return
    command -v npm >/dev/null || apt_install npm
    mkdir -p "$CHROMIUM_DIR/axe"
    say "chromium: installing axe-core $AXE_VERSION from npm"
    npm install --prefix "$CHROMIUM_DIR/axe" --no-audit --no-fund --no-save --silent "axe-core@$AXE_VERSION" \
        >>"$CHROMIUM_DIR/npm.log" 2>&1 || die "npm install axe-core@$AXE_VERSION failed (see $CHROMIUM_DIR/npm.log)"
    [[ -f $AXE_SCRIPT ]] || die "axe-core installed but $AXE_SCRIPT is missing"
    echo "$AXE_VERSION" >"$AXE_STAMP"
}

chromium_pidfile() { echo "$CHROMIUM_DIR/chromedriver.pid"; }
chromium_running() { running_pid "$(chromium_pidfile)" "--port=$CHROMEDRIVER_PORT" >/dev/null; }

chromium_up() {
    local started
    started=$(now_ms)
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        apt_install chromium chromium-driver fonts-dejavu-core
    fi
    mkdir -p "$CHROMIUM_DIR"
    axe_install
    if ! chromium_running; then
        mark_down chromium
        listening 127.0.0.1 "$CHROMEDRIVER_PORT" &&
            die "127.0.0.1:$CHROMEDRIVER_PORT is already in use by a process this environment did not start"
        spawn "$CHROMIUM_DIR/chromedriver.log" "$(chromium_pidfile)" chromedriver --port="$CHROMEDRIVER_PORT" \
            --allowed-ips=127.0.0.1
    fi
    wait_for 15 listening 127.0.0.1 "$CHROMEDRIVER_PORT" ||
        die "chromedriver is not listening on 127.0.0.1:$CHROMEDRIVER_PORT (see $CHROMIUM_DIR/chromedriver.log)"
    mark_ready chromium
    say "chromedriver up on 127.0.0.1:$CHROMEDRIVER_PORT, $(chromium --version 2>/dev/null | head -1) ($(since "$started"))"
}

chromium_down() {
    mark_down chromium
    stop_groups 5 "$(chromium_pidfile)"
    say "chromedriver down"
}

chromium_status() {
    if chromium_running; then
        say "chromium: chromedriver running (pid $(cat "$(chromium_pidfile)")) on 127.0.0.1:$CHROMEDRIVER_PORT"
    else
        say "chromium: chromedriver not running"
        return 1
    fi
}

chromium_json() {
    if ready chromium; then
        printf '{"webdriver_url": %s, "binary": %s, "axe": %s}' "$(json_str "http://127.0.0.1:$CHROMEDRIVER_PORT")" \
            "$(json_str "$(command -v chromium)")" "$(json_str "$AXE_SCRIPT")"
    else
        printf '{"webdriver_url": "", "binary": "", "axe": ""}'
    fi
}
