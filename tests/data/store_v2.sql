-- A results database of schema version 2, written by moesim at commit 91a5242 (the last
-- version-2 binary, with uncommitted changes outside the store) with `moesim run
-- experiments/regression/recorded.ini --set experiment.routers=topk --set
-- experiment.capacity_factors=1.25 --set experiment.distributions=popularity_instruct --set
-- experiment.tokens=32 --set experiment.batches=1`, dumped by `sqlite3 DB .dump` (which leaves
-- out user_version: set at the end). tests/t_store.sh loads it to check the migration to the
-- current version.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE points (
  id INTEGER PRIMARY KEY,
  spec TEXT NOT NULL,
  router TEXT NOT NULL,
  router_type TEXT NOT NULL,
  router_options TEXT NOT NULL,
  capacity_factor TEXT NOT NULL,
  capacity_factor_value REAL,
  capacity_factor_note TEXT,
  distribution TEXT NOT NULL,
  source TEXT NOT NULL,
  source_params TEXT NOT NULL,
  shape TEXT NOT NULL,
  d INTEGER NOT NULL,
  f INTEGER NOT NULL,
  E INTEGER NOT NULL,
  k INTEGER NOT NULL,
  m INTEGER NOT NULL,
  activation TEXT NOT NULL,
  tokens INTEGER NOT NULL,
  batches INTEGER NOT NULL,
  seed INTEGER NOT NULL,
  error_tokens INTEGER NOT NULL,
  config_key TEXT NOT NULL UNIQUE,
  git_rev TEXT NOT NULL,
  blas_library TEXT NOT NULL,
  blas_core TEXT NOT NULL,
  blas_threads INTEGER NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
  capacity REAL,
  capacity_std REAL,
  num_entries REAL,
  num_entries_std REAL,
  n_tokens REAL,
  n_tokens_std REAL,
  load_imbalance REAL,
  load_imbalance_std REAL,
  kept_load_imbalance REAL,
  kept_load_imbalance_std REAL,
  load_cv REAL,
  load_cv_std REAL,
  assignment_drop_rate REAL,
  assignment_drop_rate_std REAL,
  token_drop_rate REAL,
  token_drop_rate_std REAL,
  importance_cv2 REAL,
  importance_cv2_std REAL,
  aux_loss REAL,
  aux_loss_std REAL,
  z_loss REAL,
  z_loss_std REAL,
  flops_gate REAL,
  flops_gate_std REAL,
  flops_expert_useful REAL,
  flops_expert_useful_std REAL,
  flops_expert_padded REAL,
  flops_expert_padded_std REAL,
  flops_soft_dispatch REAL,
  flops_soft_dispatch_std REAL,
  flops_soft_combine REAL,
  flops_soft_combine_std REAL,
  output_error_dense REAL,
  output_error_dense_std REAL,
  output_error_dropless REAL,
  output_error_dropless_std REAL,
  time_gate_s REAL,
  time_gate_s_std REAL,
  time_route_s REAL,
  time_route_s_std REAL,
  time_dispatch_s REAL,
  time_dispatch_s_std REAL,
  time_experts_s REAL,
  time_experts_s_std REAL,
  time_combine_s REAL,
  time_combine_s_std REAL,
  time_total_s REAL,
  time_total_s_std REAL,
  tokens_per_s REAL,
  gflops_per_s REAL,
  wall_s REAL
) STRICT;
INSERT INTO points VALUES(1,'regression_recorded','topk','topk','k=2 capacity_factor=125/100','1.25',1.25,NULL,'popularity_instruct','trace_mixtral_popularity','layer=0 model=instruct subject=high_school_us_history','e8',32,64,8,2,8,'gelu_tanh',32,1,3,64,'router=topk type=topk opts={k=2 capacity_factor=125/100} cf=1.25 distribution=popularity_instruct source=trace_mixtral_popularity params={layer=0 model=instruct subject=high_school_us_history} shape=e8 d=32 f=64 E=8 k=2 activation=gelu_tanh tokens=32 batches=1 seed=3 error_tokens=64','91a5242ab214-dirty','OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64','Haswell',2,'2026-12-05T05:07:26Z',10.0,NULL,60.0,NULL,32.0,NULL,1.625,NULL,1.3333333333333332593,NULL,0.35903516540862678851,NULL,0.0625,NULL,0.0,NULL,0.14756944444444441977,NULL,1.1301044893896994292,NULL,3.5978411873540355251e-07,NULL,0.0,NULL,491520.0,NULL,655360.0,NULL,0.0,NULL,0.0,NULL,0.14363283638739254843,NULL,0.14364188880179740159,NULL,0.0,NULL,8.7160005932673811912e-06,NULL,3.5007000406039878726e-05,NULL,0.0084567869998863898217,NULL,1.4919996829121373593e-06,NULL,0.008502002000568609219,NULL,3763.8193919337891201,0.057812265860102997339,0.026575736999802757054);
CREATE TABLE expert_loads (
  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,
  expert INTEGER NOT NULL,
  assigned REAL NOT NULL,
  kept REAL NOT NULL,
  importance REAL,
  PRIMARY KEY (point, expert)
) STRICT;
INSERT INTO expert_loads VALUES(1,0,13.0,10.0,6.6666666666666669627);
INSERT INTO expert_loads VALUES(1,1,6.0,6.0,3.0);
INSERT INTO expert_loads VALUES(1,2,6.0,6.0,2.6666666666666665186);
INSERT INTO expert_loads VALUES(1,3,4.0,4.0,2.3333333333333334813);
INSERT INTO expert_loads VALUES(1,4,6.0,6.0,2.6666666666666665186);
INSERT INTO expert_loads VALUES(1,5,11.0,10.0,5.9999999999999991118);
INSERT INTO expert_loads VALUES(1,6,8.0,8.0,4.6666666666666660745);
INSERT INTO expert_loads VALUES(1,7,10.0,10.0,4.0);
CREATE TABLE batches (
  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,
  batch INTEGER NOT NULL,
  capacity REAL,
  num_entries REAL,
  n_tokens REAL,
  load_imbalance REAL,
  kept_load_imbalance REAL,
  load_cv REAL,
  assignment_drop_rate REAL,
  token_drop_rate REAL,
  importance_cv2 REAL,
  aux_loss REAL,
  z_loss REAL,
  flops_gate REAL,
  flops_expert_useful REAL,
  flops_expert_padded REAL,
  flops_soft_dispatch REAL,
  flops_soft_combine REAL,
  output_error_dense REAL,
  output_error_dropless REAL,
  time_gate_s REAL,
  time_route_s REAL,
  time_dispatch_s REAL,
  time_experts_s REAL,
  time_combine_s REAL,
  time_total_s REAL,
  PRIMARY KEY (point, batch)
) STRICT;
INSERT INTO batches VALUES(1,0,10.0,60.0,32.0,1.625,1.3333333333333332593,0.35903516540862678851,0.0625,0.0,0.14756944444444441977,1.1301044893896994292,3.5978411873540355251e-07,0.0,491520.0,655360.0,0.0,0.0,0.14363283638739254843,0.14364188880179740159,0.0,8.7160005932673811912e-06,3.5007000406039878726e-05,0.0084567869998863898217,1.4919996829121373593e-06,0.008502002000568609219);
CREATE TABLE experts_per_token (
  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,
  experts INTEGER NOT NULL,
  tokens INTEGER NOT NULL,
  PRIMARY KEY (point, experts)
) STRICT;
INSERT INTO experts_per_token VALUES(1,0,0);
INSERT INTO experts_per_token VALUES(1,1,4);
INSERT INTO experts_per_token VALUES(1,2,28);
INSERT INTO experts_per_token VALUES(1,3,0);
INSERT INTO experts_per_token VALUES(1,4,0);
INSERT INTO experts_per_token VALUES(1,5,0);
INSERT INTO experts_per_token VALUES(1,6,0);
INSERT INTO experts_per_token VALUES(1,7,0);
INSERT INTO experts_per_token VALUES(1,8,0);
CREATE TABLE ep_ranks (
  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,
  capacity TEXT NOT NULL,       -- 'global': the point's plan; 'per_rank': DeepSpeed's
                                -- capacity per rank from its own tokens
  rank INTEGER NOT NULL,
  ranks INTEGER NOT NULL,
  first_expert INTEGER NOT NULL, experts INTEGER NOT NULL,
  first_token INTEGER NOT NULL, tokens_held INTEGER NOT NULL,
  plan_capacity REAL,           -- slots per expert (per_rank: summed over ranks)
  tokens REAL NOT NULL,         -- entries on the rank's experts per batch
  rows_out REAL, rows_in REAL, rows_local REAL, -- dispatch rows per batch
  bytes_sent REAL, bytes_recv REAL,             -- both all-to-alls, per batch
  a2a_s REAL, expert_s REAL, pack_s REAL,       -- seconds per batch
  claims REAL, dropped REAL,    -- per_rank: its tokens' claims; dropped by its capacity
  PRIMARY KEY (point, capacity, rank)
) STRICT;
CREATE TABLE bench ( run TEXT NOT NULL, git_rev TEXT, blas_library TEXT, blas_core TEXT, blas_threads INTEGER, openblas_coretype TEXT, torch TEXT, quick INTEGER NOT NULL, repeats INTEGER NOT NULL, config TEXT NOT NULL, router TEXT, E INTEGER, k INTEGER, n INTEGER NOT NULL, d INTEGER, f INTEGER, cf REAL, capacity INTEGER, kept INTEGER, metric TEXT NOT NULL, unit TEXT, median REAL, q1 REAL, q3 REAL, min REAL, max REAL, PRIMARY KEY (run, config, n, metric));
CREATE VIEW summary AS SELECT id, router, router_type AS type, capacity_factor AS cf, distribution, shape, E, tokens, batches, seed, round(load_imbalance, 3) AS load_imbalance, round(assignment_drop_rate, 4) AS drop_rate, round(token_drop_rate, 4) AS token_drop_rate, round(output_error_dense, 4) AS error_dense, round(output_error_dropless, 4) AS error_dropless, round(aux_loss, 4) AS aux_loss, CAST(round(tokens_per_s) AS INTEGER) AS tokens_per_s, round(gflops_per_s, 2) AS gflops_per_s FROM points ORDER BY distribution, shape, router, capacity_factor_value, tokens, seed;
CREATE VIEW by_router_cf AS SELECT router, capacity_factor AS cf, distribution, shape, count(*) AS points, round(avg(load_imbalance), 3) AS load_imbalance, round(avg(assignment_drop_rate), 4) AS drop_rate, round(avg(token_drop_rate), 4) AS token_drop_rate, round(avg(output_error_dense), 4) AS error_dense, CAST(round(avg(tokens_per_s)) AS INTEGER) AS tokens_per_s FROM points GROUP BY router, capacity_factor, distribution, shape ORDER BY distribution, shape, router, min(capacity_factor_value);
CREATE VIEW loads AS SELECT p.id AS point, p.router, p.capacity_factor AS cf, p.distribution, p.shape, l.expert, l.assigned, l.kept, round(l.importance, 4) AS importance FROM expert_loads l JOIN points p ON p.id = l.point ORDER BY p.id, l.expert;
CREATE VIEW provenance AS SELECT git_rev, blas_library, blas_core, blas_threads, count(*) AS points, min(created_at) AS first_point, max(created_at) AS last_point FROM points GROUP BY git_rev, blas_library, blas_core, blas_threads;
CREATE VIEW ep_summary AS SELECT p.id AS point, p.router, p.capacity_factor AS cf, p.distribution, p.shape, e.capacity, count(*) AS ranks, round(max(e.tokens) / nullif(avg(e.tokens), 0), 3) AS device_imbalance, CAST(sum(e.bytes_sent) AS INTEGER) AS bytes_sent, round(max(e.a2a_s) * 1e3, 3) AS a2a_ms, round(max(e.expert_s) * 1e3, 3) AS expert_ms, round(CASE e.capacity WHEN 'global' THEN p.assignment_drop_rate ELSE sum(e.dropped) / nullif(sum(e.claims), 0) END, 4) AS drop_rate FROM ep_ranks e JOIN points p ON p.id = e.point GROUP BY e.point, e.capacity ORDER BY e.point, e.capacity;
COMMIT;
PRAGMA user_version = 2;
