-- GET /api/articles as a random seeded user (favorited/following flags per viewer).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/api/articles", auth_headers())
end
