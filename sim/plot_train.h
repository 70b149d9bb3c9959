/* plot_train.h: the charts of training runs (tables steps, step_loads and train_points of the
 * results database), drawn by sim/plot.c like its other charts, only when the database has
 * `steps` rows. Every query returns plot.c's 7 layout columns (panel column = distribution,
 * with its shape when several; panel row 1, or the series for the heatmap; series = the router,
 * plus the training settings that differ between the database's training points: aux weight,
 * z weight, lr, optimizer, trainable, tokens), then its data columns, means over seeds:
 *   train_loss     vs step: training loss, held-out loss, aux loss, z-loss
 *   train_balance  vs step: load imbalance, assignment and token drop rates, dead experts
 *   train_loads    heatmap: per (step, expert) the expert's share of the kept load since the
 *                  previous eval row (step_loads.load / their sum over the experts)
 *   train_routing  vs step: specialisation (NMI), routing fluctuation, gate entropy
 *   train_final    vs capacity factor: the last row's held-out loss, and the useful expert
 *                  FLOPs per token of the last eval window (kept entries per token, from
 *                  step_loads, times 4 d f, 6 d f for SwiGLU), which shows whether the routers
 *                  compared spend equal useful FLOPs
 * The curves over steps (and the heatmap) show each series at the capacity factor nearest CF
 * (a string literal; routers without a capacity factor: their one point).
 */
#ifndef MOE_PLOT_TRAIN_H
#define MOE_PLOT_TRAIN_H

#include <sqlite3.h>

/* 1 when the database has a table steps with at least one row. */
int moe_plot_train_has_rows(sqlite3 *db);

/* Training points (tp: id, distribution, shape, router, cf, v = cf value, tokens, series) with
 * panels (pn) and series (sr) ranked by their first point, and the capacity factor picked per
 * series and panel (pick). */
#define MOE_PLOT_TRAIN_CTE(CF)                                                                    \
    "WITH tv AS (SELECT count(DISTINCT t.aux_weight) > 1 AS a, count(DISTINCT t.z_weight) > 1"  \
    " AS z, count(DISTINCT t.lr) > 1 AS l, count(DISTINCT t.optimizer) > 1 AS o,"               \
    " count(DISTINCT t.trainable) > 1 AS tr, count(DISTINCT p.tokens) > 1 AS n"                 \
    " FROM points p LEFT JOIN train_points t ON t.point = p.id"                                 \
    " WHERE p.id IN (SELECT point FROM steps)),"                                                \
    " tp AS (SELECT p.id, p.distribution, p.shape, p.router, p.capacity_factor AS cf,"          \
    " p.capacity_factor_value AS v, p.tokens, p.d, p.f, p.activation, p.router"                 \
    " || CASE WHEN tv.a THEN printf(' aux %g', t.aux_weight) ELSE '' END"                       \
    " || CASE WHEN tv.z THEN printf(' z %g', t.z_weight) ELSE '' END"                           \
    " || CASE WHEN tv.l THEN printf(' lr %g', t.lr) ELSE '' END"                                \
    " || CASE WHEN tv.o THEN ' ' || t.optimizer ELSE '' END"                                    \
    " || CASE WHEN tv.tr THEN ' train ' || t.trainable ELSE '' END"                             \
    " || CASE WHEN tv.n THEN printf(' T %d', p.tokens) ELSE '' END AS series"                   \
    " FROM points p LEFT JOIN train_points t ON t.point = p.id, tv"                             \
    " WHERE p.id IN (SELECT point FROM steps)),"                                                \
    " pn AS (SELECT distribution, shape, row_number() OVER (ORDER BY min(id)) AS rk,"           \
    " CASE WHEN (SELECT count(DISTINCT shape) FROM tp) > 1"                                     \
    " THEN distribution || ' (' || shape || ')' ELSE distribution END AS label"                 \
    " FROM tp GROUP BY distribution, shape),"                                                   \
    " sr AS (SELECT series, row_number() OVER (ORDER BY min(id)) AS rk FROM tp GROUP BY series),"\
    " pick AS (SELECT distribution, shape, series, cf FROM (SELECT distribution, shape, series,"\
    " cf, row_number() OVER (PARTITION BY distribution, shape, series ORDER BY"                 \
    " abs(coalesce(min(v), " CF ") - " CF "), min(v)) AS n FROM tp"                             \
    " GROUP BY distribution, shape, series, cf) WHERE n = 1),"                                  \
    " tq AS (SELECT tp.* FROM tp JOIN pick USING (distribution, shape, series, cf))"

/* Metrics vs step of the picked points, means over seeds: AGG the means (named m1, m2, ...), SD
 * their standard errors sd / sqrt(n) over the seeds (TRAIN_SE, named e1, e2, ...), OUT the
 * means and CI the half-widths of the 95% confidence intervals, e_i t_{0.975,n-1} with the
 * Student t quantile of the table student_t for the n points of the row (the normal quantile
 * past its last row; NULL for n = 1). */
