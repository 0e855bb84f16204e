-- Argo CD health of an Argo CD Application, for an app of apps: Argo CD 1.8 and later no longer
-- assess it, so a parent Application does not wait for one sync wave of child Applications to be
-- Healthy before the next without this check. Meshlift's applications (config/argocd/applications)
-- need it: the mesh objects wait for the operator. Base and table libraries only.
local hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the Application to report its health"
if obj.status ~= nil and obj.status.health ~= nil and obj.status.health.status ~= nil then
  hs.status = obj.status.health.status
  hs.message = obj.status.health.message or ""
  -- A child whose last sync failed is not done, whatever its resources say.
  if obj.status.operationState ~= nil and obj.status.operationState.phase ~= nil and
    (obj.status.operationState.phase == "Failed" or obj.status.operationState.phase == "Error") then
    hs.status = "Degraded"
    hs.message = "Sync " .. obj.status.operationState.phase .. ": " .. (obj.status.operationState.message or "")
  end
end
return hs
