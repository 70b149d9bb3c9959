/* test_placement.c: expert placement strategies (sim/placement.c).
 *
 * - EPLB (hierarchical and global policies) equals, slot for slot, the NumPy re-implementation
 *   of deepseek-ai/EPLB eplb.py in tests/ref/eplb_ref.py on the 13 committed cases of
 *   tests/fixtures/eplb/cases.txt (E from 8 to 256, R from 0 to 64, G over N even and not).
 * - The packing and replication blocks on examples worked by hand (the same ones eplb_ref.py
 *   asserts), contiguous, round robin and greedy on hand-worked layouts, and every refused
 *   shape. Run from the repository root (make test does). */
#include "check.h"
#include "moe.h"
#include "placement.h"

#include <stdlib.h>
#include <string.h>

#define FIX "tests/fixtures/eplb/cases.txt"

static int read_ints(FILE *f, const char *tag, int *v, int n)
{
    char word[32];
    if (fscanf(f, "%31s", word) != 1 || strcmp(word, tag) != 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (fscanf(f, "%d", &v[i]) != 1)
            return -1;
    return 0;
}

static void test_fixture(void)
{
    FILE *f = fopen(FIX, "r");
    CHECK(f != NULL, "cannot open %s", FIX);
    if (!f)
        return;
    int cases = 0, E, R, G, N, D;
    char word[32];
    while (fscanf(f, "%31s %d %d %d %d %d", word, &E, &R, &G, &N, &D) == 6) {
        int P = E + R;
        double *load = malloc((size_t)E * sizeof *load);
        int *p2l = malloc((size_t)P * sizeof(int)), *rank = malloc((size_t)P * sizeof(int));
        int *cnt = malloc((size_t)E * sizeof(int));
        int ok = fscanf(f, "%31s", word) == 1 && strcmp(word, "load") == 0;
        for (int e = 0; ok && e < E; e++)
            ok = fscanf(f, "%lf", &load[e]) == 1;
        ok = ok && read_ints(f, "phy2log", p2l, P) == 0 && read_ints(f, "rank", rank, P) == 0 &&
             read_ints(f, "cnt", cnt, E) == 0;
        CHECK(ok, "case %d of %s does not parse", cases, FIX);
        moe_placement *pl = ok ? moe_placement_alloc(MOE_PLACE_EPLB, load, E, R, G, N, D) : NULL;
        CHECK(pl != NULL, "case %d: placement failed: %s", cases, moe_errmsg());
        if (pl) {
            int bad = 0;
            for (int p = 0; p < P; p++)
                bad += pl->phy2log[p] != p2l[p] || pl->phy_rank[p] != rank[p];
            for (int e = 0; e < E; e++)
                bad += pl->log_cnt[e] != cnt[e];
            CHECK(bad == 0, "case %d (E=%d R=%d G=%d N=%d D=%d): %d slots differ from eplb_ref.py",
                  cases, E, R, G, N, D, bad);
            /* log2phy is the inverse: replica r of expert e sits in a slot holding e, rank r */
            int inv_bad = 0;
            for (int e = 0; e < E; e++)
                for (int r = 0; r < pl->max_cnt; r++) {
                    int p = pl->log2phy[e * pl->max_cnt + r];
                    inv_bad += r < pl->log_cnt[e] ? (p < 0 || pl->phy2log[p] != e ||
                                                     pl->phy_rank[p] != r)
                                                  : p != -1;
                }
            CHECK_INT(inv_bad, 0);
        }
        moe_placement_free(pl);
        moe_clear_error();
        free(load);
        free(p2l);
        free(rank);
        free(cnt);
        cases++;
    }
    fclose(f);
    CHECK_INT(cases, 13);
}

static void test_blocks(void)
{
    /* Hand-worked in eplb_ref.py: (7, 5, 4, 1) into 2 packs of 2 -> packs (0, 1, 1, 0). */
    double w[] = {7, 5, 4, 1};
    int idx[4], rk[4];
    moe_placement_pack(w, 4, 2, idx, rk);
    CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 1 && idx[3] == 0, "pack %d %d %d %d", idx[0],
          idx[1], idx[2], idx[3]);
    CHECK(rk[0] == 0 && rk[1] == 0 && rk[2] == 1 && rk[3] == 1, "rank %d %d %d %d", rk[0], rk[1],
          rk[2], rk[3]);
    /* (9, 3) into 4 slots: expert 0 gets the two extra replicas (9 > 3, 4.5 > 3, 3 = 3 first). */
    double w2[] = {9, 3};
    int p2l[4], r2[4], c2[2];
    moe_placement_replicate(w2, 2, 4, p2l, r2, c2);
    CHECK(p2l[2] == 0 && p2l[3] == 0 && r2[2] == 1 && r2[3] == 2 && c2[0] == 3 && c2[1] == 1,
          "replicate %d %d / %d %d / %d %d", p2l[2], p2l[3], r2[2], r2[3], c2[0], c2[1]);
}

