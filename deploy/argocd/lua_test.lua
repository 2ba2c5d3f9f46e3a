-- Runs Argo CD resource customization tests with Lua 5.1, the Lua version Argo CD embeds, in
-- Argo CD's own test format (util/lua/health_test.go and custom_actions_test.go in Argo CD):
--
--   lua5.1 deploy/argocd/lua_test.lua DIR          DIR = resource_customizations/<group>/<kind>
--     DIR/health_test.yaml          tests: [{healthStatus: {status, message}, inputPath}]
--     DIR/actions/action_test.yaml  discoveryTests: [{inputPath, result: [{name, disabled, ...}]}]
--                                   actionTests: [{action, inputPath, expectedOutputPath
--                                                  | expectedErrorMessage}]
--   lua5.1 deploy/argocd/lua_test.lua --json FILE...
--     prints each YAML file as one line of JSON (keys sorted), so a test can check that the
--     reader below reads the files as a real YAML parser does
--
-- The scripts run as Argo CD runs them: the object as the global `obj`, with only the libraries
-- Argo CD opens (base, table, and an `os` holding date and time; no string, math or io, and no
-- string methods), and the health status and message compared exactly. As Argo CD's own action
-- test normalizes time stamps an action writes, the value of the run-now annotation is checked
-- to be the current UTC time (RFC 3339, to the second) and then compared as
-- 0001-01-01T00:00:00Z.
--
-- The YAML files use a small subset, read by the parser below (no library needed): block
-- mappings and sequences, plain, single- or double-quoted scalars, `[]` and `{}`, full-line
-- comments and `---`.

local RUN_NOW = "ecsworker.dev/run-now"
local TIME_PLACEHOLDER = "0001-01-01T00:00:00Z"

-- YAML ----------------------------------------------------------------------------------------

local list_mt = { __yaml = "sequence" }

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
  if s == "[]" then return setmetatable({}, list_mt) end
  if s == "{}" then return {} end
  if s:match("^%-?%d+$") or s:match("^%-?%d+%.%d+$") then return tonumber(s) end
  if s:match("^[|>]") or s:match("^[%[{&*!]") then
    error("YAML feature outside the supported subset: " .. s)
  end
  return s
end

local function is_item(line)
  return line.text == "-" or line.text:sub(1, 2) == "- "
end

local KEY = "^([%w%._/%-]+):%s*(.*)$"

local function is_entry(text)
  return text:match("^[%w%._/%-]+:%s") ~= nil or text:match("^[%w%._/%-]+:$") ~= nil
end

local parse_block

local function parse_map(lines, i, indent)
  local map = {}
  while i <= #lines and lines[i].indent == indent and not is_item(lines[i]) do
    local key, rest = lines[i].text:match(KEY)
    if key == nil then
      error("line " .. lines[i].number .. ": expected `key: value`, got: " .. lines[i].text)
    end
    if map[key] ~= nil then
      error("line " .. lines[i].number .. ": duplicate key " .. key)
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
  local list = setmetatable({}, list_mt)
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

