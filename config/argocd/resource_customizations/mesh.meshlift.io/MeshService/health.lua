-- Argo CD health of a Meshlift MeshService (mesh.meshlift.io). Uses only Lua's base and table
-- libraries, so it runs from argocd-cm without useOpenLibs. docs/argocd.md explains each state.
local hs = {}

-- Argo CD runs each kind's script alone, so condition and explain are repeated in each of them.
local function condition(conditionType)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
local generation = obj.metadata.generation
local ready = condition("Ready")
if status == nil or ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the MeshService's status"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

-- Pods on another version than currentVersion are only moved while an UpgradePlan decides the
-- version (versionSource UpgradePlan); otherwise they keep their version until recreated.
local drift = condition("VersionDrift")
local drifting = drift ~= nil and drift.status == "True"
local moving = drifting and status.versionSource == "UpgradePlan"

-- Pods that are not ready are starting, or restarting a proxy slot during an upgrade (the pod is
-- not Ready until the new proxy took over): Progressing, as Argo CD shows a Deployment that rolls
-- out. Whether they never become ready is the workload's health (a Deployment past its
-- progressDeadlineSeconds is Degraded). Every other reason is a misconfiguration: Degraded.
if ready.status ~= "True" then
  if ready.reason == "PodsNotReady" then
    hs.status = "Progressing"
    hs.message = explain(ready, "PodsNotReady")
    if moving then
      hs.message = "An UpgradePlan moves pods to " .. (status.currentVersion or "") .. ": " .. explain(drift, "VersionDrift") ..
        "; " .. hs.message
    end
    return hs
  end
  hs.status = "Degraded"
  hs.message = explain(ready, "NotReady")
  return hs
end

if moving then
  hs.status = "Progressing"
  hs.message = "An UpgradePlan moves pods to " .. (status.currentVersion or "") .. ": " .. explain(drift, "VersionDrift")
  return hs
end

hs.status = "Healthy"
hs.message = explain(ready, "Ready")
if drifting then
  hs.message = hs.message .. "; " .. explain(drift, "VersionDrift") .. " (no UpgradePlan moves them)"
end
return hs
