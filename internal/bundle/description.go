package bundle

// description is the CSV's spec.description: the page OperatorHub shows (markdown).
const description = `Meshlift runs the data plane of a service mesh as a Kubernetes operator. It injects a sidecar
proxy into the pods of a **MeshService**, gives every sidecar a SPIFFE mTLS identity streamed over
SDS, and upgrades the sidecars to a new **SidecarVersion** pod by pod, as an **UpgradePlan** says,
**without restarting the application and without dropping a request**: the new proxy takes the
listening sockets over from the old one inside the running pod (hot upgrade).

## What it manages

* **SidecarVersion** (cluster-wide): a release of the proxy, its image, its resources, and whether
  it is the default.
* **MeshService**: the pods that belong to a service, the ports the sidecar serves over mTLS, and the
  other MeshServices they call. Its status counts the pods matched, injected and ready, by version.
* **UpgradePlan**: moves the pods of some MeshServices to a target version, in steps, with a budget
  of unavailable pods, health gates, pause, and automatic rollback on failure.

The operator also runs the mesh's certificate authority (built in, or an intermediate from
cert-manager) and the control plane the proxies fetch their certificates and endpoints from.

## Getting started

Install the operator in **All namespaces** mode; the suggested namespace is ` + "`meshlift-system`" + `,
whose pods are never injected. Then create a default SidecarVersion and a MeshService for pods
labelled ` + "`app: demo`" + ` (the examples this page offers), and create or restart those pods: each gets
the ` + "`meshlift-proxy`" + ` sidecar. To upgrade, create a second SidecarVersion and an UpgradePlan that
targets it, and watch ` + "`kubectl get upgradeplans -w`" + ` (or ` + "`kubectl meshlift status PLAN -w`" + ` with the
kubectl plugin).

OLM provides the admission webhooks' serving certificate and writes the webhook configurations; the
webhooks fail open (` + "`failurePolicy: Ignore`" + `), so an operator outage never blocks pod creation, and a
pod admitted without its sidecar shows up in its MeshService's status.

## Documentation

* [Concepts](https://github.com/meshlift/meshlift/blob/main/docs/concepts.md)
* [Injection](https://github.com/meshlift/meshlift/blob/main/docs/injection.md)
* [Upgrades and rollback](https://github.com/meshlift/meshlift/blob/main/docs/rollout.md)
* [Installing with OLM](https://github.com/meshlift/meshlift/blob/main/docs/olm.md)
* [The kubectl plugin](https://github.com/meshlift/meshlift/blob/main/docs/kubectl-plugin.md)

Meshlift is alpha: its API is ` + "`v1alpha1`" + ` and may change between releases.
`
