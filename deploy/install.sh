#!/bin/sh
# Install fieldsync as a systemd service on Raspberry Pi OS / Debian 12 or newer.
#
#   sudo ./deploy/install.sh                  install or upgrade from this checkout
#   sudo ./deploy/install.sh --source X.whl   install a built wheel instead
#   ./deploy/install.sh --no-systemd --prefix /tmp/t --venv /tmp/t/venv
#                                             stage everything below /tmp/t (tests); no root
#
# What it does, in order: check the OS and python3 (>= 3.11); install python3-venv with apt if
# it is missing (root only); create or reuse the venv (PEP 668: never the system pip); pip
# install fieldsync into it; install the unit, sysusers.d and tmpfiles.d entries and a symlink
# /usr/local/bin/fieldsync; create the fieldsync user and /var/lib/fieldsync; install the
# example config as /etc/fieldsync/fieldsync.toml unless that file exists (never overwritten);
# reload systemd and enable (not start) the service. Re-running it upgrades in place and
# restarts the service if it was running. pip honours PIP_* variables (PIP_INDEX_URL,
# PIP_FIND_LINKS, PIP_NO_INDEX=1 for an offline wheelhouse) and /etc/pip.conf (piwheels).
set -eu
umask 022 # the venv and unit must be readable by user fieldsync and by systemd

PROG=install.sh
DEFAULT_VENV=/opt/fieldsync/venv
UNIT_DIR=/usr/local/lib/systemd/system
SYSUSERS_DIR=/usr/local/lib/sysusers.d
TMPFILES_DIR=/usr/local/lib/tmpfiles.d
CONFIG=/etc/fieldsync/fieldsync.toml

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS]

Install fieldsync into a venv and set it up as the systemd service fieldsync.service.

Options:
  --source PATH   project directory or .whl to install (default: the checkout holding
                  this script: $SOURCE_DEFAULT)
  --prefix DIR    install the files below DIR instead of / (staging, tests); systemd tools
                  then act on DIR (--root=DIR), never on the running system
  --venv DIR      the venv (default: PREFIX$DEFAULT_VENV)
  --python PATH   interpreter to build the venv with (default: python3, needs >= 3.11)
  --no-systemd    install files only: no systemd-sysusers, systemd-tmpfiles or systemctl
  -h, --help      show this help
EOF
}

SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
SOURCE_DEFAULT=$(dirname -- "$SCRIPT_DIR")
SOURCE=$SOURCE_DEFAULT
PREFIX=
VENV=
PYTHON=python3
SYSTEMD=1

need_value() {
    [ "$2" -ge 2 ] || die "$1 needs a value (see --help)"
}
while [ $# -gt 0 ]; do
    case $1 in
        --source) need_value "$1" $# && SOURCE=$2 && shift 2 ;;
        --source=*) SOURCE=${1#*=} && shift ;;
        --prefix) need_value "$1" $# && PREFIX=$2 && shift 2 ;;
        --prefix=*) PREFIX=${1#*=} && shift ;;
        --venv) need_value "$1" $# && VENV=$2 && shift 2 ;;
        --venv=*) VENV=${1#*=} && shift ;;
        --python) need_value "$1" $# && PYTHON=$2 && shift 2 ;;
        --python=*) PYTHON=${1#*=} && shift ;;
        --no-systemd) SYSTEMD=0 && shift ;;
        -h | --help) usage && exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done

absolute() { # an absolute form of $1, which need not exist yet
    case $1 in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}

is_root() { [ "$(id -u)" -eq 0 ]; }

if [ -n "$PREFIX" ]; then
    PREFIX=$(absolute "$PREFIX")
    PREFIX=${PREFIX%/}
    if [ "$SYSTEMD" -eq 1 ] && ! is_root; then
        die "--prefix without --no-systemd runs systemd-sysusers and systemd-tmpfiles on $PREFIX," \
            "which must create the fieldsync user in $PREFIX/etc/passwd and chown" \
            "$PREFIX/var/lib/fieldsync to it: that needs root. Run it with sudo, or add" \
            "--no-systemd to stage the files only"
    fi
