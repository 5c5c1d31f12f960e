--! now
--! include parking_lib
return parking_next_due_in(now, KEYS[1])
