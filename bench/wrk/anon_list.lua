-- GET /api/articles, anonymous (page 1).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/api/articles")
end
