# The Python tools piece (sourced by testenv.sh): ansible-core, salt and CherryPy (salt-api's rest_cherrypy),
# aiosmtpd (the smtp piece's mail server) and schemathesis (host/tests/contract.rs), pinned, in <repo>/.venv. A stamp file records the pins it was built with; changing PINS reinstalls.

# salt 3008.5 cannot be installed from the registry here (it needs a certifi the registry lacks); 3008.4 can.
VENV_PINS="ansible-core==2.19.14 salt==3008.4 CherryPy==18.10.0 aiosmtpd==1.4.6 schemathesis==4.32.5"
VENV_STAMP="$VENV/.omserver-testenv-pins"

venv_current() {
    [[ -x $VENV/bin/python && -x $VENV/bin/ansible && -x $VENV/bin/st && "$(cat "$VENV_STAMP" 2>/dev/null)" == "$VENV_PINS" ]]
}

venv_up() {
    local started
    started=$(now_ms)
    if venv_current; then
        mark_ready venv
        say "venv up: $VENV ($VENV_PINS, already installed)"
        return
    fi
    mark_down venv
    if [[ ! -x $VENV/bin/python ]]; then
        py -m venv "$VENV" >>"$TE/venv.log" 2>&1 || {
            # Debian's python3 keeps ensurepip in a separate package.
            apt_install python3-venv
            py -m venv "$VENV" >>"$TE/venv.log" 2>&1 || die "python3 -m venv $VENV failed (see $TE/venv.log)"
        }
    fi
    say "venv: installing $VENV_PINS into $VENV (about a minute)"
    # --no-compile: byte-compiling all of salt costs more than a third of the install; Python compiles what it
    # imports on first use instead.
    # shellcheck disable=SC2086 # the pins are words
    "$VENV/bin/pip" install --disable-pip-version-check --no-input --no-compile -q $VENV_PINS >>"$TE/venv.log" 2>&1 ||
        die "pip install $VENV_PINS failed (see $TE/venv.log)"
    "$VENV/bin/ansible" --version >/dev/null 2>&1 || die "$VENV/bin/ansible --version fails after install"
    "$VENV/bin/st" --version >/dev/null 2>&1 || die "$VENV/bin/st --version fails after install"
    echo "$VENV_PINS" >"$VENV_STAMP"
    mark_ready venv
    say "venv up: $VENV ($VENV_PINS, $(since "$started"))"
}

# The venv is a build artefact, not a process: down leaves it for the next up.
venv_down() { :; }

venv_status() {
    if venv_current; then say "venv: $VENV ($VENV_PINS)"; else say "venv: missing or not at $VENV_PINS"; return 1; fi
}

venv_json() {
    local exe=""
    venv_current && exe="$VENV/bin/ansible"
    printf '{"executable": %s}' "$(json_str "$exe")"
}

# schemathesis' command line, `st`; its hooks and settings are testenv/schemathesis*.
schemathesis_json() {
    local exe=""
    venv_current && exe="$VENV/bin/st"
    printf '{"executable": %s}' "$(json_str "$exe")"
}
