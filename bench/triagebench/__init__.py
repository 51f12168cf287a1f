"""The benchmark harness behind bench/run: triage side by side with its peers. See bench/README.md.

    config        paths, the peers' names and labels, the workloads
    sampling      CPU time and RSS of a server's process tree, read from /proc
    processes     every server and wrk started, and stopping them on any exit
    toolchain     running external tools: builds (gcc, go) and version strings
    correctness   an HTTP client and the per-endpoint checks every peer must pass
    peers         building and starting triage, Gin, fasthttp, Flask, nginx + Lua, the ceiling,
                  triage on bench/app, Gin + PostgreSQL
    postgres      the throwaway PostgreSQL server behind Gin + PostgreSQL
    wrk           wrk's Lua scripts, running wrk and parsing what it reports
    measure       one workload run: wrk plus the server's CPU and memory around it
    burst         the 8:00 burst (bench/burst.c) and the count of what is stored after a restart
    malloc_count  allocation calls per request in triage, under malloc_count.so
    runner        one peer through checks, warm-up and workloads; the bursts; the malloc count
    report        tables, targets, machine and versions, the chart, README.md insertion
"""
