"""The real engine: etcd, kube-apiserver, istiod and a pilot-agent-driven Envoy on one machine.

``meshwasm cluster up`` starts them (each by pid, state in one directory),
``meshwasm apply`` hands them a tree, ``meshwasm up --engine istio`` does both
and keeps the tree live. The binaries come from ``make get-cluster``.
"""
