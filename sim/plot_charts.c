/* plot_charts.c: the chart table of plot_charts.h, one SQL query per chart. */
#include "plot_charts.h"

#include "plot.h"
#include "plot_train.h"
#include "store.h"

#include <sqlite3.h>

#define XSTR(x) STR(x)
#define STR(x) #x

/* Shared by every query: routers (rt) and panels (pn) ranked by their first stored point, so
 * that a router keeps its colour in every chart; the swept capacity factor range (span). */
#define CTE                                                                                        \
    "WITH rt AS (SELECT router, row_number() OVER (ORDER BY min(id)) AS rk FROM points"            \
    " GROUP BY router),"                                                                           \
    " pn AS (SELECT distribution, shape, row_number() OVER (ORDER BY min(id)) AS rk,"              \
    " CASE WHEN (SELECT count(DISTINCT shape) FROM points) > 1"                                    \
    " THEN distribution || ' (' || shape || ')' ELSE distribution END AS label"                    \
    " FROM points GROUP BY distribution, shape),"                                                  \
    " span AS (SELECT min(capacity_factor_value) AS lo, max(capacity_factor_value) AS hi"          \
    " FROM points)"

/* pick: per (distribution, shape, router) the capacity factor nearest MOE_PLOT_LOAD_CF (a router
 * without one: its cf none). */
#define PICK_CF                                                                                    \
    "pick AS (SELECT distribution, shape, router, cf FROM (SELECT distribution, shape,"            \
    " router, capacity_factor AS cf, row_number() OVER (PARTITION BY distribution, shape,"         \
    " router ORDER BY abs(coalesce(min(capacity_factor_value), " XSTR(MOE_PLOT_LOAD_CF)            \
    ") - " XSTR(MOE_PLOT_LOAD_CF) "), min(capacity_factor_value)) AS n FROM points"                \
    " GROUP BY distribution, shape, router, capacity_factor) WHERE n = 1)"

/* Two metrics vs capacity factor, means over the points of each (distribution, shape, router,
 * cf): its seeds (the charts' series are split by every other key that differs, plot_cfg.c).
 * A and B: the metric of one point (SQL expressions over the columns of points), NA and NB
 * their names. After the count of points, the half-widths of the 95% confidence intervals of
 * the two means over the points, t_{0.975,n-1} sd / sqrt(n) (sd the sample standard deviation,
 * two passes; t from the table student_t, the normal quantile past its last row; NULL for
 * n = 1), as the views over seeds compute them (store_stats.c). */
#define CF_QUERY(NA, A, NB, B)                                                                    \
    CTE ", pv AS (SELECT distribution, shape, router, capacity_factor AS cf,"                     \
        " capacity_factor_value AS v, (" A ") AS a, (" B ") AS b FROM points),"                   \
        " g AS (SELECT distribution, shape, router, cf, min(v) AS v, avg(a) AS a, avg(b) AS b,"    \
        " count(a) AS na, count(b) AS nb, count(*) AS points FROM pv"                             \
        " GROUP BY distribution, shape, router, cf),"                                             \
        " ci AS (SELECT g.distribution, g.shape, g.router, g.cf,"                                 \
        " sqrt(sum((pv.a - g.a) * (pv.a - g.a)) / (g.na - 1)) / sqrt(g.na) * coalesce((SELECT"    \
        " t975 FROM student_t WHERE df = g.na - 1), 1.959963984540054) AS ea,"                   \
        " sqrt(sum((pv.b - g.b) * (pv.b - g.b)) / (g.nb - 1)) / sqrt(g.nb) * coalesce((SELECT"    \
        " t975 FROM student_t WHERE df = g.nb - 1), 1.959963984540054) AS eb"                    \
        " FROM g JOIN pv ON pv.distribution = g.distribution AND pv.shape = g.shape"              \
        " AND pv.router = g.router AND pv.cf IS g.cf"                                             \
        " GROUP BY g.distribution, g.shape, g.router, g.cf),"                                     \
        " xs AS (SELECT g.*, g.v AS x FROM g WHERE g.v IS NOT NULL"                                \
        " UNION ALL SELECT g.*, span.lo FROM g, span WHERE g.v IS NULL"                            \
        " UNION ALL SELECT g.*, span.hi FROM g, span WHERE g.v IS NULL AND span.hi > span.lo)"     \
        " SELECT pn.rk, pn.label, 1, '', rt.rk, xs.router, xs.v IS NULL,"                          \
        " xs.distribution, xs.shape, xs.router, xs.cf, xs.x, xs.a AS " NA ", xs.b AS " NB ","      \
        " xs.points, ci.ea, ci.eb"                                                                 \
        " FROM xs JOIN pn USING (distribution, shape) JOIN rt USING (router)"                      \
        " JOIN ci ON ci.distribution = xs.distribution AND ci.shape = xs.shape"                    \
        " AND ci.router = xs.router AND ci.cf IS xs.cf"                                            \
        " ORDER BY pn.rk, rt.rk, xs.x"



