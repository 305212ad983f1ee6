-- wrk script of contrib/soak.sh: the soak's mixed load over many instances.
--
--   wrk -tT -cC -dD --timeout 10s -s mix.lua URL -- TOKENS CODES THREADS
--
-- TOKENS  soak.py's tokens.tsv: INSTANCE TAB SECRET, one `write` token per instance
-- CODES   soak.py's codes.tsv: INSTANCE TAB DEVICE TAB WRONG TAB CODES (8-digit HOTP codes of
--         counters 0, 1, ... concatenated); thread k of THREADS owns lines k, k+THREADS, ...
--
-- Each request goes to a random instance (with that instance's token), except verifications,
-- which take the thread's verification devices in turn. Per 100 requests:
--   35  GET …/otp-devices/t1-N?faketime=T            (TOTP code, algorithm 1)
--   10  GET …/otp-devices/t2-0?faketime=T&price=P    (TOTP code bound to a price, algorithm 2)
--   12  GET …/otp-devices                            (the instance's list)
--   10  POST …/otp-devices/h-N/confirmations         (HOTP: advances the counter)
--   15  POST …/otp-devices/v-N/verifications         (the device's next code; every 16th
--                                                     attempt a wrong code, so devices never lock)
--   12  churn: POST …/otp-devices (x-THREAD-M), or DELETE of the one created LAG creates earlier
--    6  PATCH …/otp-devices/p-0                      (description; every 4th also the key)
-- A device's codes are sent in counter order, one request at a time: the thread has 1,000
-- verification devices and at most C/T requests in flight. When a device's codes run out, its
-- last code is sent again (answered "replayed").
--
-- response() counts statuses and verification outcomes; done() prints them as SOAK lines for
-- soak.py report.

local thread_counter = 0
local threads = {}
function setup(thread)
   thread_counter = thread_counter + 1
   thread:set("thread_id", thread_counter)
   table.insert(threads, thread)
end

local LAG = 300
local KEYS = { "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "AAISEM2EKVTHPCEZAAISEM2EKVTHPCEZ" }

local instances, index_of, get_headers, post_headers = {}, {}, {}, {}
local vdevices, vnext = {}, 1
local churn, patches = 0, 0

-- Read by done() through thread:get.
statuses = {}
outcomes = { verified = 0, mismatch = 0, replayed = 0, locked = 0, other = 0 }

local function split(line)
   local fields = {}
   for field in string.gmatch(line, "[^\t]+") do
      table.insert(fields, field)
   end
   return fields
end

function init(args)
   local tokens_path, codes_path, nthreads = args[1], args[2], tonumber(args[3])
   local me = thread_id or 1
   math.randomseed(os.time() * 100 + me)
   for line in io.lines(tokens_path) do
      local f = split(line)
      table.insert(instances, f[1])
      index_of[f[1]] = #instances
      local auth = "Bearer " .. f[2]
      table.insert(get_headers, { ["Authorization"] = auth })
      table.insert(post_headers, { ["Authorization"] = auth, ["Content-Type"] = "application/json" })
   end
   local line_number = 0
   for line in io.lines(codes_path) do
      line_number = line_number + 1
      if (line_number - 1) % nthreads == me - 1 then
         local f = split(line)
         table.insert(vdevices, {
            instance = index_of[f[1]],
            path = "/instances/" .. f[1] .. "/private/otp-devices/" .. f[2] .. "/verifications",
            wrong = f[3],
            codes = f[4],
            ncodes = #f[4] / 8,
            next = 0,
            attempts = 0,
         })
      end
   end
end

local function devices_path(i)
   return "/instances/" .. instances[i] .. "/private/otp-devices"
end

local function faketime()
   return 1700000000 + math.random(0, 31536000)
end

local function verification()
   local d = vdevices[vnext]
   vnext = vnext % #vdevices + 1
   d.attempts = d.attempts + 1
   local code
   if d.attempts % 16 == 0 then
      code = d.wrong
   else
      local k = math.min(d.next, d.ncodes - 1)
      code = string.sub(d.codes, k * 8 + 1, k * 8 + 8)
      d.next = d.next + 1
   end
   return wrk.format("POST", d.path, post_headers[d.instance],
                     '{"code":"' .. code .. '","reference":"soak-' .. d.attempts .. '"}')
end

-- Device x-THREAD-M lives in instance (M * 7 + THREAD) mod N.
local function churn_request()
   churn = churn + 1
   local me = thread_id or 1
   if churn % 2 == 1 then
      local m = (churn - 1) / 2
      local i = (m * 7 + me) % #instances + 1
      local id = "x-" .. me .. "-" .. m
      return wrk.format("POST", devices_path(i), post_headers[i],
         '{"otp_device_id":"' .. id .. '","otp_device_description":"soak churn ' .. id ..
         '","otp_key":"' .. KEYS[m % 2 + 1] .. '","otp_algorithm":1}')
   end
   local m = churn / 2 - 1 - LAG
   if m < 0 then
      local i = math.random(#instances)
      return wrk.format("GET", devices_path(i), get_headers[i])
   end
   local i = (m * 7 + me) % #instances + 1
   return wrk.format("DELETE", devices_path(i) .. "/x-" .. me .. "-" .. m, get_headers[i])
end

local function patch(i)
   patches = patches + 1
   local body = '{"otp_device_description":"soak patch ' .. patches .. '"'
   if patches % 4 == 0 then
      body = body .. ',"otp_key":"' .. KEYS[patches % 8 / 4 + 1] .. '"'
   end
   return wrk.format("PATCH", devices_path(i) .. "/p-0", post_headers[i], body .. "}")
end

function request()
   local r = math.random(100)
   local i = math.random(#instances)
   if r <= 35 then
      return wrk.format("GET", devices_path(i) .. "/t1-" .. math.random(0, 3) ..
                        "?faketime=" .. faketime(), get_headers[i])
   elseif r <= 45 then
      return wrk.format("GET", devices_path(i) .. "/t2-0?faketime=" .. faketime() ..
                        string.format("&price=KUDOS%%3A%d.%02d", math.random(0, 999),
                                      math.random(0, 99)), get_headers[i])
   elseif r <= 57 then
      return wrk.format("GET", devices_path(i), get_headers[i])
   elseif r <= 67 then
      return wrk.format("POST", devices_path(i) .. "/h-" .. math.random(0, 1) .. "/confirmations",
                        post_headers[i], "{}")
   elseif r <= 82 then
      return verification()
   elseif r <= 94 then
      return churn_request()
   else
      return patch(i)
   end
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 200 and string.find(body, '"verified":', 1, true) then
      local outcome
      if string.find(body, '"verified":true', 1, true) then
         outcome = "verified"
      elseif string.find(body, '"reason":"mismatch"', 1, true) then
         outcome = "mismatch"
      elseif string.find(body, '"reason":"replayed"', 1, true) then
         outcome = "replayed"
      else
         outcome = "other"
      end
      outcomes[outcome] = outcomes[outcome] + 1
   elseif status == 429 and string.find(body, '"code":990', 1, true) then
      outcomes.locked = outcomes.locked + 1
   end
end

function done(summary, latency, requests)
   local total_statuses, total_outcomes = {}, {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         total_statuses[status] = (total_statuses[status] or 0) + n
      end
      for outcome, n in pairs(thread:get("outcomes")) do
         total_outcomes[outcome] = (total_outcomes[outcome] or 0) + n
      end
   end
   io.write(string.format("SOAK requests %d\n", summary.requests))
   io.write(string.format("SOAK seconds %.1f\n", summary.duration / 1e6))
   for _, k in ipairs({ "connect", "read", "write", "timeout" }) do
      io.write(string.format("SOAK %s %d\n", k, summary.errors[k]))
   end
   io.write(string.format("SOAK non2xx %d\n", summary.errors.status))
   io.write(string.format("SOAK p50_ms %.2f\n", latency:percentile(50) / 1000))
   io.write(string.format("SOAK p99_ms %.2f\n", latency:percentile(99) / 1000))
   io.write(string.format("SOAK max_ms %.2f\n", latency.max / 1000))
   for status, n in pairs(total_statuses) do
      io.write(string.format("SOAK status %d %d\n", status, n))
   end
   for outcome, n in pairs(total_outcomes) do
      io.write(string.format("SOAK verification %s %d\n", outcome, n))
   end
end