#define MOE_PLOT_TRAIN_STEP_SQL(CF, AGG, SD, OUT, CI)                                             \
    MOE_PLOT_TRAIN_CTE(CF)                                                                        \
    ", agg AS (SELECT pn.rk AS prk, pn.label AS plabel, sr.rk AS srk, tq.series AS series,"     \
    " tq.distribution AS distribution, tq.shape AS shape, tq.cf AS cf, s.step AS step, " AGG    \
    ", " SD ", count(*) AS n FROM steps s JOIN tq ON tq.id = s.point"                            \
    " JOIN pn USING (distribution, shape) JOIN sr USING (series)"                               \
    " GROUP BY tq.distribution, tq.shape, tq.series, s.step)"                                   \
    " SELECT prk, plabel, 1, '', srk, series, 0, distribution, shape, series, cf, step, " OUT   \
    ", n, " CI " FROM agg LEFT JOIN student_t st ON st.df = agg.n - 1"                          \
    " ORDER BY prk, srk, step"
/* The standard error over seeds of X, as NAME: the sample standard deviation (one pass: the
 * values of a training curve are of order one and their spread over seeds is not below 1e-6 of
 * them, so the cancellation costs at most about 1e-10 of the variance) over sqrt(n). */
#define TRAIN_SE(X, NAME)                                                                         \
    "sqrt(max(0.0, (sum((" X ") * (" X ")) - sum(" X ") * sum(" X ") / count(" X "))"            \
    " / (count(" X ") - 1))) / sqrt(count(" X ")) AS " NAME
#define TRAIN_T "coalesce(st.t975, 1.959963984540054)"

/* The heatmap: a panel per (series, distribution); a cell per (eval row, expert) spanning the
 * steps its loads were summed over, from the previous row's step to its own (step 0: from -1),
 * share = mean over seeds of load / sum of the row's loads. */
#define MOE_PLOT_TRAIN_LOADS_SQL(CF)                                                              \
    MOE_PLOT_TRAIN_CTE(CF)                                                                        \
    ", st AS (SELECT DISTINCT point, step FROM step_loads WHERE point IN (SELECT id FROM tq)),"  \
    " sw AS (SELECT point, step, coalesce(lag(step) OVER w, step - 1) AS xlo, step AS xhi"     \
    " FROM st"                                                                                  \
    " WINDOW w AS (PARTITION BY point ORDER BY step)),"                                         \
    " sh AS (SELECT l.point, l.step, l.expert, l.load, l.load * 1.0 / nullif(sum(l.load) OVER"  \
    " (PARTITION BY l.point, l.step), 0) AS share FROM step_loads l"                            \
    " WHERE l.point IN (SELECT id FROM tq))"                                                    \
    " SELECT pn.rk, pn.label, sr.rk, tq.series, sr.rk, tq.series, 0, tq.distribution, tq.shape,"\
    " tq.series, tq.cf, sh.step, min(sw.xlo), max(sw.xhi), sh.expert, avg(sh.share),"         \
    " avg(sh.load), count(*) FROM sh JOIN sw USING (point, step) JOIN tq ON tq.id = sh.point"    \
    " JOIN pn USING (distribution, shape) JOIN sr USING (series)"                               \
    " GROUP BY tq.distribution, tq.shape, tq.series, sh.step, sh.expert"                        \
    " ORDER BY pn.rk, sr.rk, sh.step, sh.expert"

/* Final values vs capacity factor, every capacity factor (a router without one is drawn flat
 * across the swept range, as plot.c's capacity-factor charts do). */
#define MOE_PLOT_TRAIN_FINAL_SQL                                                                  \
    MOE_PLOT_TRAIN_CTE("1.0")                                                                     \
    ", lastrow AS (SELECT point, max(step) AS step FROM steps GROUP BY point),"                 \
    " prevrow AS (SELECT s.point, max(s.step) AS step FROM steps s JOIN lastrow r"              \
    " ON r.point = s.point AND s.step < r.step GROUP BY s.point),"                              \
    " fin AS (SELECT tp.*, s.heldout_loss, (SELECT sum(l.load) FROM step_loads l WHERE"         \
    " l.point = tp.id AND l.step = r.step) * 1.0 / (tp.tokens * (r.step - coalesce(pr.step,"    \
    " r.step - 1))) * (CASE WHEN tp.activation = 'swiglu' THEN 6 ELSE 4 END) * tp.d * tp.f"     \
    " AS flops FROM tp JOIN lastrow r ON r.point = tp.id LEFT JOIN prevrow pr"                 \
    " ON pr.point = tp.id JOIN steps s ON s.point = tp.id AND s.step = r.step),"               \
    " span AS (SELECT min(v) AS lo, max(v) AS hi FROM tp),"                                     \
    " g AS (SELECT distribution, shape, series, cf, min(v) AS v, avg(heldout_loss) AS loss,"   \
    " avg(flops) AS flops, count(*) AS points FROM fin GROUP BY distribution, shape, series, cf),"\
    " xs AS (SELECT g.*, g.v AS x FROM g WHERE g.v IS NOT NULL"                                 \
    " UNION ALL SELECT g.*, span.lo FROM g, span WHERE g.v IS NULL AND span.lo IS NOT NULL"     \
    " UNION ALL SELECT g.*, span.hi FROM g, span WHERE g.v IS NULL AND span.hi > span.lo)"      \
    " SELECT pn.rk, pn.label, 1, '', sr.rk, xs.series, xs.v IS NULL, xs.distribution, xs.shape,"\
    " xs.series, xs.cf, xs.x, xs.loss, xs.flops, xs.points FROM xs"                             \
    " JOIN pn USING (distribution, shape) JOIN sr USING (series) ORDER BY pn.rk, sr.rk, xs.x"

