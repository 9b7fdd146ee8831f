"""Prompt-aware scheduling core: pure Python (numpy, scipy, GLPK via swiglpk), no Django, Celery, webapp or
workers imports.

Modules:
  profiles     latency L(K′, b) from a preset or CSV, batch caps (largest b with L ≤ SLO/2)
  quality      the quality yardstick Q(s, K′) (fixed; reproduces NIRVANA's thresholds at α = 0.9)
  predictor    similarity → K* (NIRVANA's thresholds), capped to the neighbour's cached levels
  demand       per-K*-class demand estimate (fast up, slow down EWMA) + queued backlog
  planner      the Resource Controller's MILP → `Plan` (JSON-serialisable)
  mip_glpk     GLPK's branch and bound for that program (the default solver; HiGHS via scipy is the other)
  interface    the seam with the runner: RequestView, ClusterView, Decision, SchedulerConfig
  dispatch     route-and-batch and the deadline redirect helpers
  policies     prompt_aware, clipper_ha, clipper_ht, nirvana, proteus, oracle (`make_policy`)
  embeddings   the shared MiniLM embedder (`embed_texts`, `embed_prompt_file`)
  cache_model  the simulator's approximate cache (exact nearest neighbour, LCBFU)
  traces       trace loading, merging and rescaling
  simulator    the discrete-event simulator
  metrics      PROTEUS's metrics, the results table and results.json
  plots        PNG plots over time
  simulate     CLI: python -m scheduler.simulate
  bench        CLI: python -m scheduler.bench

The live system uses: SchedulerConfig, make_policy(name, config) → Policy with .plan(now, estimate),
.set_plan(Plan.from_dict(...)), .dispatch(RequestView, ClusterView, now) → Decision,
.on_batch_done(...); DemandEstimator.observe/roll and DemandEstimate.with_backlog. See `interface`.
"""
