-- wrk script of contrib/loadtest.sh: one file for every scenario.
--
--   wrk ... -s requests.lua http://127.0.0.1:PORT -- SCENARIO TOKEN [INSTANCE] [DEVICES] [HOTP] [WRITE%] [CONFIRM]
--
-- SCENARIO:
--   ceiling     GET /bench/constant (the constant-JSON route; no auth, no database)
--   get1        GET /instances/INSTANCE/private/otp-devices/a1-NNNN?faketime=T       (algorithm 1)
--   get2        GET /instances/INSTANCE/private/otp-devices/a2-NNNN?faketime=T&price=P (algorithm 2)
--   list        GET /instances/INSTANCE/private/otp-devices
--   mix         WRITE% POST …/h3-NNN/confirmations (HOTP: advances the counter), the rest get1
--   confirm     POST …/c3-NNNN/confirmations, random among CONFIRM HOTP devices
--   hot         POST …/g3-0/confirmations, one HOTP device
--
-- Every thread builds a table of REQUESTS random requests (random device, random faketime and
-- price) once, in init(), and cycles through it; every scenario, the ceiling included, pays
-- the same small per-request Lua cost, and every request carries the same Authorization header.

local REQUESTS = 20000
local requests = {}
local n = 0
local next_index = 1

-- setup() runs in the main Lua state, once per thread: give each thread its own random seed.
local thread_counter = 0
function setup(thread)
   thread_counter = thread_counter + 1
   thread:set("thread_id", thread_counter)
end

local function device_get(instance, alg, devices, token)
   local id = string.format("a%d-%04d", alg, math.random(0, devices - 1))
   local faketime = 1700000000 + math.random(0, 31536000)
   local path = "/instances/" .. instance .. "/private/otp-devices/" .. id .. "?faketime=" .. faketime
   if alg == 2 then
      path = path .. string.format("&price=KUDOS%%3A%d.%02d", math.random(0, 999), math.random(0, 99))
   end
   return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. token })
end

local function confirmation(instance, id, token)
   local path = "/instances/" .. instance .. "/private/otp-devices/" .. id .. "/confirmations"
   return wrk.format("POST", path, {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
   }, "{}")
end

function init(args)
   local scenario = args[1]
   local token = args[2]
   local instance = args[3] or "bench"
   -- Devices per TOTP algorithm (a1-0000 … and a2-0000 …).
   local devices = tonumber(args[4] or "5000")
   local hotp = tonumber(args[5] or "500")
   local write_share = tonumber(args[6] or "20")
   local confirm = tonumber(args[7] or "1000")
   math.randomseed(os.time() * 100 + (thread_id or 0))
   for i = 1, REQUESTS do
      local request
      if scenario == "ceiling" then
         request = wrk.format("GET", "/bench/constant", { ["Authorization"] = "Bearer " .. token })
      elseif scenario == "get1" then
         request = device_get(instance, 1, devices, token)
      elseif scenario == "get2" then
         request = device_get(instance, 2, devices, token)
      elseif scenario == "list" then
         request = wrk.format("GET", "/instances/" .. instance .. "/private/otp-devices",
                              { ["Authorization"] = "Bearer " .. token })
      elseif scenario == "mix" then
         if math.random(1, 100) <= write_share then
            request = confirmation(instance, string.format("h3-%03d", math.random(0, hotp - 1)), token)
         else
            request = device_get(instance, 1, devices, token)
         end
      elseif scenario == "confirm" then
         request = confirmation(instance, string.format("c3-%04d", math.random(0, confirm - 1)), token)
      elseif scenario == "hot" then
         request = confirmation(instance, "g3-0", token)
      else
         error("unknown scenario " .. tostring(scenario))
      end
      requests[i] = request
   end
   n = REQUESTS
end

function request()
   local r = requests[next_index]
   next_index = next_index + 1
   if next_index > n then
      next_index = 1
   end
   return r
end