/* The experts-per-token histogram of the routers whose router_type is in TYPES (an SQL list):
 * per (distribution, shape, router, cf) the share of tokens that kept each number of experts,
 * up to the largest number the router reached. */
#define EPT_QUERY(TYPES) \
    CTE ", sel AS (SELECT p.distribution, p.shape, p.router, p.capacity_factor AS cf," \
    " min(p.capacity_factor_value) AS v, h.experts, sum(h.tokens) AS tokens" \
    " FROM experts_per_token h JOIN points p ON p.id = h.point" \
    " WHERE p.router_type IN (" TYPES ")" \
    " GROUP BY p.distribution, p.shape, p.router, p.capacity_factor, h.experts)," \
    " top AS (SELECT router, max(experts) AS mx FROM sel WHERE tokens > 0 GROUP BY router)," \
    " cfk AS (SELECT cf, row_number() OVER (ORDER BY min(coalesce(v, 1e308)), cf) AS rk" \
    " FROM sel GROUP BY cf)" \
    " SELECT pn.rk, pn.label, rt.rk, s.router, cfk.rk, s.cf, 0, s.distribution," \
    " s.shape, s.router, s.cf, s.experts, s.tokens * 1.0 / sum(s.tokens) OVER" \
    " (PARTITION BY s.distribution, s.shape, s.router, s.cf), s.tokens" \
    " FROM sel s JOIN top USING (router) JOIN pn USING (distribution, shape)" \
    " JOIN rt USING (router) JOIN cfk USING (cf) WHERE s.experts <= top.mx" \
    " ORDER BY pn.rk, rt.rk, cfk.rk, s.experts"