static void test_simple(void)
{
    /* 8 experts on 4 devices: contiguous (0 1 | 2 3 | 4 5 | 6 7); round robin puts e on
     * device e mod 4 (0 4 | 1 5 | 2 6 | 3 7). */
    moe_placement *c = moe_placement_alloc(MOE_PLACE_CONTIGUOUS, NULL, 8, 0, 1, 1, 4);
    moe_placement *r = moe_placement_alloc(MOE_PLACE_ROUND_ROBIN, NULL, 8, 0, 1, 1, 4);
    int want_r[] = {0, 4, 1, 5, 2, 6, 3, 7};
    CHECK(c && r, "simple placements failed");
    for (int p = 0; c && r && p < 8; p++) {
        CHECK_INT(c->phy2log[p], p);
        CHECK_INT(r->phy2log[p], want_r[p]);
    }
    moe_placement_free(c);
    moe_placement_free(r);
    /* Greedy, loads (10 9 8 7 1 1 1 1) on 4 devices of 2 experts: 10, 9, 8, 7 open the four
     * devices, then the 1s go to the lightest: device 3 (7) gets expert 4, device 2 (8)
     * expert 5, device 1 (9) expert 6, device 0 (10) expert 7. */
    double load[] = {10, 9, 8, 7, 1, 1, 1, 1};
    moe_placement *g = moe_placement_alloc(MOE_PLACE_GREEDY, load, 8, 0, 1, 1, 4);
    int want_g[] = {0, 7, 1, 6, 2, 5, 3, 4};
    CHECK(g != NULL, "greedy failed");
    for (int p = 0; g && p < 8; p++)
        CHECK_INT(g->phy2log[p], want_g[p]);
    moe_placement_free(g);
}

static void test_refused(void)
{
    double load[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    struct {
        moe_place_kind k;
        const double *l;
        int E, R, G, N, D;
        const char *msg;
    } bad[] = {
        {MOE_PLACE_CONTIGUOUS, NULL, 8, 0, 1, 1, 3, "not a multiple of the devices"},
        {MOE_PLACE_EPLB, load, 8, 2, 1, 1, 4, "not a multiple of the devices"},
        {MOE_PLACE_GREEDY, load, 8, 4, 1, 1, 4, "redundant_experts = 4"},
        {MOE_PLACE_EPLB, load, 8, 0, 1, 3, 4, "not a multiple of the nodes"},
        {MOE_PLACE_EPLB, load, 8, 0, 3, 1, 4, "not a multiple of the groups"},
        {MOE_PLACE_GREEDY, NULL, 8, 0, 1, 1, 4, "needs expert loads"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        moe_clear_error();
        moe_placement *pl = moe_placement_alloc(bad[i].k, bad[i].l, bad[i].E, bad[i].R, bad[i].G,
                                                bad[i].N, bad[i].D);
        CHECK(pl == NULL && strstr(moe_errmsg(), bad[i].msg),
              "refused case %zu: got '%s'", i, moe_errmsg());
        moe_placement_free(pl);
    }
    moe_clear_error();
    CHECK_INT(moe_placement_kind_parse("round_robin"), MOE_PLACE_ROUND_ROBIN);
    CHECK_INT(moe_placement_kind_parse("eplb"), MOE_PLACE_EPLB);
    CHECK_INT(moe_placement_kind_parse("random"), -1);
}

int main(void)
{
    test_fixture();
    test_blocks();
    test_simple();
    test_refused();
    return check_report("test_placement");
}