local function read_yaml(path)
  local file = assert(io.open(path, "r"))
  local lines, number = {}, 0
  for raw in file:lines() do
    number = number + 1
    if raw:match("\t") then
      error(path .. ":" .. number .. ": tab character")
    end
    if not raw:match("^%s*#") and raw:match("%S") and raw ~= "---" then
      local spaces, text = raw:match("^( *)(.-)%s*$")
      lines[#lines + 1] = { indent = #spaces, text = text, number = number }
    end
  end
  file:close()
  if #lines == 0 then
    return nil
  end
  local ok, value, next_line = pcall(parse_block, lines, 1, lines[1].indent)
  if not ok then
    error(path .. ": " .. tostring(value), 0)
  end
  if next_line <= #lines then
    error(path .. ": line " .. lines[next_line].number .. " not understood: " .. lines[next_line].text, 0)
  end
  return value
end

-- JSON (for --json) ----------------------------------------------------------------------------

local function json(v)
  local t = type(v)
  if t == "nil" then
    return "null"
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "number" then
    if v == math.floor(v) then
      return string.format("%d", v)
    end
    return string.format("%.17g", v)
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r" }
      return named[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif getmetatable(v) == list_mt then
    local parts = {}
    for i = 1, #v do
      parts[i] = json(v[i])
    end
    return "[" .. table.concat(parts, ",") .. "]"
  else
    local keys = {}
    for k in pairs(v) do
      keys[#keys + 1] = k
    end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do
      parts[#parts + 1] = json(k) .. ":" .. json(v[k])
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
end

-- The sandbox Argo CD runs scripts in -----------------------------------------------------------

local function copy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = setmetatable({}, getmetatable(v))
  for k, x in pairs(v) do
    out[k] = copy(x)
  end
  return out
end

local function sandbox(object)
  local safe_os = { date = os.date, time = os.time }
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    print = print, rawequal = rawequal, rawget = rawget, rawset = rawset, select = select,
    tonumber = tonumber, tostring = tostring, type = type, unpack = unpack, xpcall = xpcall,
    getmetatable = getmetatable, setmetatable = setmetatable,
    table = {
      concat = table.concat, insert = table.insert, maxn = table.maxn, remove = table.remove,
      sort = table.sort, getn = table.getn,
    },
    os = safe_os,
    require = function(name)
      if name == "os" then
        return safe_os
      end
      error("module '" .. tostring(name) .. "' not found", 2)
    end,
    obj = object,
  }
  env._G = env
  return env
end

-- Runs a script file in the sandbox; returns ok and its result or error.
local function run(path, object)
  local chunk = assert(loadfile(path))
  setfenv(chunk, sandbox(object))
  -- Argo CD opens no string library: `s:sub(...)` must fail there, so it fails here too.
  local string_mt = debug.getmetatable("")
  local string_index = string_mt.__index
  string_mt.__index = nil
  local ok, result = pcall(chunk)
  string_mt.__index = string_index
  return ok, result
end

-- Comparison -------------------------------------------------------------------------------------

local function equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b
  end
  for k, v in pairs(a) do
    if not equal(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

-- Tests ------------------------------------------------------------------------------------------

local dir = arg[1]
if dir == "--json" then
  for n = 2, #arg do
    print(json(read_yaml(arg[n])))
  end
  os.exit(0)
end
if dir == nil then
  io.stderr:write("usage: lua5.1 lua_test.lua resource_customizations/<group>/<kind>\n")
  io.stderr:write("       lua5.1 lua_test.lua --json file.yaml...\n")
  os.exit(2)
end

local passed, failed = 0, 0

local function case(name, fn)
  local ok, err = pcall(fn)
  if ok then
    passed = passed + 1
    print(string.format("ok    %-58s %s", name, tostring(err or "")))
  else
    failed = failed + 1
    print(string.format("FAIL  %s: %s", name, tostring(err)))
  end
end

local HEALTH = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }

local health_tests = read_yaml(dir .. "/health_test.yaml")
assert(health_tests and health_tests.tests and #health_tests.tests > 0, dir .. "/health_test.yaml: no tests")
for _, t in ipairs(health_tests.tests) do
  case("health " .. tostring(t.inputPath), function()
    local want = t.healthStatus
    if type(want) ~= "table" or not HEALTH[want.status] then
      error("healthStatus.status must be an Argo CD health status")
    end
    local ok, hs = run(dir .. "/health.lua", read_yaml(dir .. "/" .. t.inputPath))
    if not ok then
      error("health.lua failed: " .. tostring(hs), 0)
    end
    if type(hs) ~= "table" or hs.status == nil then
      error("health.lua returned no status", 0)
    end
    local message = hs.message or ""
    if hs.status ~= want.status or message ~= (want.message or "") then
      error(string.format("got %s %q, want %s %q", tostring(hs.status), message, want.status, want.message or ""), 0)
    end
    return hs.status .. ": " .. message
  end)
end

local actions_dir = dir .. "/actions"
local action_tests = read_yaml(actions_dir .. "/action_test.yaml")
assert(action_tests and action_tests.discoveryTests and action_tests.actionTests,
  actions_dir .. "/action_test.yaml: needs discoveryTests and actionTests")

for _, t in ipairs(action_tests.discoveryTests) do
  case("discovery " .. tostring(t.inputPath), function()
    local ok, actions = run(actions_dir .. "/discovery.lua", read_yaml(actions_dir .. "/" .. t.inputPath))
    if not ok then
      error("discovery.lua failed: " .. tostring(actions), 0)
    end
    local got, want = {}, {}
    for name, a in pairs(actions) do
      got[name] = { disabled = a.disabled == true, displayName = a.displayName, iconClass = a.iconClass }
    end
    for _, a in ipairs(t.result) do
      want[a.name] = { disabled = a.disabled == true, displayName = a.displayName, iconClass = a.iconClass }
    end
    if not equal(got, want) then
      error("got " .. json(got) .. ", want " .. json(want), 0)
    end
    local names = {}
    for name, a in pairs(got) do
      names[#names + 1] = name .. (a.disabled and " (disabled)" or "")
    end
    table.sort(names)
    return table.concat(names, ", ")
  end)
end

for _, t in ipairs(action_tests.actionTests) do
  case("action " .. tostring(t.action) .. " " .. tostring(t.inputPath), function()
    local script = actions_dir .. "/" .. t.action .. "/action.lua"
    local before = os.date("!%Y-%m-%dT%H:%M:%SZ")
    local ok, result = run(script, read_yaml(actions_dir .. "/" .. t.inputPath))
    local after = os.date("!%Y-%m-%dT%H:%M:%SZ")
    if t.expectedErrorMessage ~= nil then
      if ok then
        error("succeeded, want the error " .. t.expectedErrorMessage, 0)
      end
      if tostring(result) ~= t.expectedErrorMessage then
        error(string.format("error %q, want %q", tostring(result), t.expectedErrorMessage), 0)
      end
      return "error: " .. tostring(result)
    end
    if not ok then
      error(t.action .. "/action.lua failed: " .. tostring(result), 0)
    end
    result = copy(result)
    local annotations = type(result) == "table" and result.metadata and result.metadata.annotations
    local stamp = annotations and annotations[RUN_NOW]
    if type(stamp) ~= "string" or not stamp:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$")
      or stamp < before or stamp > after then
      error(string.format("%s is %q, want the current UTC time (between %s and %s)", RUN_NOW, tostring(stamp), before, after), 0)
    end
    annotations[RUN_NOW] = TIME_PLACEHOLDER
    local want = read_yaml(actions_dir .. "/" .. t.expectedOutputPath)
    if not equal(result, want) then
      error("output differs from " .. t.expectedOutputPath .. ":\n  got  " .. json(result) .. "\n  want " .. json(want), 0)
    end
    return RUN_NOW .. "=" .. stamp
  end)
end

print(string.format("%d passed, %d failed", passed, failed))
if failed > 0 then
  os.exit(1)
end
