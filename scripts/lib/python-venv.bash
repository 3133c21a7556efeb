# Sourced, not run: the Python virtualenv under target/ that scripts/test,
# scripts/schemathesis, scripts/validate-k8s and scripts/lint-dockerfile
# share, with the packages of scripts/requirements.txt at their pinned
# versions.
#
#   . scripts/lib/python-venv.bash
#   python_venv "scripts/test"        # sets VENV and VENV_PYTHON
#
# Installs python3 and its venv module (Debian's packages) when they are
# missing, creates the venv when it is missing or broken, and installs the
# requirements again whenever scripts/requirements.txt differs from the file
# the venv was last installed from (its SHA-256, kept in the venv).
# Expects the repository root as the working directory.

# `apt-get install` as root, or through sudo (GitHub's runners).
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    fi
    if ! "${sudo[@]}" apt-get install -y --no-install-recommends "$@"; then
        "${sudo[@]}" apt-get update
        "${sudo[@]}" apt-get install -y --no-install-recommends "$@"
    fi
}

python_venv() {
    local who="$1"
    local requirements="$PWD/scripts/requirements.txt"
    VENV="$PWD/target/interop-venv"
    VENV_PYTHON="$VENV/bin/python"
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "$who: installing python3 and python3-venv" >&2
        apt_install python3 python3-venv
    fi
    if ! "$VENV_PYTHON" -c 'import sys' >/dev/null 2>&1; then
        echo "$who: creating $VENV" >&2
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/requirements.sha256" want
    want="$("$VENV_PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$requirements")"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "$who: installing scripts/requirements.txt into $VENV" >&2
        rm -f "$stamp"
        "$VENV_PYTHON" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" >"$stamp"
    fi
}
