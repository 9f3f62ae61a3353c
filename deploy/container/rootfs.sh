#!/bin/sh
# Lays out the container image's root filesystem in OUT: the broker binary at
# /usr/local/bin/jit-broker, exactly the shared libraries `ldd` names for it (and the dynamic
# loader), the CA bundle (TLS to identity providers and upstreams), a passwd/group naming the
# service user 65532, and the empty folders the image declares. The writable folders
# (/var/lib/git-jit, /var/log/git-jit, /etc/git-jit/keys) are laid out separately in
# OUT-state, OUT-logs and OUT-keys, so the Containerfile can give them to the service user
# alone.
#
#   deploy/container/rootfs.sh target/release/jit-broker /rootfs
set -eu

bin="$1"
out="$2"
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }

mkdir -p "$out/usr/local/bin" "$out/etc/git-jit" "$out/etc/ssl/certs" \
  "$out/var/lib" "$out/var/log" "$out/tmp" "$out-state" "$out-logs" "$out-keys"
chmod 1777 "$out/tmp"
chmod 0700 "$out-state" "$out-logs" "$out-keys"
cp "$bin" "$out/usr/local/bin/jit-broker"
chmod 0755 "$out/usr/local/bin/jit-broker"

# Every library ldd resolves (`name => /path (addr)`) and the loader (`/path (addr)`), copied
# as files (symlinks followed) under the path the binary asks for.
ldd "$bin" | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]+ \(/{print $1}' | sort -u |
  while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done

if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
fi

printf 'root:x:0:0:root:/root:/sbin/nologin\ngit-jit:x:65532:65532:git-jit broker:/var/lib/git-jit:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\ngit-jit:x:65532:\n' >"$out/etc/group"
