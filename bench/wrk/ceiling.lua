-- GET / against bench/ceiling.py: the framework-free ceiling.
dofile(os.getenv("BENCH_WRK_DIR") .. "/common.lua")

function request()
  return wrk.format("GET", "/")
end