const moe_plot_chart moe_plot_charts[] = {
    {"drop_rate", "drop rate vs capacity factor",
     "distribution shape router cf x assignment_drop_rate token_drop_rate points"
     " assignment_drop_rate_ci95 token_drop_rate_ci95", 5, 2, 1, 2, "no points",
     CF_QUERY("assignment_drop_rate", "assignment_drop_rate", "token_drop_rate",
              "token_drop_rate"), 2},
    {"load_imbalance", "load imbalance (max/mean) vs capacity factor",
     "distribution shape router cf x load_imbalance kept_load_imbalance points"
     " load_imbalance_ci95 kept_load_imbalance_ci95", 5, 2, 1, 2, "no points",
     CF_QUERY("load_imbalance", "load_imbalance", "kept_load_imbalance",
              "kept_load_imbalance"), 2},
    {"flops_per_token", "FLOPs per token (useful vs capacity-padded) vs capacity factor",
     "distribution shape router cf x useful_flops_per_token padded_flops_per_token points"
     " useful_flops_per_token_ci95 padded_flops_per_token_ci95", 5, 2, 1, 2, "no points",
     CF_QUERY("useful",
              "(flops_gate + flops_expert_useful + flops_soft_dispatch + flops_soft_combine)"
              " / n_tokens", "padded",
              "(flops_gate + flops_expert_padded + flops_soft_dispatch + flops_soft_combine)"
              " / n_tokens"), 2},
    {"output_error", "output error vs capacity factor (vs own dropless output, vs dense mixture)",
     "distribution shape router cf x output_error_dropless output_error_dense points"
     " output_error_dropless_ci95 output_error_dense_ci95", 5, 2, 1, 2, "no points",
     CF_QUERY("output_error_dropless", "output_error_dropless", "output_error_dense",
              "output_error_dense"), 2},
    {"expert_loads", "per-expert loads, sorted, at capacity factor " XSTR(MOE_PLOT_LOAD_CF),
     "distribution shape router cf rank assigned kept capacity points", 5, 3, 0, 0,
     "no per-expert loads",
     CTE ", " PICK_CF ", ranked AS (SELECT p.distribution, p.shape, p.router,"
         " p.capacity_factor AS cf,"
         " p.capacity, l.assigned, l.kept, row_number() OVER (PARTITION BY l.point"
         " ORDER BY l.assigned DESC, l.kept DESC, l.expert) AS rank"
         " FROM expert_loads l JOIN points p ON p.id = l.point JOIN pick"
         " ON pick.distribution = p.distribution AND pick.shape = p.shape"
         " AND pick.router = p.router AND pick.cf = p.capacity_factor)"
         " SELECT pn.rk, pn.label, rt.rk, r.router, rt.rk, r.router, 0, r.distribution, r.shape,"
         " r.router, r.cf, r.rank, avg(r.assigned), avg(r.kept), avg(r.capacity), count(*)"
         " FROM ranked r JOIN pn USING (distribution, shape) JOIN rt USING (router)"
         " GROUP BY r.distribution, r.shape, r.router, r.cf, r.rank"
         " ORDER BY pn.rk, rt.rk, r.rank", 0},
    {"experts_per_token", "experts-per-token histogram (expert_choice, gshard)",
     "distribution shape router cf experts fraction tokens", 5, 1, 0, 0,
     "no expert_choice or gshard points",
     EPT_QUERY("'expert_choice', 'gshard'"), 0},
    {"throughput",
     "throughput per router at the capacity factor nearest " XSTR(MOE_PLOT_LOAD_CF)
     ": median and quartiles over the timed batches (nearest rank)",
     "distribution shape router cf x tokens_per_s tokens_per_s_q1 tokens_per_s_q3 gflops_per_s "
     "gflops_per_s_q1 gflops_per_s_q3 batches",
     5, 6, 0, 2, "no timed batches",
     CTE ", " PICK_CF ", s AS (SELECT p.distribution, p.shape, p.router, p.capacity_factor AS cf,"
         " b.n_tokens / b.time_total_s AS tps, (b.flops_gate + b.flops_expert_useful"
         " + b.flops_soft_dispatch + b.flops_soft_combine) / b.time_total_s * 1e-9 AS gfs"
         " FROM batches b JOIN points p ON p.id = b.point JOIN pick"
         " ON pick.distribution = p.distribution AND pick.shape = p.shape"
         " AND pick.router = p.router AND pick.cf = p.capacity_factor WHERE b.time_total_s > 0),"
         " t AS (SELECT s.*, row_number() OVER (PARTITION BY distribution, shape, router"
         " ORDER BY tps) AS it, row_number() OVER (PARTITION BY distribution, shape, router"
         " ORDER BY gfs) AS ig, count(*) OVER (PARTITION BY distribution, shape, router) AS n"
         " FROM s),"
         " q AS (SELECT distribution, shape, router, cf, n,"
         " avg(CASE WHEN it IN ((n + 1) / 2, (n + 2) / 2) THEN tps END) AS tmed,"
         " min(CASE WHEN 4 * it >= n THEN tps END) AS tq1,"
         " min(CASE WHEN 4 * it >= 3 * n THEN tps END) AS tq3,"
         " avg(CASE WHEN ig IN ((n + 1) / 2, (n + 2) / 2) THEN gfs END) AS gmed,"
         " min(CASE WHEN 4 * ig >= n THEN gfs END) AS gq1,"
         " min(CASE WHEN 4 * ig >= 3 * n THEN gfs END) AS gq3"
         " FROM t GROUP BY distribution, shape, router, cf)"
         " SELECT pn.rk, pn.label, 1, '', rt.rk, q.router, 0, q.distribution, q.shape, q.router,"
         " q.cf, rt.rk, q.tmed, q.tq1, q.tq3, q.gmed, q.gq1, q.gq3, q.n"
         " FROM q JOIN pn USING (distribution, shape) JOIN rt USING (router)"
         " ORDER BY pn.rk, rt.rk", 0},
};
const int moe_plot_ncharts = sizeof moe_plot_charts / sizeof moe_plot_charts[0];

