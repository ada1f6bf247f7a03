-- 90% reads spread evenly over the read scenarios; 10% writes: 5% comments,
-- 2.5% favorite, 2.5% unfavorite (random user and article, so some are no-ops).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

local reads = {
  function() return wrk.format("GET", "/api/articles") end,
  function() return wrk.format("GET", "/api/articles", auth_headers()) end,
  function() return wrk.format("GET", "/api/articles/" .. pick(slugs)) end,
  function() return wrk.format("GET", "/api/profiles/" .. pick(usernames)) end,
  function() return wrk.format("GET", "/api/tags") end,
  function() return wrk.format("GET", "/api/articles/feed", auth_headers()) end,
}

function request()
  local roll = math.random(200)
  if roll <= 180 then
    return reads[math.random(#reads)]()
  elseif roll <= 190 then
    return wrk.format("POST", "/api/articles/" .. pick(slugs) .. "/comments", json_headers(), comment_body())
  elseif roll <= 195 then
    return wrk.format("POST", "/api/articles/" .. pick(slugs) .. "/favorite", auth_headers())
  else
    return wrk.format("DELETE", "/api/articles/" .. pick(slugs) .. "/favorite", auth_headers())
  end
end