/* The rows of the chart table (plot_charts.h: name, what, columns, nkey, nmetric, needs_cf,
 * panel_rows, empty, sql, nerr). */
#define MOE_PLOT_TRAIN_CHARTS(CF)                                                                 \
    {"train_loss", "training: task loss (train, held-out), aux loss and z-loss vs step",         \
     "distribution shape series cf step loss heldout_loss aux_loss z_loss points loss_ci95"      \
     " heldout_loss_ci95 aux_loss_ci95 z_loss_ci95", 5, 4, 0, 4, "no training steps",             \
     MOE_PLOT_TRAIN_STEP_SQL(CF, "avg(s.loss) AS m1, avg(s.heldout_loss) AS m2,"                  \
                             " avg(s.aux_loss) AS m3, avg(s.z_loss) AS m4",                       \
                             TRAIN_SE("s.loss", "e1") ", " TRAIN_SE("s.heldout_loss", "e2") ", "  \
                             TRAIN_SE("s.aux_loss", "e3") ", " TRAIN_SE("s.z_loss", "e4"),        \
                             "m1, m2, m3, m4", "e1 * " TRAIN_T ", e2 * " TRAIN_T ", e3 * "        \
                             TRAIN_T ", e4 * " TRAIN_T), 4},                                       \
    {"train_balance", "training: load imbalance, drop rates and dead experts vs step",           \
     "distribution shape series cf step load_imbalance assignment_drop_rate token_drop_rate "     \
     "dead_experts points load_imbalance_ci95 assignment_drop_rate_ci95 token_drop_rate_ci95"    \
     " dead_experts_ci95", 5, 4, 0, 4, "no training steps",                                       \
     MOE_PLOT_TRAIN_STEP_SQL(CF, "avg(s.load_imbalance) AS m1,"                                   \
                             " avg(s.assignment_drop_rate) AS m2,"\
                             " avg(s.token_drop_rate) AS m3, avg(s.dead_experts) AS m4",          \
                             TRAIN_SE("s.load_imbalance", "e1") ", "                              \
                             TRAIN_SE("s.assignment_drop_rate", "e2") ", "                        \
                             TRAIN_SE("s.token_drop_rate", "e3") ", "                             \
                             TRAIN_SE("s.dead_experts", "e4"),                                    \
                             "m1, m2, m3, m4", "e1 * " TRAIN_T ", e2 * " TRAIN_T ", e3 * "        \
                             TRAIN_T ", e4 * " TRAIN_T), 4},                                       \
    {"train_loads", "training: expert load shares over steps (heatmap)",                         \
     "distribution shape series cf step xlo xhi expert share load points", 8, 2, 0, 0,            \
     "no per-expert loads of training steps", MOE_PLOT_TRAIN_LOADS_SQL(CF), 0},                   \
    {"train_routing", "training: specialisation, routing fluctuation and gate entropy vs step",  \
     "distribution shape series cf step specialisation fluctuation gate_entropy points"          \
     " specialisation_ci95 fluctuation_ci95 gate_entropy_ci95", 5, 3, 0, 3, "no training steps",  \
     MOE_PLOT_TRAIN_STEP_SQL(CF, "avg(s.specialisation) AS m1, avg(s.fluctuation) AS m2,"         \
                             " avg(s.gate_entropy) AS m3",                                        \
                             TRAIN_SE("s.specialisation", "e1") ", "                              \
                             TRAIN_SE("s.fluctuation", "e2") ", "                                 \
                             TRAIN_SE("s.gate_entropy", "e3"),                                    \
                             "m1, m2, m3", "e1 * " TRAIN_T ", e2 * " TRAIN_T ", e3 * " TRAIN_T),  \
     3},                                                                                           \
    {"train_final", "training: final held-out loss and useful FLOPs per token vs capacity factor",\
     "distribution shape series cf x heldout_loss useful_flops_per_token points", 5, 2, 1, 2,     \
     "no training points", MOE_PLOT_TRAIN_FINAL_SQL, 0}

#endif