elif ! is_root; then
    die "installing into the system needs root: run 'sudo $0', or give --prefix DIR"
fi
[ -n "$VENV" ] || VENV=$PREFIX$DEFAULT_VENV
VENV=$(absolute "$VENV")
VENV=${VENV%/}
SOURCE=$(absolute "$SOURCE")
# A venv is not relocatable, so the unit and the symlink name it where it really is.
case $VENV in
    *[!A-Za-z0-9/._+-]*) die "the venv path '$VENV' may only hold letters, digits and / . _ + -" ;;
esac

# --- 1. platform -----------------------------------------------------------------------------
os_field() { # one value from /etc/os-release, without quotes
    sed -n "s/^$1=//p" /etc/os-release | head -n 1 | tr -d "\"'"
}
check_os() {
    if [ ! -r /etc/os-release ]; then
        say "warning: no /etc/os-release; this script is made for Debian 12+ / Raspberry Pi OS"
        return
    fi
    os_id=$(os_field ID)
    os_like=$(os_field ID_LIKE)
    os_version=$(os_field VERSION_ID)
    os_name=$(os_field PRETTY_NAME)
    [ -n "$os_name" ] || os_name=${os_id:-this system}
    case $os_id in
        debian | raspbian)
            major=${os_version%%.*}
            case $major in
                '') ;; # testing / unstable carry no VERSION_ID: newer than 12
                *[!0-9]*) say "warning: cannot read the version of $os_name" ;;
                *) [ "$major" -ge 12 ] || die "$os_name is too old: fieldsync needs Debian 12 (bookworm) or newer, or Raspberry Pi OS Bookworm or newer" ;;
            esac
            ;;
        *)
            case " $os_like " in
                *" debian "*) say "warning: $os_name is Debian-based but untested; continuing" ;;
                *) say "warning: $os_name is untested (made for Debian 12+ / Raspberry Pi OS); continuing" ;;
            esac
            ;;
    esac
}
check_os

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: install Python 3.11 or newer (sudo apt install python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "fieldsync needs Python >= 3.11; $PYTHON is $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"

if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    if is_root && command -v apt-get >/dev/null 2>&1; then
        say "installing python3-venv with apt (Debian ships venv support separately)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv ||
            { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv; } ||
            die "could not install python3-venv with apt"
    else
        die "$PYTHON cannot create virtual environments: run 'sudo apt install python3-venv' and try again"
    fi
fi

# --- 2. venv and package ---------------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '' 2>/dev/null &&
    [ "$("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2])')" = "$("$PYTHON" -c 'import sys; print(sys.version_info[:2])')" ]; then
    say "upgrading the venv $VENV"
else
    if [ -e "$VENV" ] && [ -n "$(ls -A "$VENV" 2>/dev/null)" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then
        die "$VENV exists and is not a venv; refusing to overwrite it (choose another --venv)"
    fi
    say "creating the venv $VENV with $("$PYTHON" --version 2>&1)"
    mkdir -p "$(dirname -- "$VENV")"
    "$PYTHON" -m venv --clear "$VENV"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [ -f "$SOURCE" ]; then
    case $SOURCE in
        *.whl) TARGET=$SOURCE ;;
        *) die "--source $SOURCE: expected a project directory or a .whl file" ;;
    esac
elif [ -f "$SOURCE/pyproject.toml" ]; then
    # Build from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    tar -C "$SOURCE" \
        --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.mypy_cache \
        --exclude=./.pytest_cache --exclude=./.ruff_cache --exclude=./.hypothesis \
        --exclude=./.import_linter_cache -cf - . | tar -C "$WORK" -xf -
    TARGET=$WORK
else
    die "--source $SOURCE: no pyproject.toml there (expected the fieldsync checkout or a .whl)"
fi
say "installing fieldsync from $SOURCE"
"$VENV/bin/python" -m pip install --disable-pip-version-check --upgrade "$TARGET"
"$VENV/bin/fieldsync" --version >/dev/null || die "the installed $VENV/bin/fieldsync does not run"

