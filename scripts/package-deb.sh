#!/usr/bin/env bash
# Builds the Debian package artifacts/deb/gpu-executor_<version>_amd64.deb from the NativeAOT
# binary, with dpkg-deb; then runs lintian on it when lintian is installed (scripts/testbed.sh
# installs it for the tests).
#
#   scripts/package-deb.sh [BINARY] [OUTPUT_DIR]
#
# BINARY defaults to a fresh scripts/publish.sh. The version is the binary's own
# (`gpu-executor --version`, from Directory.Build.props), so the package cannot disagree with it.
# Nothing in the package depends on the build machine: the changelog's date is the commit's.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="${1:-$(scripts/publish.sh)}"
output="${2:-artifacts/deb}"
version="$("$binary" --version)"
case "$version" in
  [0-9]*) ;;
  *) echo "package-deb: '$binary --version' printed '$version', not a version" >&2; exit 1 ;;
esac

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
umask 022
install -D -m 0755 "$binary" "$stage/usr/bin/gpu-executor"
install -D -m 0644 config.toml.example "$stage/etc/gpu-executor/config.toml"
install -d -m 0750 "$stage/var/lib/gpu-executor"
install -D -m 0644 packaging/systemd/gpu-executor-gc.service "$stage/lib/systemd/system/gpu-executor-gc.service"
install -D -m 0644 packaging/systemd/gpu-executor-gc.timer "$stage/lib/systemd/system/gpu-executor-gc.timer"
install -D -m 0644 packaging/systemd/gpu-executor-metrics.service "$stage/lib/systemd/system/gpu-executor-metrics.service"
install -D -m 0644 packaging/systemd/gpu-executor-metrics.timer "$stage/lib/systemd/system/gpu-executor-metrics.timer"
install -d -m 0755 "$stage/usr/share/man/man1" "$stage/usr/share/doc/gpu-executor"
gzip -9n < packaging/gpu-executor.1 > "$stage/usr/share/man/man1/gpu-executor.1.gz"
install -m 0644 packaging/deb/copyright "$stage/usr/share/doc/gpu-executor/copyright"
if [ -f packaging/deb/lintian-overrides ]; then
  install -D -m 0644 packaging/deb/lintian-overrides "$stage/usr/share/lintian/overrides/gpu-executor"
fi

# The changelog for this version (a native package's is changelog.gz), written from the one
# version there is.
commit_date="$(git log -1 --format=%cD 2>/dev/null || date -R)"
{
  echo "gpu-executor ($version) unstable; urgency=medium"
  echo
  echo "  * Release $version of gpu-executor; what changed is in the project's git history."
  echo
  echo " -- GpuExecutor developers <gpu-executor@users.noreply.gitlab.com>  $commit_date"
} | gzip -9n > "$stage/usr/share/doc/gpu-executor/changelog.gz"
chmod 0644 "$stage/usr/share/doc/gpu-executor/changelog.gz"

install -d -m 0755 "$stage/DEBIAN"
installed_size="$(du -sk --exclude=DEBIAN "$stage" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$installed_size/" packaging/deb/control.in > "$stage/DEBIAN/control"
install -m 0644 packaging/deb/conffiles "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/deb/$script" "$stage/DEBIAN/$script"
done
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | grep -v '^etc/' | sort | xargs md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

mkdir -p "$output"
package="$output/gpu-executor_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$package" >&2
if command -v lintian >/dev/null; then
  # Errors fail the build; warnings are printed (docs/packaging.md explains each one left).
  lintian --fail-on error --tag-display-limit 0 "$package" >&2
fi
echo "$package"