/* The experts-per-token histogram of the variable-k routers: drawn only when the database has
 * topp or relu points. */
const moe_plot_chart moe_plot_dynamic_chart = {
    "experts_per_token_dynamic",
    "experts-per-token histogram of the variable-k routers (topp, relu)",
    "distribution shape router cf experts fraction tokens", 5, 1, 0, 0,
    "no topp or relu points", EPT_QUERY("'topp', 'relu'"), 0};

/* Expert parallelism (table ep_ranks, its query in store.h): per-rank load, bytes and all-to-all
 * vs expert time of an expert-parallel run; drawn after the charts above only when the database
 * has ep_ranks rows. */
const moe_plot_chart moe_plot_ep_chart = {
    "ep_ranks", "expert parallelism per rank (moesim run --expert-parallel)",
    "router cf capacity rank tokens bytes_sent a2a_s expert_s points", 4, 4, 0, 0,
    "no expert-parallel points", MOE_STORE_EP_CHART_SQL(XSTR(MOE_PLOT_LOAD_CF)), 0};

/* Training runs (plot_train.h): drawn only when the database has steps rows. */
const moe_plot_chart moe_plot_train_charts[] = {
    MOE_PLOT_TRAIN_CHARTS(XSTR(MOE_PLOT_LOAD_CF))};
const int moe_plot_ntrain = sizeof moe_plot_train_charts / sizeof moe_plot_train_charts[0];
/* ---- the cluster model (tables cluster_points, devices, node_traffic; docs/cluster.md) ----
 * cp: the cluster points at the capacity factor nearest MOE_PLOT_LOAD_CF (pick), with their
 * placement label (EPLB with its replica count R); pk: placements, cl: topologies and rw:
 * (topology, router) panel rows, each ranked by its first point. A configuration's values are
 * means over its points (distributions, shapes, seeds, token counts), each point already a mean
 * per measured batch. */
#define CLUSTER_CTE                                                                                \
    CTE ", " PICK_CF ", cp AS (SELECT c.*, p.router, CASE WHEN c.placement = 'eplb'"               \
        " THEN 'eplb R=' || c.redundant_experts ELSE c.placement END AS plc"                       \
        " FROM cluster_points c JOIN points p ON p.id = c.point JOIN pick"                         \
        " ON pick.distribution = p.distribution AND pick.shape = p.shape"                          \
        " AND pick.router = p.router AND pick.cf = p.capacity_factor),"                            \
        " pk AS (SELECT plc, row_number() OVER (ORDER BY min(point)) AS rk FROM cp GROUP BY plc),"  \
        " cl AS (SELECT cluster, row_number() OVER (ORDER BY min(point)) AS rk FROM cp"            \
        " GROUP BY cluster),"                                                                      \
        " rw AS (SELECT x.cluster, x.router, row_number() OVER (ORDER BY cl.rk, rt.rk) AS rk,"     \
        " CASE WHEN (SELECT count(DISTINCT router) FROM cp) > 1"                                   \
        " THEN x.cluster || ' / ' || x.router ELSE x.cluster END AS label"                         \
        " FROM (SELECT DISTINCT cluster, router FROM cp) x JOIN cl USING (cluster)"               \
        " JOIN rt USING (router)),"                                                                \
        " cfg AS (SELECT cluster, plc, router, count(*) AS n, avg(balancedness) AS bal"            \
        " FROM cp GROUP BY cluster, plc, router)"

