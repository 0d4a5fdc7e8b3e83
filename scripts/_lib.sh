# Helpers shared by scripts/test and scripts/demo. Source it; don't run it.
# Expects the caller to have done `set -euo pipefail` and cd'd to the repo root.

qs_say() { printf '==> %s\n' "$*"; }
qs_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Does "$1" run and is it Python >= 3.12? (pyenv shims exist for versions that aren't
# selected and fail when run, so "found on PATH" is not enough: actually run it.)
qs_python_ok() {
    "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1
}

# Set QS_PYTHON to the newest usable Python >= 3.12, or die with a hint.
qs_find_python() {
    local cand
    local -a cands=(python3.13 python3.12)
    # pyenv installs that are not selected globally; newest first.
    for cand in $(ls -d "$HOME"/.pyenv/versions/3.13*/bin/python 2>/dev/null | sort -rV) \
                $(ls -d "$HOME"/.pyenv/versions/3.12*/bin/python 2>/dev/null | sort -rV); do
        cands+=("$cand")
    done
    cands+=(python3)
    for cand in "${cands[@]}"; do
        if qs_python_ok "$cand"; then
            QS_PYTHON=$(command -v "$cand")
            return 0
        fi
    done
    qs_die "no Python >= 3.12 found (tried: ${cands[*]}). Install one, e.g. 'apt-get install python3.12' or 'pyenv install 3.13'."
}

# True if any pyproject.toml (root, core, plugins) is newer than file "$1".
qs_pyproject_newer_than() {
    local f
    for f in pyproject.toml core/pyproject.toml plugins/*/pyproject.toml; do
        [[ -f $f && $f -nt $1 ]] && return 0
    done
    return 1
}

# qs_ensure_venv DIR PROFILE PIP_ARGS...
# Create venv DIR (if needed) and `pip install PIP_ARGS` plus every plugins/*/ package.
# A stamp file per PROFILE records what was installed; re-runs skip pip when the stamp
# is newer than every pyproject.toml and the install arguments haven't changed.
qs_ensure_venv() {
    local venv=$1 profile=$2
    shift 2
    local -a args=("$@")
    local dir
    for dir in plugins/*/; do
        [[ -f ${dir}pyproject.toml ]] && args+=(-e "${dir%/}")
    done
    local stamp="$venv/.querystash-stamp-$profile"
    # An existing venv keeps its interpreter; rm -rf it to pick up a newer Python.
    local want="pip install ${args[*]}"

    # A venv whose interpreter vanished (e.g. a removed pyenv version) is rebuilt.
    if [[ -d $venv ]] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        qs_say "$venv is broken; recreating it"
        rm -rf "$venv"
    fi
    if [[ -f $stamp && "$(cat "$stamp")" == "$want" ]] && ! qs_pyproject_newer_than "$stamp"; then
        qs_say "$venv is up to date"
        return 0
    fi
    if [[ ! -d $venv ]]; then
        qs_say "creating $venv with $QS_PYTHON ($("$QS_PYTHON" -V 2>&1))"
        "$QS_PYTHON" -m venv "$venv"
    fi
    qs_say "installing into $venv: ${args[*]}"
    rm -f "$stamp"
    # -qq: errors only (some pip configs warn about every missing extra index location)
    "$venv/bin/python" -m pip install -qq --disable-pip-version-check "${args[@]}"
    printf '%s' "$want" >"$stamp"
}

# qs_apt_ensure COMMAND:PACKAGE...
# apt-get install the PACKAGE of every COMMAND not on PATH (root only; else die with a hint).
qs_apt_ensure() {
    local pair
    local -a missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) != 0 ]]; then
        qs_die "missing ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}"
    fi
    qs_say "installing ${missing[*]} with apt-get"
    # Debian's postinst scripts would start the services; a policy-rc.d that answers 101
    # stops that (Docker images ship one already; add ours only if there is none).
    local policy_added= apt_log apt_rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$(mktemp)  # dpkg is chatty: keep its output unless something fails
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$apt_log" 2>&1 || apt_rc=$?
    [[ -n $policy_added ]] && rm -f /usr/sbin/policy-rc.d
    if ((apt_rc != 0)); then
        cat "$apt_log" >&2
        qs_die "apt-get install ${missing[*]} failed (exit $apt_rc)"
    fi
    rm -f "$apt_log"
}
