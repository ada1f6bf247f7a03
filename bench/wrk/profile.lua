-- GET /api/profiles/<random username>, anonymous.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/api/profiles/" .. pick(usernames))
end
