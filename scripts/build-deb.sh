#!/usr/bin/env bash
# Builds the Debian package of fleetgate from this repository:
#
#     bash scripts/build-deb.sh                   # release build (what to install)
#     bash scripts/build-deb.sh --profile debug   # the debug binary (CI's check)
#     bash scripts/build-deb.sh --no-build        # package the binary already built
#     bash scripts/build-deb.sh --binary PATH     # package that binary (built elsewhere)
#
# Prints the .deb's path as its last line; it lands in
# <cargo target dir>/deb/ unless --out DIR says otherwise.
#
# What goes in (packaging/deb/ holds the sources):
#   /usr/bin/fleetgate                      the binary (debug info stripped)
#   /etc/fleetgate/fleetgate.toml           annotated config, a conffile; starts as installed
#   /lib/systemd/system/fleetgate.service   the sandboxed unit
#   /var/lib/fleetgate/                     the spool (data_dir), owned by the user fleetgate
#   /usr/share/doc/fleetgate/               README.md, fleetgate.example.toml, copyright
# and maintainer scripts that create the system user "fleetgate", set the
# owners, and enable and start the service where systemd runs.
#
# Plain dpkg-deb, no cargo-deb: nothing to install first (`cargo install
# cargo-deb` took 3 min 22 s on this project's 2-core machine, shared), and CI
# can package the debug binary its tests build anyway instead of a release
# build that costs minutes. The debug package is versioned <version>~debug, which any release
# build of the same version upgrades.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=release
build=1
out=
binary=
while [ $# -gt 0 ]; do
    case "$1" in
    --profile) profile=${2:?--profile needs release or debug}; shift 2 ;;
    --no-build) build=0; shift ;;
    --binary) binary=${2:?--binary needs a path}; build=0; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$profile" in
release | debug) ;;
*) echo "build-deb.sh: --profile is release or debug, not $profile" >&2; exit 2 ;;
esac

say() { printf '[build-deb] %s\n' "$*" >&2; }

target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { say "cannot find cargo's target directory"; exit 1; }
out=${out:-$target_dir/deb}
binary=${binary:-$target_dir/$profile/fleetgate}

if [ "$build" = 1 ]; then
    # Default features: the package's binary is the one the README describes
    # (`fleetgate demo` and `fleetgate encode` included, handy on the box to
    # try it). Debug: the same build command as scripts/test.sh, so CI builds
    # the binary once for both.
    t0=$SECONDS
    if [ "$profile" = release ]; then
        say "cargo build --release --locked -p fleetgate --bin fleetgate"
        cargo build --release --locked -p fleetgate --bin fleetgate >&2
    else
        say "cargo build -p fleetgate -p firmware-sim -p loadgen --bins"
        cargo build -q -p fleetgate -p firmware-sim -p loadgen --bins >&2
    fi
    say "built in $((SECONDS - t0))s"
fi
[ -x "$binary" ] || { say "no binary at $binary (build it, or drop --no-build)"; exit 1; }

version=$(cargo pkgid -p fleetgate | sed 's/.*[#@]//')
[ "$profile" = release ] || version="$version~debug"
arch=$(dpkg --print-architecture)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
src=packaging/deb

install -d -m0755 "$root/DEBIAN" "$root/var/lib/fleetgate"
install -D -m0755 "$binary" "$root/usr/bin/fleetgate"
# The release profile keeps line tables (debug = 1) for profiling; a package
# needs none of it (symbols stay, so backtraces still name functions).
if command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$root/usr/bin/fleetgate"
else
    say "no strip (binutils): packaging the binary with its debug info"
fi
install -D -m0644 "$src/fleetgate.toml" "$root/etc/fleetgate/fleetgate.toml"
install -D -m0644 "$src/fleetgate.service" "$root/lib/systemd/system/fleetgate.service"
doc=$root/usr/share/doc/fleetgate
install -D -m0644 "$src/copyright" "$doc/copyright"
install -m0644 README.md fleetgate.example.toml "$doc/"
for script in postinst prerm postrm; do
    install -m0755 "$src/$script" "$root/DEBIAN/$script"
done
printf '/etc/fleetgate/fleetgate.toml\n' >"$root/DEBIAN/conffiles"

# Shared-library dependencies: dpkg-shlibdeps (dpkg-dev) knows each
# library's package and minimum version; without it, glibc's newest symbol
# version the binary needs.
shlibs=
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    mkdir -p "$stage/debian"
    printf 'Source: fleetgate\n\nPackage: fleetgate\nArchitecture: any\n' >"$stage/debian/control"
    shlibs=$(cd "$stage" && dpkg-shlibdeps -O root/usr/bin/fleetgate 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
fi
if [ -z "$shlibs" ]; then
    glibc=$(objdump -T "$root/usr/bin/fleetgate" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
    shlibs="libc6 (>= ${glibc:-2.31}), libgcc-s1"
fi

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" \
    -e "s/@INSTALLED_SIZE@/$installed_size/" -e "s/@SHLIBS@/$shlibs/" \
    -e "s/@MAINTAINER@/${FLEETGATE_DEB_MAINTAINER:-fleetgate maintainers <fleetgate@localhost>}/" \
    "$src/control.in" >"$root/DEBIAN/control"

mkdir -p "$out"
deb=$out/fleetgate_${version}_${arch}.deb
# xz for what gets installed elsewhere; gzip -1 for the throwaway debug
# package (xz on a debug binary costs CI tens of seconds).
if [ "$profile" = release ]; then compress=(-Zxz); else compress=(-Zgzip -z1); fi
t0=$SECONDS
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >&2
say "$(du -h "$deb" | cut -f1) ($installed_size KiB installed), Depends: adduser, $shlibs; packed in $((SECONDS - t0))s"
printf '%s\n' "$deb"
