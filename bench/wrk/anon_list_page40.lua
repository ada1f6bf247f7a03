-- GET /api/articles?offset=780&limit=20, anonymous: page 40, to compare with page 1.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/api/articles?offset=780&limit=20")
end