/* The cluster charts: drawn only when the database has cluster_points rows. */
const moe_plot_chart moe_plot_cluster_charts[] = {
    {"cluster_loads",
     "expert rows and tokens received per simulated device, a panel per placement",
     "cluster placement router device node tokens_in rows balancedness points", 5, 3, 0, 0,
     "no cluster points",
     CLUSTER_CTE ", g AS (SELECT cp.cluster, cp.plc, cp.router, d.device, d.node,"
                 " avg(d.tokens_in) AS tokens_in, avg(d.rows) AS rows FROM devices d"
                 " JOIN cp ON cp.point = d.point"
                 " GROUP BY cp.cluster, cp.plc, cp.router, d.device, d.node)"
                 " SELECT pk.rk, g.plc, rw.rk, rw.label, rt.rk, g.router, 0, g.cluster, g.plc,"
                 " g.router, g.device, g.node, g.tokens_in, g.rows, cfg.bal, cfg.n"
                 " FROM g JOIN pk USING (plc) JOIN rw USING (cluster, router)"
                 " JOIN rt USING (router) JOIN cfg USING (cluster, plc, router)"
                 " ORDER BY pk.rk, rw.rk, rt.rk, g.device", 0},
    {"cluster_traffic",
     "dispatch bytes from node to node per batch (diagonal: intra-node forwarding)",
     "cluster placement router src_node dst_node bytes points", 5, 1, 0, 0,
     "no cluster points",
     CLUSTER_CTE ", g AS (SELECT cp.cluster, cp.plc, cp.router, t.src_node, t.dst_node,"
                 " sum(t.bytes) AS bytes FROM node_traffic t JOIN cp ON cp.point = t.point"
                 " GROUP BY cp.cluster, cp.plc, cp.router, t.src_node, t.dst_node)"
                 " SELECT pk.rk, g.plc, rw.rk, rw.label, rt.rk, g.router, 0, g.cluster, g.plc,"
                 " g.router, g.src_node, g.dst_node, g.bytes / cfg.n, cfg.n"
                 " FROM g JOIN pk USING (plc) JOIN rw USING (cluster, router)"
                 " JOIN rt USING (router) JOIN cfg USING (cluster, plc, router)"
                 " ORDER BY pk.rk, rw.rk, rt.rk, g.src_node, g.dst_node", 0},
    {"cluster_step",
     "predicted step time per placement and router: dispatch, experts, combine (slowest device)",
     "cluster placement router x t_dispatch_s t_experts_s t_combine_s t_step_s points", 4, 4, 0,
     0, "no cluster points",
     CLUSTER_CTE ", g AS (SELECT cluster, plc, router, avg(t_dispatch_s) AS td,"
                 " avg(t_experts_s) AS te, avg(t_combine_s) AS tc, avg(t_step_s) AS ts,"
                 " count(*) AS n FROM cp GROUP BY cluster, plc, router),"
                 " px AS (SELECT cluster, plc, row_number() OVER (PARTITION BY cluster"
                 " ORDER BY pk.rk) AS x FROM (SELECT DISTINCT cluster, plc FROM cp)"
                 " JOIN pk USING (plc))"
                 " SELECT cl.rk, g.cluster, 1, '', rt.rk, g.router, 0, g.cluster, g.plc,"
                 " g.router, px.x, g.td, g.te, g.tc, g.ts, g.n"
                 " FROM g JOIN px USING (cluster, plc) JOIN cl USING (cluster)"
                 " JOIN rt USING (router) ORDER BY cl.rk, rt.rk, px.x", 0},
};
const int moe_plot_ncluster = sizeof moe_plot_cluster_charts / sizeof moe_plot_cluster_charts[0];

/* 1 when each of the n queries returns a first row whose first column is non-zero. */
static int all_true(sqlite3 *db, const char *const *sql, int n)
{
    int has = 1;
    for (int i = 0; i < n && has; i++) {
        sqlite3_stmt *q = NULL;
        has = sqlite3_prepare_v2(db, sql[i], -1, &q, NULL) == SQLITE_OK &&
              sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
    }
    return has;
}

int moe_plot_cluster_has_rows(sqlite3 *db)
{
    /* the three tables the cluster charts read, and a row in cluster_points */
    static const char *const sql[] = {
        "SELECT count(*) = 3 FROM sqlite_master WHERE type = 'table'"
        " AND name IN ('cluster_points', 'devices', 'node_traffic')",
        "SELECT EXISTS (SELECT 1 FROM main.cluster_points)"};
    return all_true(db, sql, 2);
}

int moe_plot_dynamic_has_rows(sqlite3 *db)
{
    static const char *const sql[] = {
        "SELECT EXISTS (SELECT 1 FROM main.points WHERE router_type IN ('topp', 'relu'))"};
    return all_true(db, sql, 1);
}
