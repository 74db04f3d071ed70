-- wrk with HTTP pipelining, as TechEmpower's pipeline.lua: `init` writes DEPTH requests
-- into one string, and `request` sends that string whole each time, so every write carries
-- DEPTH requests and wrk counts DEPTH responses for it.
--
--   wrk -t1 -c100 -d10s -s benches/pipeline.lua http://127.0.0.1:8889/          # 16 deep
--   wrk -t1 -c100 -d10s -s benches/pipeline.lua http://127.0.0.1:8889/ -- 64    # 64 deep

init = function(args)
   local depth = tonumber(args[1]) or 16
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format()
   end
   req = table.concat(r)
end

request = function()
   return req
end
