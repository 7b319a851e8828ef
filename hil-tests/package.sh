#!/usr/bin/env bash
# Builds the Debian package (release build, cargo-deb), installs it on THIS machine, checks
# it, and removes it again. Needs root (dpkg) and a machine where installing a package is
# acceptable: a CI container or a throw-away VM, never a production gateway.
#
#   bash hil-tests/package.sh            build, install, verify, remove
#   DEB=path/to.deb bash hil-tests/package.sh   skip the build, check that package
#
# Checks: dpkg -i succeeds; /usr/bin/meterd --version runs; the meterd user exists and is in
# dialout; the config (a conffile, group meterd, 0640), profiles, docs and unit are in place;
# the unit is enabled but not started; `systemd-analyze verify` accepts the unit; the shipped
# configuration loads with the installed binary; dpkg -r removes the files and leaves the
# user and /var/lib/meterd (the spool) alone; dpkg --purge removes the conffile.
# Exits non-zero at the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
fail() { echo "package.sh: FAIL: $*" >&2; exit 1; }
check() { local what=$1; shift; if "$@"; then echo "ok: $what"; else fail "$what"; fi; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (dpkg -i)"
if dpkg-query -W -f='${Status}' meterd 2>/dev/null | grep -q "install ok installed"; then
  fail "a meterd package is already installed here; refusing to replace it"
fi

if [ -z "${DEB:-}" ]; then
  if ! command -v cargo-deb >/dev/null 2>&1; then
    step "cargo install cargo-deb --locked"
    cargo install cargo-deb --locked
  fi
  step "cargo deb (release build)"
  cargo deb
  target="${CARGO_TARGET_DIR:-target}"
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
  DEB=$(ls -t "$target"/debian/meterd_"${version}"*_*.deb | head -1)
fi
[ -f "$DEB" ] || fail "no package at $DEB"

step "package contents: $DEB"
dpkg-deb --info "$DEB"
dpkg-deb --contents "$DEB"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  step "apt-get install systemd (for systemd-analyze)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

# The package keeps its user on purge; this check removes it again if it made it.
user_existed=0
getent passwd meterd >/dev/null && user_existed=1
removed=0
cleanup() {
  if [ "$removed" -eq 0 ] && dpkg-query -W meterd >/dev/null 2>&1; then
    echo "package.sh: removing the package after a failure" >&2
    dpkg --purge meterd >/dev/null 2>&1 || true
  fi
  if [ "$user_existed" -eq 0 ] && getent passwd meterd >/dev/null; then
    userdel meterd 2>/dev/null || true
    getent group meterd >/dev/null && groupdel meterd 2>/dev/null || true
  fi
}
trap cleanup EXIT

step "dpkg -i"
dpkg -i "$DEB"

step "installed files"
unit=""
for u in /lib/systemd/system/meterd.service /usr/lib/systemd/system/meterd.service; do
  [ -f "$u" ] && unit=$u
done
check "unit installed ($unit)" test -n "$unit"
check "/usr/bin/meterd --version runs" /usr/bin/meterd --version
check "config in /etc/meterd/meterd.toml" test -f /etc/meterd/meterd.toml
check "config is a conffile" grep -qx "/etc/meterd/meterd.toml" /var/lib/dpkg/info/meterd.conffiles
check "config group meterd, mode 0640" test "$(stat -c '%G %a' /etc/meterd/meterd.toml)" = "meterd 640"
check "profiles in /usr/share/meterd/profiles" test -f /usr/share/meterd/profiles/eastron-sdm630.toml
check "docs in /usr/share/doc/meterd" test -f /usr/share/doc/meterd/operations.md
check "user meterd exists" getent passwd meterd
check "user meterd is a system user without a login shell" \
  test "$(getent passwd meterd | cut -d: -f7)" = /usr/sbin/nologin
check "user meterd is in dialout" sh -c 'id -nG meterd | tr " " "\n" | grep -qx dialout'
check "group meterd exists" getent group meterd
check "unit enabled (multi-user.target.wants link)" \
  test -L /etc/systemd/system/multi-user.target.wants/meterd.service
if [ -d /run/systemd/system ]; then
  check "unit not started on install" sh -c '! systemctl is-active --quiet meterd'
else
  echo "note: systemd is not running here (no /run/systemd/system): nothing could start"
fi
# The shipped configuration is an example for a real substation (TLS files, /dev/ttyS1), so
# it is only parsed and checked, as the installed binary sees it.
check "the shipped configuration loads (meterd check-config)" \
  sh -c '/usr/bin/meterd check-config --config /etc/meterd/meterd.toml >/dev/null'

step "systemd-analyze verify $unit"
systemd-analyze --version | head -1
out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; fail "systemd-analyze verify"; }
[ -n "$out" ] && echo "$out"
# verify exits 0 on some warnings; any line about our unit is a finding.
if echo "$out" | grep -q "meterd.service"; then
  fail "systemd-analyze verify reported something about meterd.service"
fi
echo "ok: systemd-analyze verify accepts the unit"
step "systemd-analyze security (exposure score, informational)"
systemd-analyze security --offline=true "$unit" 2>&1 | tail -1 || true

step "dpkg -r"
dpkg -r meterd
check "binary removed" test ! -e /usr/bin/meterd
check "unit removed" test ! -e "$unit"
check "profiles removed" test ! -e /usr/share/meterd/profiles
check "conffile kept until purge" test -f /etc/meterd/meterd.toml
step "dpkg --purge"
dpkg --purge meterd
removed=1
check "conffile removed on purge" test ! -e /etc/meterd/meterd.toml
check "enable link removed on purge" test ! -e /etc/systemd/system/multi-user.target.wants/meterd.service
check "user meterd kept (its spool may hold unsent readings)" getent passwd meterd
echo
echo "package.sh: all checks passed ($DEB)"
