#!/usr/bin/env bash
# build-static.sh — one fully static x86_64 binary: the musl target (Debian's
# musl-tools provide musl-gcc for the bundled SQLite), or static glibc when the musl
# target cannot be had. Asserts that ldd finds no dynamic dependencies and prints
# the path and size. Output: target/static/dashboard-backend
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/static
mkdir -p "$out"
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl ||
  rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1; then
  command -v musl-gcc >/dev/null || {
    echo "build-static: musl-gcc missing (apt-get install musl-tools)" >&2
    exit 69
  }
  target=x86_64-unknown-linux-musl
  cargo build --release --locked --target "$target"
else
  echo "build-static: musl target unavailable; building static glibc instead" >&2
  target=x86_64-unknown-linux-gnu
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target"
fi
cp "target/$target/release/dashboard-backend" "$out/dashboard-backend"
if ldd "$out/dashboard-backend" 2>&1 | grep -q '=>'; then
  echo "build-static: the binary has dynamic dependencies:" >&2
  ldd "$out/dashboard-backend" >&2
  exit 1
fi
file "$out/dashboard-backend" | grep -q static || { echo "build-static: file(1) does not say static" >&2; exit 1; }
echo "build-static: $out/dashboard-backend ($target, $(stat -c %s "$out/dashboard-backend") bytes): $(ldd "$out/dashboard-backend" 2>&1 | head -1 | xargs)"
