#!/usr/bin/env bash
# Builds the container images from the repository root:
#   localhost/stated:dev            the daemon (Dockerfile)
#   localhost/stated-userstore:dev  examples/userstore (deploy/Dockerfile.example)
#   localhost/stated-counter:dev    examples/counter   (deploy/Dockerfile.example)
# Usage: bash deploy/build-images.sh
# Environment: CONTAINER_TOOL (default podman; docker works too),
# STATED_IMAGE, USERSTORE_IMAGE, COUNTER_IMAGE (the tags above).
#
# The binaries are compiled here, static (CGO off), without paths or
# symbols (-trimpath -ldflags='-s -w'), into the git-ignored .build/, and
# the images are FROM scratch: no base image is pulled, so no registry is
# needed.
set -euo pipefail
cd "$(dirname "$0")/.."

tool=${CONTAINER_TOOL:-podman}
stated_image=${STATED_IMAGE:-localhost/stated:dev}
userstore_image=${USERSTORE_IMAGE:-localhost/stated-userstore:dev}
counter_image=${COUNTER_IMAGE:-localhost/stated-counter:dev}
certs=${CA_CERTIFICATES:-/etc/ssl/certs/ca-certificates.crt}

if ! command -v "$tool" >/dev/null; then
  echo "build-images: $tool not found; install it or set CONTAINER_TOOL" >&2
  exit 1
fi
if [ ! -r "$certs" ]; then
  echo "build-images: no CA certificates at $certs (Debian: apt-get install ca-certificates; or set CA_CERTIFICATES)" >&2
  exit 1
fi

# The files of the images besides the binaries, packed as tar archives
# with exact owners and modes (see the Dockerfile).
rm -rf .build
root=.build/rootfs
mkdir -p .build/bin "$root"/etc/ssl/certs "$root"/tmp "$root"/run/stated "$root"/var/lib/stated
cp "$certs" "$root"/etc/ssl/certs/ca-certificates.crt
printf 'root:x:0:0:root:/:/sbin/nologin\nstated:x:65532:65532:stated:/var/lib/stated:/sbin/nologin\n' >"$root"/etc/passwd
printf 'root:x:0:\nstated:x:65532:\n' >"$root"/etc/group
chmod 0644 "$root"/etc/passwd "$root"/etc/group "$root"/etc/ssl/certs/ca-certificates.crt
chmod 0755 "$root"/etc "$root"/etc/ssl "$root"/etc/ssl/certs "$root"/run "$root"/run/stated "$root"/var "$root"/var/lib
chmod 1777 "$root"/tmp
chmod 0750 "$root"/var/lib/stated
# archive --create|--append ARCHIVE OWNER PATH...: the paths (not what is
# under them), owned by uid and gid OWNER.
archive() {
  local op=$1 file=$2 owner=$3
  shift 3
  tar -C "$root" "$op" --file "$file" --no-recursion --numeric-owner \
    --owner="$owner" --group="$owner" --mtime=@0 "$@"
}
archive --create .build/base.tar 0 etc etc/passwd etc/group etc/ssl etc/ssl/certs \
  etc/ssl/certs/ca-certificates.crt tmp run
archive --append .build/base.tar 65532 run/stated
archive --create .build/data-dir.tar 0 var var/lib
archive --append .build/data-dir.tar 65532 var/lib/stated

for pkg in cmd/stated examples/userstore examples/counter; do
  name=$(basename "$pkg")
  echo "build-images: compiling ./$pkg"
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o ".build/bin/$name" "./$pkg"
done

"$tool" build --quiet -f Dockerfile -t "$stated_image" . >/dev/null
"$tool" build --quiet -f deploy/Dockerfile.example --build-arg EXAMPLE=userstore -t "$userstore_image" . >/dev/null
"$tool" build --quiet -f deploy/Dockerfile.example --build-arg EXAMPLE=counter -t "$counter_image" . >/dev/null

echo "build-images: built"
for image in "$stated_image" "$userstore_image" "$counter_image"; do
  size=$("$tool" image inspect --format '{{.Size}}' "$image")
  printf '  %-34s %6.1f MB\n' "$image" "$(awk -v s="$size" 'BEGIN { print s / 1000000 }')"
done
