-- Argo CD health of a virtualio.dev VirtualIONode (one node's plan and its agent's report), for
-- resource.customizations.health.virtualio.dev_VirtualIONode in argocd-cm (docs/install.md).
-- Runs without Lua's string library, as Argo CD runs custom health checks.
--   Healthy      the agent acted on the latest plan, Ready=True, no pool in error, nothing degraded
--   Progressing  no report yet, the plan's generation not acted on, no plan yet, a pool carving,
--                blocked or draining, pools not registered yet
--   Degraded     a pool in Error, an invalid plan, a failed scan, Degraded=True for another reason
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
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the node's agent to report"
  return hs
end
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the node's agent to act on plan generation " .. tostring(generation)
  return hs
end

if obj.status.pools ~= nil then
  for _, p in ipairs(obj.status.pools) do
    if p.state == "Error" then
      hs.status = "Degraded"
      hs.message = "Pool " .. p.name .. " failed"
      if p.message ~= nil then
        hs.message = hs.message .. ": " .. p.message
      end
      return hs
    end
  end
end

local ready = condition("Ready")
if ready ~= nil and ready.status ~= "True" then
  if ready.reason == "InvalidPlan" or ready.reason == "ScanFailed" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = says(ready)
  return hs
end

if obj.status.pools ~= nil then
  for _, p in ipairs(obj.status.pools) do
    if p.state == "Carving" or p.state == "Blocked" or p.state == "Draining" or p.state == "Deleting" then
      hs.status = "Progressing"
      hs.message = "Pool " .. p.name .. " is " .. p.state
      if p.message ~= nil then
        hs.message = hs.message .. ": " .. p.message
      end
      return hs
    end
  end
end

local degraded = condition("Degraded")
if degraded ~= nil and degraded.status == "True" then
  if degraded.reason == "CarvingBlocked" or degraded.reason == "Draining" then
    hs.status = "Progressing"
  else
    hs.status = "Degraded"
  end
  hs.message = says(degraded)
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the node's agent to report"
  return hs
end
hs.status = "Healthy"
hs.message = ready.message
return hs
