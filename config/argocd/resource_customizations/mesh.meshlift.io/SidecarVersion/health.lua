-- Argo CD health of a Meshlift SidecarVersion (mesh.meshlift.io). Uses only Lua's base and table
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
  hs.message = "Waiting for the operator to report the SidecarVersion's status"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conflict = condition("DefaultConflict")
if conflict ~= nil and conflict.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(conflict, "DefaultConflict")
  return hs
end

-- Proxies of this version that are not ready yet are starting (a rollout to this version, new
-- pods); the MeshService and the UpgradePlan report pods that stay unready.
if ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = explain(ready, "PodsNotReady")
  return hs
end

hs.status = "Healthy"
hs.message = explain(ready, "Ready")
return hs
