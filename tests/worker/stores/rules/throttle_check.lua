-- KEYS: the number's log, its block. ARGV: record ('1' or '0'), the member for this call, then
-- limit, seconds per window. Returns throttle_lib.lua's retry-after; a call allowed now is
-- recorded if asked.
--! now
--! include throttle_lib
local windows = {}
for i = 3, #ARGV do windows[#windows + 1] = tonumber(ARGV[i]) end
local retry = throttle_retry_after(now, KEYS[1], KEYS[2], ARGV[2], windows)
if retry == 0 and ARGV[1] == '1' then throttle_record(now, KEYS[1], ARGV[2], windows) end
return tostring(retry)
