-- GET /api/articles, anonymous, as a browser asks: Accept-Encoding: gzip (the stored gzip variant).
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/api/articles", { ["Accept-Encoding"] = "gzip, deflate, br" })
end
