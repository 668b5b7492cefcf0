#!/bin/bash
# Make a lab PKI for ecnet's mTLS: a CA, the controller's server certificate, one admin client
# certificate (for ipctl) and one client certificate per node (for its agent).
#
#   packaging/tls/make-certs.sh DIR [--name DNS-OR-IP]... NODE...
#
# DIR gets: ca.pem ca-key.pem, controller.pem controller-key.pem (SANs 127.0.0.1, ::1,
# localhost and every --name), admin.pem admin-key.pem (CN admin:lab), and per NODE
# node-NODE.pem node-NODE-key.pem (CN node:NODE). The controller reads the CN as the caller's
# identity (ipcontroller.authz). Keys are written 0600. An existing CA in DIR is reused, so
# adding a node later keeps the other certificates valid. For a lab: a real deployment issues
# these from its own CA (cert-manager, Vault, ...) with the same CNs.
set -euo pipefail
usage() { echo "usage: $0 DIR [--name DNS-OR-IP]... NODE..." >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1; shift
names=(); nodes=()
while [ $# -gt 0 ]; do
  case $1 in
    --name) [ $# -ge 2 ] || usage; names+=("$2"); shift 2 ;;
    -*) usage ;;
    *) nodes+=("$1"); shift ;;
  esac
done
days=${ECNET_CERT_DAYS:-825}
mkdir -p "$dir"
chmod 0750 "$dir"
umask 077
cd "$dir"

if [ ! -s ca.pem ] || [ ! -s ca-key.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -days "$days" -subj "/CN=ecnet lab CA" -keyout ca-key.pem -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
fi

# issue NAME CN USAGE [SAN]: NAME.pem and NAME-key.pem signed by the CA.
issue() {
  local name=$1 cn=$2 usage=$3 san=${4:-}
  local ext; ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } >"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -subj "/CN=$cn" -keyout "$name-key.pem" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
    -days "$days" -sha256 -extfile "$ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

san="IP:127.0.0.1,IP:::1,DNS:localhost"
for n in "${names[@]}"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+=",IP:$n"; else san+=",DNS:$n"; fi
done
issue controller "ecnet-ipcontroller" serverAuth "$san"
issue admin "admin:lab" clientAuth
for node in "${nodes[@]}"; do
  issue "node-$node" "node:$node" clientAuth
done
chmod 0644 ./*.pem
chmod 0600 ./*-key.pem
rm -f ca.srl
echo "certificates in $dir"
