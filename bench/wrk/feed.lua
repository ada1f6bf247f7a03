-- GET /api/articles/feed as a random seeded user.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/api/articles/feed", auth_headers())
end
