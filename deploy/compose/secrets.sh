#!/bin/sh
# Write the compose example's secret files once, each a fresh random value. The directory is
# the operator's alone (0700); the files are world-readable inside it (0644), as compose mounts
# them as they are and the containers run as their own users. Existing files are kept.
set -eu
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
chmod 700 "$dir"
for name in db_password session_key vault_token; do
  if [ ! -s "$dir/$name" ]; then
    head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > "$dir/$name"
    chmod 644 "$dir/$name"
  fi
done
echo "secrets in $dir"