# --- 3. files --------------------------------------------------------------------------------
install_file() { # mode source destination
    mkdir -p "$(dirname -- "$3")"
    cp "$2" "$3.new"
    chmod "$1" "$3.new"
    mv -f "$3.new" "$3"
}
install_file 0644 "$SCRIPT_DIR/fieldsync.sysusers" "$PREFIX$SYSUSERS_DIR/fieldsync.conf"
install_file 0644 "$SCRIPT_DIR/fieldsync.tmpfiles" "$PREFIX$TMPFILES_DIR/fieldsync.conf"
SHARE=$(dirname -- "$VENV")
sed -e "s|/opt/fieldsync/venv/|$VENV/|g" -e "s|file:///opt/fieldsync/|file://${SHARE%/}/|" \
    "$SCRIPT_DIR/fieldsync.service" >"$WORK/fieldsync.service"
install_file 0644 "$WORK/fieldsync.service" "$PREFIX$UNIT_DIR/fieldsync.service"
install_file 0644 "$SCRIPT_DIR/fieldsync.example.toml" "$SHARE/fieldsync.example.toml"
install_file 0644 "$SCRIPT_DIR/README.md" "$SHARE/README.md"
mkdir -p "$PREFIX/usr/local/bin"
ln -sfn "$VENV/bin/fieldsync" "$PREFIX/usr/local/bin/fieldsync"

# --- 4. user, state directory, config --------------------------------------------------------
if [ "$SYSTEMD" -eq 1 ]; then
    if [ -n "$PREFIX" ]; then
        # systemd-sysusers locks PREFIX/etc/.pwd.lock and fails if PREFIX/etc does not exist.
        mkdir -p "$PREFIX/etc"
        systemd-sysusers --root="$PREFIX" "$PREFIX$SYSUSERS_DIR/fieldsync.conf"
        systemd-tmpfiles --root="$PREFIX" --create "$PREFIX$TMPFILES_DIR/fieldsync.conf"
    else
        systemd-sysusers "$SYSUSERS_DIR/fieldsync.conf"
        systemd-tmpfiles --create "$TMPFILES_DIR/fieldsync.conf"
    fi
fi

mkdir -p "$PREFIX/etc/fieldsync"
if [ -e "$PREFIX$CONFIG" ]; then
    say "keeping the existing $PREFIX$CONFIG (the new example is $SHARE/fieldsync.example.toml)"
else
    install_file 0644 "$SCRIPT_DIR/fieldsync.example.toml" "$PREFIX$CONFIG"
    group_id=$(awk -F: '$1 == "fieldsync" { print $3 }' "$PREFIX/etc/group" 2>/dev/null || true)
    if is_root && [ -n "$group_id" ]; then
        chown "0:$group_id" "$PREFIX$CONFIG"
        chmod 0640 "$PREFIX$CONFIG"
    fi
    say "wrote $PREFIX$CONFIG from the example; edit it (discovery interfaces, upstream)"
fi

# --- 5. systemd ------------------------------------------------------------------------------
if [ "$SYSTEMD" -eq 1 ]; then
    if [ -n "$PREFIX" ]; then
        systemctl --root="$PREFIX" enable fieldsync.service
    else
        if [ -d /run/systemd/system ]; then
            systemctl daemon-reload
        fi
        systemctl enable fieldsync.service
        if [ -d /run/systemd/system ] && systemctl is-active --quiet fieldsync.service; then
            say "restarting the running service on the new version"
            systemctl restart fieldsync.service
        fi
    fi
fi

say "installed: $VENV/bin/fieldsync ($("$VENV/bin/fieldsync" --version 2>&1 | tail -n 1))"
if [ "$SYSTEMD" -eq 1 ]; then
    cat >&2 <<EOF
$PROG: next steps (see $SHARE/README.md):
  1. enrol: sudo -u fieldsync fieldsync --home /var/lib/fieldsync init, hand the request to HQ,
     then: sudo -u fieldsync fieldsync --home /var/lib/fieldsync join ENROLMENT-FILE
  2. edit $CONFIG ([discovery] interfaces, [upstream] url)
  3. sudo systemctl start fieldsync && journalctl -u fieldsync -f
EOF
fi
