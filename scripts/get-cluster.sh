#!/usr/bin/env bash
# Builds the real engine `meshwasm cluster up` runs, from pinned Go modules, into $CLUSTER_DIR:
#   istio       pilot-discovery (istiod) and pilot-agent from oracle/istio's pin (the fidelity
#               oracle's Istio), plus Istio's CRDs and Envoy bootstrap template from that module;
#   kubernetes  kube-apiserver, kubectl and etcd from engine/kubernetes (k8s.io/kubernetes and
#               the etcd server that its go.mod requires).
# Outputs are written beside their targets and renamed into place, so an interrupted build
# leaves nothing half-built. Go's build cache makes a rebuild seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: get-cluster.sh istio|kubernetes}
out=$(realpath -m "${CLUSTER_DIR:-build/cluster}")
mkdir -p "$out/bin" "$out/istio"
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
started=$SECONDS

case "$part" in
  istio)
    echo "get-cluster: building pilot-discovery and pilot-agent from oracle/istio's pin (minutes on a cold Go cache)"
    (cd oracle/istio && go build -trimpath -o "$tmp/" istio.io/istio/pilot/cmd/pilot-discovery istio.io/istio/pilot/cmd/pilot-agent)
    istio_dir=$(cd oracle/istio && go list -m -f '{{.Dir}}' istio.io/istio)
    cp "$istio_dir/manifests/charts/base/files/crd-all.gen.yaml" "$tmp/crd-all.gen.yaml"
    cp "$istio_dir/tools/packaging/common/envoy_bootstrap.json" "$tmp/envoy_bootstrap.json"
    (cd oracle/istio && go list -m -f '{{.Version}}' istio.io/istio) > "$tmp/version"
    chmod u+w "$tmp"/*
    mv "$tmp/crd-all.gen.yaml" "$tmp/envoy_bootstrap.json" "$tmp/version" "$out/istio/"
    mv "$tmp/pilot-discovery" "$tmp/pilot-agent" "$out/bin/"
    ;;
  kubernetes)
    echo "get-cluster: building kube-apiserver, kubectl and etcd from engine/kubernetes (minutes on a cold Go cache)"
    (cd engine/kubernetes && go build -trimpath -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
    (cd engine/kubernetes && go build -trimpath -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
    mv "$tmp/kube-apiserver" "$tmp/kubectl" "$tmp/etcd" "$out/bin/"
    ;;
  *)
    echo "get-cluster.sh: unknown part '$part' (istio or kubernetes)" >&2
    exit 2
    ;;
esac
echo "get-cluster: $part built in $((SECONDS - started)) s"
