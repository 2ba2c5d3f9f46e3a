-- Runs health.lua against status samples, the way Argo CD does (the object as the global `obj`).
--
--   lua5.1 deploy/argocd/test_health.lua deploy/argocd/health.lua deploy/argocd/samples/*.yaml
--
-- Each sample is an EcsSelfTerminatingWorker in YAML whose leading comments say what the check
-- must return:
--   # expected: Healthy            (the health status)
--   # message: next run at         (optional: a text the message must contain)
-- The samples use a small YAML subset, read by the parser below (no library needed): block
-- mappings and sequences, plain, single- or double-quoted scalars, full-line comments.

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function scalar(s)
  s = trim(s)
  if s:sub(1, 1) == '"' and s:sub(-1) == '"' and #s >= 2 then
    return (s:sub(2, -2):gsub('\\"', '"'):gsub("\\\\", "\\"))
  end
  if s:sub(1, 1) == "'" and s:sub(-1) == "'" and #s >= 2 then
    return (s:sub(2, -2):gsub("''", "'"))
  end
  if s == "true" then return true end
  if s == "false" then return false end
  if s == "null" or s == "~" or s == "" then return nil end
  if s == "[]" or s == "{}" then return {} end
  if s:match("^%-?%d+$") or s:match("^%-?%d+%.%d+$") then return tonumber(s) end
  return s
end

local function is_item(line)
  return line.text == "-" or line.text:sub(1, 2) == "- "
end

local function is_entry(text)
  return text:match("^[%w%._/%-]+:%s") ~= nil or text:match("^[%w%._/%-]+:$") ~= nil
end

local parse_block

local function parse_map(lines, i, indent)
  local map = {}
  while i <= #lines and lines[i].indent == indent and not is_item(lines[i]) do
    local key, rest = lines[i].text:match("^([%w%._/%-]+):%s*(.*)$")
    if key == nil then
      error("line " .. lines[i].number .. ": expected `key: value`, got: " .. lines[i].text)
    end
    local nxt = lines[i + 1]
    if rest == "" and nxt ~= nil and (nxt.indent > indent or (nxt.indent == indent and is_item(nxt))) then
      map[key], i = parse_block(lines, i + 1, nxt.indent)
    else
      map[key] = scalar(rest)
      i = i + 1
    end
  end
  return map, i
end

local function parse_list(lines, i, indent)
  local list = {}
  while i <= #lines and lines[i].indent == indent and is_item(lines[i]) do
    local rest = trim(lines[i].text:sub(2))
    if rest == "" then
      local value
      value, i = parse_block(lines, i + 1, lines[i + 1].indent)
      list[#list + 1] = value
    elseif is_entry(rest) then
      -- `- key: value` opens a mapping whose other keys sit two columns further in.
      lines[i] = { indent = indent + 2, text = rest, number = lines[i].number }
      list[#list + 1], i = parse_map(lines, i, indent + 2)
    else
      list[#list + 1] = scalar(rest)
      i = i + 1
    end
  end
  return list, i
end

parse_block = function(lines, i, indent)
  if is_item(lines[i]) then
    return parse_list(lines, i, indent)
  end
  return parse_map(lines, i, indent)
end

local function read_sample(path)
  local file = assert(io.open(path, "r"))
  local lines, expected, message = {}, nil, nil
  local number = 0
  for raw in file:lines() do
    number = number + 1
    local comment = raw:match("^%s*#%s?(.*)$")
    if comment ~= nil then
      expected = expected or comment:match("^expected:%s*(%S+)")
      message = message or comment:match("^message:%s*(.-)%s*$")
    elseif raw:match("%S") and raw ~= "---" then
      local spaces, text = raw:match("^( *)(.-)%s*$")
      lines[#lines + 1] = { indent = #spaces, text = text, number = number }
    end
  end
  file:close()
  if expected == nil then
    error(path .. ": no `# expected: <status>` comment")
  end
  local object, next_line = parse_block(lines, 1, 0)
  if next_line <= #lines then
    error(path .. ": line " .. lines[next_line].number .. " not understood: " .. lines[next_line].text)
  end
  return object, expected, message
end

local health = arg[1]
if health == nil or arg[2] == nil then
  io.stderr:write("usage: lua5.1 test_health.lua health.lua sample.yaml...\n")
  os.exit(2)
end
local check = assert(loadfile(health))
local statuses = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }

local passed, failed = 0, 0
for n = 2, #arg do
  local path = arg[n]
  local ok, err = pcall(function()
    local object, expected, message = read_sample(path)
    if not statuses[expected] then
      error("`# expected: " .. expected .. "` is not an Argo CD health status")
    end
    obj = object
    local hs = check()
    if type(hs) ~= "table" or hs.status == nil then
      error("health.lua returned no status")
    end
    if hs.status ~= expected then
      error("status " .. tostring(hs.status) .. " (" .. tostring(hs.message) .. "), expected " .. expected)
    end
    if message ~= nil and message ~= "" and not string.find(hs.message or "", message, 1, true) then
      error("message \"" .. tostring(hs.message) .. "\" does not contain \"" .. message .. "\"")
    end
    print(string.format("ok    %-40s %-11s %s", path:match("[^/]+$"), hs.status, hs.message or ""))
  end)
  if ok then
    passed = passed + 1
  else
    failed = failed + 1
    print(string.format("FAIL  %s: %s", path:match("[^/]+$"), tostring(err)))
  end
end
print(string.format("%d passed, %d failed", passed, failed))
if failed > 0 then
  os.exit(1)
end
