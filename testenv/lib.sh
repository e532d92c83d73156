# Shared by the testenv scripts (sourced, not run): paths, messages, and the process helpers every piece uses.
# Every process a piece starts gets a pid file under $TE; "ours" means: alive, not a zombie, and its command line
# still names our runtime directory (a recycled pid never is).

TESTENV_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$TESTENV_SRC")"
# The runtime directory (keys, configs, pid files, logs); xtask passes $CARGO_TARGET_DIR/testenv when it is set.
TE="${OMSERVER_TESTENV_DIR:-$ROOT/target/testenv}"
# shellcheck disable=SC2034 # used by the pieces that source this file
VENV="$ROOT/.venv"
STATE="$TE/state"
# testenv.sh holds its lock on descriptor 9; everything it starts is run with 9>&- so no daemon inherits it.

# python3 (stdlib only), resolved once by resolve_python to the real interpreter: pyenv's shim costs half a second
# per call.
PY3=""
py() { "$PY3" "$@"; }
resolve_python() {
    command -v python3 >/dev/null || apt_install python3 python3-venv
    PY3=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"
}

say() { printf 'testenv: %s\n' "$*"; }
die() { printf 'testenv: error: %s\n' "$*" >&2; exit 1; }

now_ms() { date +%s%3N; }
# "12.3s" since $1 (from now_ms).
since() { local d=$(( $(now_ms) - $1 )); printf '%d.%ds' $((d / 1000)) $(( (d % 1000) / 100 )); }

# True when something accepts TCP connections on $1:$2.
listening() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# True when pid $1 is alive (not a zombie) and its command line contains $2.
alive() {
    local pid=$1 marker=$2 state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker"
}

# The pid in pid file $1 when that process is alive and ours (marker $2); empty otherwise.
running_pid() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    alive "$pid" "$2" && printf '%s' "$pid"
}

# Live (non-zombie) members of process group $1.
group_members() {
    local pgid=$1
    ps -e -o pid=,pgid=,stat= 2>/dev/null | awk -v g="$pgid" '$2 == g && $3 !~ /^Z/ {print $1}'
}

# Starts "$@" in a new session (so it and everything it forks share one process group we can stop), output to
# log $1, pid into pid file $2. Not a process-group leader here (no job control in scripts), so setsid execs in
# place and $! is the program itself.
spawn() {
    local log=$1 pidfile=$2
    shift 2
    setsid "$@" >>"$log" 2>&1 </dev/null 9>&- &
    echo $! >"$pidfile"
}

# The pids of $1's descendants, deepest first (found through parent pids: sessions a daemon forks with setsid
# leave its process group, not its tree).
descendants() {
    ps -e -o pid=,ppid= 2>/dev/null | awk -v root="$1" '
        { parent[$1] = $2; pids[NR] = $1 }
        END {
            for (i = 1; i <= NR; i++) {
                depth = 0
                for (p = parent[pids[i]]; p != "" && p != 0 && p != 1; p = parent[p]) {
                    depth++
                    if (p == root) { print depth, pids[i]; break }
                }
            }
        }' | sort -rn | awk '{print $2}'
}

# Sends TERM to process $2 (alive, command line containing $3) and all its descendants, waits up to $1 seconds,
# then KILLs it and its descendants if it is still there. (Pids are reused quickly on a busy machine, so only
# processes found again through a live, verified ancestor are KILLed.)
stop_tree() {
    local grace=$1 pid=$2 marker=$3
    alive "$pid" "$marker" || return 0
    # shellcheck disable=SC2046 # a list of pids
    kill -TERM $(descendants "$pid") "$pid" 2>/dev/null || true
    wait_for "$grace" bash -c "$(declare -f alive); ! alive $pid '$marker'" && return 0
    # shellcheck disable=SC2046 # a list of pids
    kill -KILL $(descendants "$pid") "$pid" 2>/dev/null || true
    true
}

# Sends TERM to each process group named by the pid files given (and to the descendants of each group's leader,
# which may have left the group), waits up to $1 seconds for the groups to be empty, then KILLs what is left of
# them. Removes the pid files. Safe when nothing runs.
stop_groups() {
    local grace=$1
    shift
    local pidfile pid pids=() deadline left
    for pidfile in "$@"; do
        pid=$(cat "$pidfile" 2>/dev/null) || continue
        [[ $pid =~ ^[0-9]+$ ]] || continue
        # Only a group we started: its leader's pid file names it and the group still has members.
        if [[ -n $(group_members "$pid") ]]; then
            # shellcheck disable=SC2046 # a list of pids
            kill -TERM $(descendants "$pid") 2>/dev/null || true
            kill -TERM -- "-$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    deadline=$((SECONDS + grace))
    while ((SECONDS < deadline)); do
        left=0
        for pid in "${pids[@]}"; do [[ -n $(group_members "$pid") ]] && left=1; done
        ((left)) || break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do
        if [[ -n $(group_members "$pid") ]]; then
            say "process group $pid did not stop within ${grace}s; killing it"
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
    done
    rm -f "$@"
}

# Waits up to $1 seconds for the command "$@" (after $1) to succeed.
wait_for() {
    local secs=$1 deadline
    shift
    deadline=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# A JSON string holding $1 (paths and names: only backslashes and quotes need escaping).
json_str() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

# A JSON list of strings from the arguments.
json_list() {
    local out="" item
    for item in "$@"; do out+="${out:+, }$(json_str "$item")"; done
    printf '[%s]' "$out"
}

ready() { [[ -f $STATE/$1.ready ]]; }
mark_ready() { mkdir -p "$STATE" && : >"$STATE/$1.ready"; }
mark_down() { rm -f "$STATE/$1.ready"; }

# Debian packages are installed only when missing (a fresh CI machine has none of them).
apt_install() {
    command -v apt-get >/dev/null || die "$* missing and apt-get is not available; install $* by hand"
    say "installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists yet.
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt-get update >>"$TE/apt.log" 2>&1 || die "apt-get update failed (see $TE/apt.log)"
    fi
    if ! apt-get install -y --no-install-recommends "$@" >>"$TE/apt.log" 2>&1; then
        apt-get update >>"$TE/apt.log" 2>&1 || die "apt-get update failed (see $TE/apt.log)"
        apt-get install -y --no-install-recommends "$@" >>"$TE/apt.log" 2>&1 ||
            die "apt-get install $* failed (see $TE/apt.log)"
    fi
}
