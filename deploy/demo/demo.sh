#!/usr/bin/env bash
# make demo: the whole certsync flow in a temporary folder, with no root and no
# outside service. An embedded NATS server, a signing key, two nodes (one with
# an age key, one using an SSH host key), a certbot-shaped lineage, a publish,
# both nodes syncing and installing, a renewal, and the fleet's status.
#
# Usage: deploy/demo/demo.sh [path/to/certsync]   (KEEP=1 keeps the folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
certsync=$(realpath "${1:-bin/certsync}")
demo=$(mktemp -d "${TMPDIR:-/tmp}/certsync-demo.XXXXXX")
go build -o "$demo/mkdemo" ./deploy/demo/mkdemo

server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  if [[ ${KEEP:-} == 1 ]]; then echo "demo folder kept: $demo"; else rm -rf "$demo"; fi
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*" >&2; "$@"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Below the kernel's ephemeral range (32768 up by default): a port a
# program got from the kernel and is about to listen on (tests running
# beside the demo do so) is never one the demo picks.
low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
span=$((low - 20000)); [ "$span" -ge 1000 ] || span=1000
port=$((20000 + RANDOM % span))
until port_free "$port"; do port=$((port + 1)); done
url="nats://127.0.0.1:$port"
mkdir -p "$demo"/{mgmt,web1,web2}
cd "$demo"

step "an embedded NATS server with JetStream (certsync server)"
printf '$ %s\n' "certsync server --listen 127.0.0.1:$port --store $demo/mgmt/nats &"
"$certsync" server --listen "127.0.0.1:$port" --store "$demo/mgmt/nats" >"$demo/mgmt/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do port_free "$port" || break; sleep 0.1; done
port_free "$port" && { cat "$demo/mgmt/server.log"; exit 1; }
echo "listening on $url"

step "keys: the publisher's signing key, and one identity per node"
signing=$(show "$certsync" keygen signing --out mgmt/signing.key)
echo "$signing"
web1=$(show "$certsync" keygen node --out web1/node.key)
echo "$web1"
echo "web2 uses its SSH host key as its identity:"
web2=$(./mkdemo sshkey web2/ssh_host_ed25519_key)
echo "$web2"

step "a certificate: a certbot lineage for example.test (signed by a throwaway CA)"
./mkdemo lineage mgmt/letsencrypt example.test example.test '*.example.test'
ls -l mgmt/letsencrypt/live/example.test

cat >mgmt/publisher.yaml <<YAML
nats: {url: "$url"}
signing_key: $demo/mgmt/signing.key
lineages: $demo/mgmt/letsencrypt/live
nodes:
  web1: $web1
  web2: $web2
certificates:
  example.test: [web1, web2]
YAML
for node in web1 web2; do
  identity=$demo/$node/node.key
  [[ $node == web2 ]] && identity=$demo/web2/ssh_host_ed25519_key
  cat >$node/node.yaml <<YAML
name: $node
nats: {url: "$url"}
identity: $identity
trusted_publishers: ["$signing"]
stage_dir: $demo/$node/stage
certificates:
  example.test:
    install_dir: $demo/$node/live/example.test
YAML
done
step "configuration: mgmt/publisher.yaml"
cat mgmt/publisher.yaml
step "configuration: web1/node.yaml"
cat web1/node.yaml

step "publish, as certbot's deploy hook does (RENEWED_LINEAGE is set by certbot)"
show env RENEWED_LINEAGE="$demo/mgmt/letsencrypt/live/example.test" "$certsync" publish --config mgmt/publisher.yaml
show "$certsync" inspect --config mgmt/publisher.yaml

step "each node receives, verifies, decrypts, stages and installs it (certsync node sync)"
for node in web1 web2; do show "$certsync" node sync --config $node/node.yaml; done
same_as_certbot() {
  for node in web1 web2; do
    for f in cert chain fullchain privkey; do
      cmp -s "$node/stage/example.test/$f.pem" "mgmt/letsencrypt/live/example.test/$f.pem" || { echo "$node: staged $f.pem differs"; exit 1; }
      cmp -s "$node/live/example.test/$f.pem" "mgmt/letsencrypt/live/example.test/$f.pem" || { echo "$node: installed $f.pem differs"; exit 1; }
    done
    echo "$node: staged and installed files are byte-identical to certbot's current ones"
  done
}
show ls -l web1/stage/example.test
echo "installed: install_dir is a symlink to a complete version folder, swapped atomically"
show ls -l web1/live web1/live/example.test/
same_as_certbot

step "a renewal: certbot renews, the hook publishes, the nodes sync"
./mkdemo renew mgmt/letsencrypt example.test example.test '*.example.test'
show env RENEWED_LINEAGE="$demo/mgmt/letsencrypt/live/example.test" "$certsync" publish --config mgmt/publisher.yaml
for node in web1 web2; do show "$certsync" node sync --config $node/node.yaml; done
same_as_certbot
show "$certsync" inspect --config mgmt/publisher.yaml



step "the fleet (certsync status): exits 0 when every node holds the newest certificate"
show "$certsync" status --config mgmt/publisher.yaml
printf '\nThe demo worked. Read README.md for production use.\n'
