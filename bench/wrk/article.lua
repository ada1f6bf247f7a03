-- GET /api/articles/<random slug>, anonymous.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/api/articles/" .. pick(slugs))
end
