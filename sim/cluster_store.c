/* cluster_store.c: the cluster model's tables (cluster_store.h). */
#include "cluster_store.h"

#include "placement.h"

const char moe_cluster_store_sql[] =
    "CREATE TABLE IF NOT EXISTS cluster_points (\n"
    "  point INTEGER PRIMARY KEY REFERENCES points(id) ON DELETE CASCADE,\n"
    "  cluster TEXT NOT NULL, placement TEXT NOT NULL,\n"
    "  redundant_experts INTEGER NOT NULL, expert_groups INTEGER NOT NULL,\n"
    "  warmup_batches INTEGER NOT NULL, measured_batches INTEGER NOT NULL,\n"
    "  devices INTEGER NOT NULL, nodes INTEGER NOT NULL,\n"
    "  device_tflops REAL,           -- the rate used (the topology's or measured)\n"
    "  balancedness REAL,            -- mean/max expert rows over devices (vLLM)\n"
    "  nodes_per_token REAL,\n"
    "  t_dispatch_s REAL, t_experts_s REAL, t_combine_s REAL, -- slowest device per phase\n"
    "  t_step_s REAL,                -- their sum\n"
    "  model_s REAL                  -- wall seconds of the cluster model per batch\n"
    ") STRICT;\n"
    "CREATE TABLE IF NOT EXISTS devices (\n"
    "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
    "  device INTEGER NOT NULL, node INTEGER NOT NULL,\n"
    "  tokens_in REAL, rows REAL,    -- tokens received, expert rows computed\n"
    "  bytes_intra REAL, bytes_inter REAL, -- sent + received in dispatch\n"
    "  t_dispatch_s REAL, t_experts_s REAL, t_combine_s REAL,\n"
    "  PRIMARY KEY (point, device)\n"
    ") STRICT;\n"
    "CREATE TABLE IF NOT EXISTS nodes_per_token (\n"
    "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
    "  nodes INTEGER NOT NULL, tokens REAL NOT NULL,\n"
    "  PRIMARY KEY (point, nodes)\n"
    ") STRICT;\n"
    "CREATE TABLE IF NOT EXISTS node_traffic (\n"
    "  point INTEGER NOT NULL REFERENCES points(id) ON DELETE CASCADE,\n"
    "  src_node INTEGER NOT NULL, dst_node INTEGER NOT NULL, bytes REAL NOT NULL,\n"
    "  PRIMARY KEY (point, src_node, dst_node)\n"
    ") STRICT;\n";

static int fail(sqlite3 *db, const char *path, const char *what)
{
    return moe_fail(MOE_EDB, NULL, "%s: %s (%s)", what, sqlite3_errmsg(db), path);
}

/* Prepare sql, bind n doubles (then text at the positions given by the caller) and run. */
static int exec_row(sqlite3 *db, const char *path, const char *sql, sqlite3_int64 id,
                    const double *v, int n)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        return fail(db, path, "cannot insert cluster rows");
    int ok = sqlite3_bind_int64(q, 1, id) == SQLITE_OK;
    for (int i = 0; i < n && ok; i++)
        ok = (v[i] == v[i] ? sqlite3_bind_double(q, i + 2, v[i]) : sqlite3_bind_null(q, i + 2)) ==
             SQLITE_OK;
    ok = ok && sqlite3_step(q) == SQLITE_DONE;
    sqlite3_finalize(q);
    return ok ? MOE_OK : fail(db, path, "cannot insert cluster rows");
}

static int put_point(sqlite3 *db, const char *path, sqlite3_int64 id,
                     const moe_cluster_result *r)
{
    sqlite3_stmt *q = NULL;
    const char *sql = "INSERT INTO cluster_points VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK)
        return fail(db, path, "cannot insert the cluster point");
    const double v[] = {r->tflops, r->balancedness, r->nodes_per_token, r->t_dispatch_max,
                        r->t_experts_max, r->t_combine_max, r->t_step, r->model_s};
    int ok = sqlite3_bind_int64(q, 1, id) == SQLITE_OK &&
             sqlite3_bind_text(q, 2, r->cluster, -1, SQLITE_TRANSIENT) == SQLITE_OK &&
             sqlite3_bind_text(q, 3, moe_placement_kind_name(r->placement), -1,
                               SQLITE_STATIC) == SQLITE_OK &&
             sqlite3_bind_int(q, 4, r->redundant) == SQLITE_OK &&
             sqlite3_bind_int(q, 5, r->groups) == SQLITE_OK &&
             sqlite3_bind_int(q, 6, r->warmup) == SQLITE_OK &&
             sqlite3_bind_int(q, 7, r->measured_batches) == SQLITE_OK &&
             sqlite3_bind_int(q, 8, r->D) == SQLITE_OK && sqlite3_bind_int(q, 9, r->N) == SQLITE_OK;
    for (int i = 0; i < 8 && ok; i++)
        ok = sqlite3_bind_double(q, 10 + i, v[i]) == SQLITE_OK;
    ok = ok && sqlite3_step(q) == SQLITE_DONE;
    sqlite3_finalize(q);
    return ok ? MOE_OK : fail(db, path, "cannot insert the cluster point");
}

int moe_cluster_store_put(sqlite3 *db, const char *path, sqlite3_int64 id,
                          const moe_cluster_result *r)
{
    int rc = put_point(db, path, id, r);
    const int dpn = r->D / r->N;
    for (int d = 0; d < r->D && !rc; d++) {
        const double v[] = {d, d / dpn, r->tokens_in[d], r->rows[d], r->bytes_intra[d],
                            r->bytes_inter[d], r->t_dispatch[d], r->t_experts[d],
                            r->t_combine[d]};
        rc = exec_row(db, path, "INSERT INTO devices VALUES (?,?,?,?,?,?,?,?,?,?)", id, v, 9);
    }
    for (int j = 0; j <= r->N && !rc; j++) {
        const double v[] = {j, r->nodes_hist[j]};
        rc = exec_row(db, path, "INSERT INTO nodes_per_token VALUES (?,?,?)", id, v, 2);
    }
    for (int a = 0; a < r->N && !rc; a++)
        for (int b = 0; b < r->N && !rc; b++) {
            const double v[] = {a, b, r->node_bytes[a * r->N + b]};
            rc = exec_row(db, path, "INSERT INTO node_traffic VALUES (?,?,?,?)", id, v, 3);
        }
    return rc;
}
