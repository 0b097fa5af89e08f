#!/usr/bin/env bash
# Builds (once) the Debian trixie chroot with GIMP 3 that tests/test_gimp.py drives: headless with
# gimp-console, and with its user interface on Xvfb, keys pressed by xdotool.
# Kept outside the repository; rebuilt only when missing. Needs root and a Debian package mirror, which
# is taken from this machine's own apt sources (NST_DEBIAN_MIRROR overrides).
set -euo pipefail
ROOT="${NST_GIMP_ROOT:-/var/cache/nst-gimp3-root}"

debian_mirror() {
  # The first Debian archive URI of the apt sources, deb822 (URIs:) or one-line (deb [options] URI suite),
  # leaving out the security archive, which carries no full release.
  {
    grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | sed 's/^URIs:[[:space:]]*//' | tr ' ' '\n'
    grep -hs '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | cut -d' ' -f1
  } | grep -E '^(https?|file)://' | grep -v -- '-security' | head -n 1 || true  # grep's "no match" is no error here
}

PACKAGES="gimp python3-gi gir1.2-gimp-3.0 xvfb xauth xdotool"

if [ -x "$ROOT/usr/bin/gimp-console" ] && [ -e "$ROOT/usr/lib/x86_64-linux-gnu/girepository-1.0/Gimp-3.0.typelib" ]; then
  if [ ! -x "$ROOT/usr/bin/Xvfb" ] || [ ! -x "$ROOT/usr/bin/xdotool" ]; then
    echo "Adding Xvfb and xdotool to the GIMP 3 chroot at $ROOT"
    mount --bind /proc "$ROOT/proc"
    trap 'umount "$ROOT/proc" 2>/dev/null || true' EXIT
    chroot "$ROOT" apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
  fi
  echo "GIMP 3 chroot ready at $ROOT"
  exit 0
fi

echo "Building the GIMP 3 chroot at $ROOT (about three minutes)"
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq debootstrap >/dev/null
fi
MIRROR="${NST_DEBIAN_MIRROR:-$(debian_mirror)}"
if [ -z "$MIRROR" ]; then
  echo "No Debian mirror found in /etc/apt/sources.list*; set NST_DEBIAN_MIRROR to one." >&2
  exit 1
fi
rm -rf "$ROOT.partial"
debootstrap --variant=minbase trixie "$ROOT.partial" "$MIRROR" >/dev/null
mount --bind /proc "$ROOT.partial/proc"
trap 'umount "$ROOT.partial/proc" 2>/dev/null || true' EXIT
chroot "$ROOT.partial" apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
umount "$ROOT.partial/proc"
trap - EXIT
rm -rf "$ROOT"
mv "$ROOT.partial" "$ROOT"
echo "GIMP 3 chroot ready at $ROOT"
