#!/usr/bin/env bash
# build-packages.sh — the .deb and the .rpm, from the static binary
# (scripts/build-static.sh), into target/packages/, then lintian and rpmlint.
#   scripts/build-packages.sh                  # version from Cargo.toml
#   PKG_VERSION=0.1.1 scripts/build-packages.sh   # a "newer build" (the e2e upgrade)
#   BIN=path scripts/build-packages.sh         # package this binary instead
#   scripts/build-packages.sh --no-lint
# dpkg-deb and rpmbuild rather than cargo-deb/cargo-generate-rpm: both are one apt
# install away (the cargo tools cost ~3 minutes of cargo install in CI), and the
# maintainer scripts are ours in full either way. One source for everything shared:
# systemd/ (units, sysusers, tmpfiles), packaging/ (env file and man page generated
# from the binary's --help, logrotate, examples).
set -euo pipefail
cd "$(dirname "$0")/.."
lint=1
[[ ${1:-} == --no-lint ]] && lint=0
version=${PKG_VERSION:-$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)}
[[ $version =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || { echo "build-packages: bad version '$version'" >&2; exit 64; }
bin=${BIN:-target/static/dashboard-backend}
if [[ -z ${BIN:-} ]]; then scripts/build-static.sh >/dev/null; fi
[[ -x $bin ]] || { echo "build-packages: no binary at $bin" >&2; exit 66; }
out=target/packages
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
rm -rf "$out/stage" "$out/rpm-src" "$out/rpmbuild"
mkdir -p "$out"

# ---- shared pieces, generated once ----
gen=$out/gen
rm -rf "$gen" && mkdir -p "$gen"
packaging/gen-man.py "$bin" "$SOURCE_DATE_EPOCH" | gzip -9n >"$gen/dashboard-backend.8.gz"
packaging/gen-env.py "$bin" /etc/default/dashboard-backend >"$gen/env.deb"
packaging/gen-env.py "$bin" /etc/sysconfig/dashboard-backend >"$gen/env.rpm"

# ---- .deb ----
root=$out/stage
install -D -m 0755 "$bin" "$root/usr/bin/dashboard-backend"
for u in dashboard-backend.service dashboard-backend.socket dashboard-backend-backup.service dashboard-backend-backup.timer; do
  install -D -m 0644 "systemd/$u" "$root/lib/systemd/system/$u"
done
install -D -m 0644 systemd/dashboard-backend.sysusers "$root/usr/lib/sysusers.d/dashboard-backend.conf"
install -D -m 0644 systemd/dashboard-backend.tmpfiles "$root/usr/lib/tmpfiles.d/dashboard-backend.conf"
install -D -m 0644 "$gen/env.deb" "$root/etc/default/dashboard-backend"
install -D -m 0644 packaging/dashboard-backend.logrotate "$root/etc/logrotate.d/dashboard-backend"
install -D -m 0644 "$gen/dashboard-backend.8.gz" "$root/usr/share/man/man8/dashboard-backend.8.gz"
doc=$root/usr/share/doc/dashboard-backend
install -D -m 0644 packaging/debian/copyright "$doc/copyright"
sed -e "s/@VERSION@/$version/" -e "s/@COMMIT@/$commit/" \
  -e "s/@DATE@/$(date -u -R -d "@$SOURCE_DATE_EPOCH")/" packaging/debian/changelog.in |
  gzip -9n >"$doc/changelog.gz" # native package: changelog.gz
chmod 0644 "$doc/changelog.gz"
install -D -m 0644 README.md "$doc/README.md"
# The examples shipped (packaging/examples/tests/ holds their promtool tests: not shipped).
examples=(haproxy.cfg prometheus.yml alerts.yml grafana-dashboard.json postgres.conf)
for f in "${examples[@]}"; do
  install -D -m 0644 "packaging/examples/$f" "$doc/examples/$f"
done
install -D -m 0644 packaging/debian/lintian-overrides "$root/usr/share/lintian/overrides/dashboard-backend"
mkdir -p "$root/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"; done
printf '/etc/default/dashboard-backend\n/etc/logrotate.d/dashboard-backend\n' >"$root/DEBIAN/conffiles"
size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" packaging/debian/control.in >"$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
find "$root" -type d -exec chmod 0755 {} +
deb=$out/dashboard-backend_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null

# ---- .rpm ----
if command -v rpmbuild >/dev/null; then
  src=$PWD/$out/rpm-src
  mkdir -p "$src/examples"
  cp "$bin" "$src/dashboard-backend"
  for u in dashboard-backend.service dashboard-backend.socket dashboard-backend-backup.service dashboard-backend-backup.timer; do
    sed 's|/etc/default/dashboard-backend|/etc/sysconfig/dashboard-backend|g' "systemd/$u" >"$src/$u"
  done
  cp systemd/dashboard-backend.sysusers systemd/dashboard-backend.tmpfiles packaging/dashboard-backend.logrotate \
    "$gen/dashboard-backend.8.gz" README.md LICENSE "$src/"
  cp "$gen/env.rpm" "$src/dashboard-backend.env"
  for f in "${examples[@]}"; do cp "packaging/examples/$f" "$src/examples/"; done
  rpm_version=${version%%[+~]*} rpm_release=1
  [[ $version == *[+~]* ]] && rpm_release="1.${version#*[+~]}"
  sed -e "s/@RPM_VERSION@/$rpm_version/g" -e "s/@RPM_RELEASE@/$rpm_release/g" -e "s/@COMMIT@/$commit/" \
    -e "s|@SYSUSERS@|$(grep -v '^#' systemd/dashboard-backend.sysusers)|" \
    -e "s/@RPM_DATE@/$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" '+%a %b %d %Y')/" \
    packaging/rpm/dashboard-backend.spec.in >"$src/dashboard-backend.spec"
  rpmbuild -bb --quiet --define "_topdir $PWD/$out/rpmbuild" --define "_sourcedir $src" \
    "$src/dashboard-backend.spec" >/dev/null
  rpm=$out/dashboard-backend-${rpm_version}-${rpm_release}.x86_64.rpm
  cp "$out/rpmbuild/RPMS/x86_64/$(basename "$rpm")" "$rpm"
else
  rpm="" && echo "build-packages: rpmbuild not found (apt-get install rpm); no .rpm" >&2
fi

printf 'build-packages: %s (%s KiB)\n' "$deb" "$(($(stat -c %s "$deb") / 1024))"
[[ -n $rpm ]] && printf 'build-packages: %s (%s KiB)\n' "$rpm" "$(($(stat -c %s "$rpm") / 1024))"
((lint)) || exit 0

# ---- lint: errors fail; every remaining warning is overridden with a reason ----
if command -v lintian >/dev/null; then
  lintian --tag-display-limit 0 --fail-on error,warning "$deb" 2>&1 | grep -v "running with root privileges" || true
  lintian --tag-display-limit 0 --fail-on error,warning "$deb" >/dev/null 2>&1 ||
    { echo "build-packages: lintian found problems (above)" >&2; exit 1; }
  echo "build-packages: lintian clean (overrides: packaging/debian/lintian-overrides)"
fi
if [[ -n $rpm ]] && command -v rpmlint >/dev/null; then
  rpmlint -r packaging/rpm/rpmlintrc "$rpm" || { echo "build-packages: rpmlint found errors" >&2; exit 1; }
fi

# ---- the shipped examples must be valid for the tools that read them ----
ex=packaging/examples
if command -v haproxy >/dev/null; then
  haproxy -c -q -f $ex/haproxy.cfg || { echo "build-packages: haproxy rejects $ex/haproxy.cfg" >&2; exit 1; }
fi
if command -v promtool >/dev/null; then
  promtool check config $ex/prometheus.yml >/dev/null || { promtool check config $ex/prometheus.yml; exit 1; }
  promtool check rules $ex/alerts.yml >/dev/null || { promtool check rules $ex/alerts.yml; exit 1; }
  promtool test rules $ex/tests/alerts_test.yml >/dev/null || { promtool test rules $ex/tests/alerts_test.yml; exit 1; }
fi
jq -e '.panels | length >= 9' $ex/grafana-dashboard.json >/dev/null ||
  { echo "build-packages: $ex/grafana-dashboard.json is not a dashboard" >&2; exit 1; }
echo "build-packages: examples valid (haproxy -c, promtool check config/rules, promtool test rules, jq)"
