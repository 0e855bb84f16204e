#!/usr/bin/env bash
# The last act of `make demo`: a live hot upgrade of the demo app under steady traffic. It starts
# the load pod (config/demo/upgrade/load.yaml), applies an UpgradePlan that moves the demo pods to
# the SidecarVersion they do not run yet (proxy-v2, or back to proxy-v1 on the next run), follows
# the plan with `kubectl meshlift status -w`, then prints the load's summary: the number of failed
# requests should be 0.
#
# Usage: K="kubectl --kubeconfig ..." M="kubectl meshlift --kubeconfig ..." hack/demo-upgrade.sh
# (M needs kubectl-meshlift on the PATH: make plugin builds it into bin/.)
set -euo pipefail
K=${K:?set K to the kubectl command of the cluster}
M=${M:?set M to the kubectl meshlift command of the cluster}
ns=meshlift-demo
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

current=$($K -n "$ns" get pods -l app=demo -o jsonpath='{.items[0].metadata.annotations.meshlift\.io/version}')
target=proxy-v2
[ "$current" = proxy-v2 ] && target=proxy-v1

say "Steady traffic: pod demo-load calls http://demo.meshlift-demo:8080/ (captured: through its sidecar, mTLS), 40 new connections/s for 75s"
$K -n "$ns" delete pod demo-load --ignore-not-found --wait=true >/dev/null
service_ip=$($K -n "$ns" get service demo -o jsonpath='{.spec.clusterIP}')
sed "s/DEMO_SERVICE_IP/$service_ip/" config/demo/upgrade/load.yaml | $K apply -f - >/dev/null
$K -n "$ns" wait --for=condition=Ready pod/demo-load --timeout=2m >/dev/null
sleep 3

say "Hot upgrade: UpgradePlan demo-upgrade moves the 3 demo pods from $current to $target, one pod at a time"
# A new plan each run: changing the target of the last run's plan back to the version its pods
# came from would be a rollback of that plan (it would end RolledBack), not an upgrade.
$K -n "$ns" delete upgradeplan demo-upgrade --ignore-not-found --wait=true >/dev/null
$K apply --server-side --force-conflicts -f - >/dev/null <<YAML
apiVersion: mesh.meshlift.io/v1alpha1
kind: UpgradePlan
metadata:
  name: demo-upgrade
  namespace: $ns
spec:
  meshServices: [demo]
  targetVersion: $target
  strategy:
    type: HotUpgrade
    maxUnavailable: 1
  health:
    progressDeadlineSeconds: 120
  failurePolicy: Rollback
YAML
# Follow the plan with the kubectl plugin until it ends: on a terminal the screen is redrawn in
# place, in a log one line per change. Its exit code says how the plan ended (0: Succeeded).
plan_ok=1
$M status demo-upgrade -n "$ns" -w --timeout 5m || plan_ok=0
$K -n "$ns" get pods -l app=demo -o custom-columns='POD:.metadata.name,VERSION:.metadata.annotations.meshlift\.io/version,ACTIVE-SLOT:.metadata.annotations.meshlift\.io/active-slot,APP-RESTARTS:.status.containerStatuses[0].restartCount'

say "Waiting for the traffic to finish"
for _ in $(seq 180); do
  phase=$($K -n "$ns" get pod demo-load -o jsonpath='{.status.phase}')
  case "$phase" in Succeeded|Failed) break ;; esac
  sleep 1
done
$K -n "$ns" logs demo-load -c load | sed 's/^/    /'
if [ "$phase" = Succeeded ] && [ "$plan_ok" = 1 ]; then
  say "Hot upgrade to $target done under traffic: 0 failed requests, no application restart"
else
  say "The upgrade did not succeed or requests failed during it (see above)"
  exit 1
fi
