-- POST /api/articles/<random slug>/comments as a random seeded user.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("POST", "/api/articles/" .. pick(slugs) .. "/comments", json_headers(), comment_body())
end
