-- Argo CD health of a virtualio.dev VirtualIODevice (a pool), for
-- resource.customizations.health.virtualio.dev_VirtualIODevice in argocd-cm (docs/install.md).
-- Runs without Lua's string library, as Argo CD runs custom health checks.
--   Healthy      Ready=True (and KubeVirt permits the pool, where that matters)
--   Progressing  no status yet, generation not observed, Reconciling=True (carving, waiting for
--                agents, deletion), KubeVirt entries being applied
--   Degraded     Stalled=True (resource name or device conflict, failed carving, KubeVirt entries
--                contested), no node carries the pool, unhealthy slices, KubeVirt not permitting
local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function says(c)
  return c.reason .. ": " .. c.message
end

local generation = obj.metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil or generation == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local reconciling = condition("Reconciling")
if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting"
  if reconciling ~= nil and reconciling.status == "True" then
    hs.message = says(reconciling)
  end
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = says(stalled)
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = says(reconciling)
  return hs
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end
if ready.status ~= "True" then
  if ready.reason == "NoMatchingDevices" or ready.reason == "ResourceNameConflict" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = says(ready)
  return hs
end

local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = says(degraded)
  return hs
end

local permitted = condition("KubeVirtPermitted")
if permitted ~= nil and permitted.status ~= "True" then
  if permitted.reason == "ApplyPending" or permitted.reason == "WaitingForInventory" then
    hs.status = "Progressing"
    hs.message = says(permitted)
    return hs
  end
  if permitted.reason == "Contested" or permitted.reason == "NotManaged" or permitted.reason == "KubeVirtNotFound" then
    hs.status = "Degraded"
    hs.message = says(permitted)
    return hs
  end
end

hs.status = "Healthy"
hs.message = ready.message
return hs
