-- What the send gate's scripts (gate*.lua) decide alike; after idempotency_lib, whose release
-- they call.

-- Whether a send its host cannot make (the account paused on that host only) may still go
-- back to the queue for another host: for ``window`` seconds after its ``first`` attempt, and
-- only while the ``delay`` before it comes back ends before its ``deadline``.
local function may_hand_back(now, first, deadline, window, delay)
  return now - first < window and now + delay < deadline
end

-- What a slot reserved on ``account`` (or refused: ``granted`` 0) calls for: 'late' (none before
-- the deadline), 'park' (further than ``max_hold``: the slot kept in the record, the lease
-- given back), or 'go' (wait for it in the worker).
local function take_slot(now, request, token, account, granted, wait, max_hold)
  if granted == 0 then return 'late' end
  if wait > max_hold then
    idempotency_release(now, request, token, '0', account, wait)
    return 'park'
  end
  return 'go'
end
