#!/usr/bin/env bash
# Bring up a Docker engine and the Compose v2 plugin on a fresh Debian bookworm machine.
#
# Idempotent: every step checks first and does nothing when its result is already there.
#   1. apt-get install --no-install-recommends docker.io debootstrap (+ what the tests need)
#   2. start dockerd in the background (log: $ENGINE_LOG) unless `docker info` already answers
#   3. Compose v2: bookworm ships none, Debian trixie's `docker-compose` package is the v2 CLI
#      plugin. It is fetched with a PRIVATE apt state (own sources list, lists, cache, status)
#      built from the mirror this machine is already configured with; the machine's own apt
#      sources are never changed. Then `dpkg -i`.
#
# No registry host name is written here: the mirror is read from /etc/apt at run time.
set -euo pipefail

STATE_DIR="${CELERY_STACK_CACHE:-/var/cache/celery-stack-tests}"
ENGINE_LOG="${ENGINE_LOG:-/var/log/dockerd-celery-stack.log}"
DOCKER_WAIT_SECONDS="${DOCKER_WAIT_SECONDS:-90}"
export DEBIAN_FRONTEND=noninteractive

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
fmt_s() { local ms=$1; printf '%d.%01d' $((ms / 1000)) $(((ms % 1000) / 100)); }
_t0=$(now_ms)
_step_start=$_t0
step() { _step_start=$(now_ms); echo "==> $*"; }
done_step() { printf '    [timing] %-38s %6ss\n' "$1" "$(fmt_s $(( $(now_ms) - _step_start )))"; }
have() { command -v "$1" >/dev/null 2>&1; }

if [ "$(id -u)" -ne 0 ]; then
    echo "engine.sh must run as root (installs packages, starts dockerd)" >&2
    exit 1
fi

# --------------------------------------------------------------------------------------------
# The machine's configured Debian mirror (first `deb` URI that serves a non-security suite).
# --------------------------------------------------------------------------------------------
debian_mirror() {
    local f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822 stanzas: remember URIs/Suites per stanza, print the first non-security one.
        uri=$(awk '
            function flush() { if (types ~ /(^| )deb( |$)/ && uris != "" && suites !~ /security/ && suites != "") { split(uris, u, " "); print u[1]; found=1; exit } types=""; uris=""; suites="" }
            /^[[:space:]]*$/ { flush(); next }
            /^[[:space:]]*#/ { next }
            tolower($1) == "types:"  { $1=""; types=$0 }
            tolower($1) == "uris:"   { $1=""; sub(/^ +/, ""); uris=$0 }
            tolower($1) == "suites:" { $1=""; suites=$0 }
            tolower($1) == "enabled:" && tolower($2) == "no" { types="" }
            END { if (!found) flush() }
        ' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 == "deb" { i=2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i+1) !~ /security/) { print $i; exit } }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return 0; }
    done
    echo "no Debian mirror found in /etc/apt" >&2
    return 1
}

# --------------------------------------------------------------------------------------------
step "Debian packages (docker.io, debootstrap, ...)"
# --------------------------------------------------------------------------------------------
PKGS=(docker.io debootstrap iptables ca-certificates procps)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "    installing: ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "    already installed"
fi
done_step "apt install"

# The client that ships with docker.io is /usr/bin/docker; an older client may sit earlier on
# PATH (e.g. /usr/local/bin). Either works against this engine (API version is negotiated).
echo "    docker client: $(command -v docker) ($(docker --version))"

# --------------------------------------------------------------------------------------------
step "dockerd"
# --------------------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
    echo "    engine already answers"
else
    if ! pgrep --runstates D,R,S -x dockerd >/dev/null; then  # a zombie dockerd does not count
        mkdir -p "$(dirname "$ENGINE_LOG")"
        # On hosts without nf_tables support dockerd's iptables calls fail; fall back to legacy.
        if ! iptables -L -n >/dev/null 2>&1 && [ -x /usr/sbin/iptables-legacy ]; then
            update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null
            update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null || true
        fi
        # A machine handed over after its processes were ended may keep dockerd's pid file.
        rm -f /var/run/docker.pid
        echo "    starting dockerd (log: $ENGINE_LOG)"
        nohup /usr/sbin/dockerd >>"$ENGINE_LOG" 2>&1 </dev/null &
        disown || true
    else
        echo "    dockerd already running; waiting for it"
    fi
    deadline=$(( $(date +%s) + DOCKER_WAIT_SECONDS ))
    until docker info >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "dockerd did not answer within ${DOCKER_WAIT_SECONDS}s; last log lines:" >&2
            tail -n 40 "$ENGINE_LOG" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
fi
echo "    server: $(docker info --format '{{.ServerVersion}} storage={{.Driver}} cgroup={{.CgroupDriver}}/v{{.CgroupVersion}}')"
done_step "dockerd ready"

# --------------------------------------------------------------------------------------------
step "Compose v2 plugin"
# --------------------------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
    echo "    $(docker compose version)"
else
    MIRROR=$(debian_mirror)
    APT_PRIV="$STATE_DIR/apt-trixie"
    mkdir -p "$APT_PRIV"/{etc/sources.list.d,etc/preferences.d,etc/apt.conf.d,lists/partial,cache/archives/partial,debs}
    : >"$APT_PRIV/status"
    cat >"$APT_PRIV/etc/sources.list" <<EOF
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main
EOF
    APT_OPTS=(
        -o "Dir::Etc::SourceList=$APT_PRIV/etc/sources.list"
        -o "Dir::Etc::SourceParts=$APT_PRIV/etc/sources.list.d"
        -o "Dir::Etc::Preferences=$APT_PRIV/etc/preferences"
        -o "Dir::Etc::PreferencesParts=$APT_PRIV/etc/preferences.d"
        -o "Dir::Etc::Parts=$APT_PRIV/etc/apt.conf.d"
        -o "Dir::State=$APT_PRIV"
        -o "Dir::State::Lists=$APT_PRIV/lists"
        -o "Dir::State::status=$APT_PRIV/status"
        -o "Dir::Cache=$APT_PRIV/cache"
        -o "Dir::Cache::archives=$APT_PRIV/cache/archives"
        -o "APT::Architecture=$(dpkg --print-architecture)"
        -o "Acquire::Languages=none"
        -o "APT::Sandbox::User=root"
    )
    deb=$(ls "$APT_PRIV"/debs/docker-compose_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        echo "    private apt state in $APT_PRIV (trixie from the configured mirror)"
        apt-get "${APT_OPTS[@]}" update -qq
        (cd "$APT_PRIV/debs" && apt-get "${APT_OPTS[@]}" download docker-compose)
        deb=$(ls "$APT_PRIV"/debs/docker-compose_*.deb | head -n1)
    fi
    echo "    $(basename "$deb")"
    # The package's Depends (if any beyond libc) concern the engine, which docker.io provides.
    dpkg-deb -f "$deb" Depends || true
    dpkg -i "$deb" >/dev/null || dpkg -i --force-depends "$deb" >/dev/null
    docker compose version
fi
done_step "compose plugin"

printf '    [timing] %-38s %6ss\n' "engine.sh total" "$(fmt_s $(( $(now_ms) - _t0 )))"
