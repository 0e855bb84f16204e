-- Argo CD health of a Meshlift UpgradePlan (mesh.meshlift.io). Uses only Lua's base and table
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

-- "Reason: message" of a condition, or fallback when the condition is missing.
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
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report the plan's status"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local conflict = condition("Conflict")
if conflict ~= nil and conflict.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(conflict, "Conflict")
  return hs
end

local counts = status.counts or {}
local progress = (counts.updated or 0) .. "/" .. (counts.total or 0) .. " pods updated to " .. obj.spec.targetVersion
if counts.failed ~= nil and counts.failed > 0 then
  progress = progress .. ", " .. counts.failed .. " failed"
end
local phase = status.phase

if phase == "Pending" then
  local progressing = condition("Progressing")
  if progressing ~= nil and progressing.reason == "TargetVersionNotFound" then
    hs.status = "Degraded"
    hs.message = explain(progressing, "TargetVersionNotFound")
    return hs
  end
  hs.status = "Progressing"
  hs.message = explain(progressing, "Pending")
  return hs
end

if phase == "Progressing" then
  local progressing = condition("Progressing")
  hs.status = "Progressing"
  hs.message = progress
  if progressing ~= nil and progressing.message ~= nil and progressing.message ~= "" then
    hs.message = progress .. " (" .. progressing.message .. ")"
  end
  return hs
end

if phase == "Paused" then
  local paused = condition("Paused")
  local ns = obj.metadata.namespace or "default"
  hs.status = "Suspended"
  hs.message = explain(paused, "Paused")
  if paused ~= nil and paused.reason == "StepPause" then
    local step = status.currentStep or 0
    local steps = (obj.spec.strategy or {}).steps or {}
    local current = steps[step + 1]
    if current ~= nil and current.pause ~= nil and current.pause.duration == nil then
      hs.message = hs.message .. ". Resume: kubectl -n " .. ns .. " annotate upgradeplan " .. obj.metadata.name ..
        " meshlift.io/resume=" .. obj.spec.targetVersion .. "/" .. step .. " --overwrite"
    end
  else
    hs.message = hs.message .. ". Resume: set spec.paused to false (in Git), or kubectl -n " .. ns .. " patch upgradeplan " ..
      obj.metadata.name .. [[ --type merge -p '{"spec":{"paused":false}}']]
  end
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = explain(condition("Complete"), "Succeeded")
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "Failed: " .. progress .. "; " .. explain(condition("Failed"), "TooManyFailures")
  return hs
end

if phase == "RollingBack" then
  hs.status = "Degraded"
  hs.message = explain(condition("Progressing"), "RollingBack")
  return hs
end

if phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = explain(condition("RolledBack"), "RolledBack")
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. phase
return hs
