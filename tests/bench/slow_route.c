/* slow_route.c: the gate and the route phase of single routers on one batch of the routing-only
 * sweep's source (zipf_ids, vocab 32000, s = 1.1, d = 64, seed 1), capacity factor 1.25, with
 * wall and CPU time and a checksum of each plan (entries, loads, importance, aux loss, capacity)
 * so that two builds can be compared for the same plan bits.
 *   slow_route N E THREADS ROUTER[:k]...     (k defaults to the router type's)
 * `make bench-slow-route` runs it on 2^20 tokens, E = 256, 2 threads. */
#include "gate.h"
#include "moe.h"
#include "source.h"
#include "../routers/par.h"

#include <gsl/gsl_rng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* FNV-1a over bytes */
static unsigned long long fnv(unsigned long long h, const void *p, size_t len)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < len; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static unsigned long long plan_hash(const moe_plan *p, int E)
{
    unsigned long long h = 1469598103934665603ull;
    for (size_t i = 0; i < p->n_entries; i++) {
        const moe_entry *x = &p->entries[i];
        h = fnv(h, &x->token, sizeof x->token);
        h = fnv(h, &x->expert, sizeof x->expert);
        h = fnv(h, &x->slot, sizeof x->slot);
        h = fnv(h, &x->dispatch_w, sizeof x->dispatch_w);
        h = fnv(h, &x->combine_w, sizeof x->combine_w);
    }
    h = fnv(h, p->assigned_load, (size_t)E * sizeof *p->assigned_load);
    h = fnv(h, p->importance, (size_t)E * sizeof *p->importance);
    h = fnv(h, &p->aux_loss, sizeof p->aux_loss);
    h = fnv(h, &p->capacity, sizeof p->capacity);
    return fnv(h, &p->n_claims, sizeof p->n_claims);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: slow_route N E THREADS ROUTER[:k]...\n");
        return 2;
    }
    const int n = atoi(argv[1]), E = atoi(argv[2]), th = atoi(argv[3]), d = 64;
    moe_par_set_threads(th);
    const moe_kv kv[] = {{"vocab", "32000", "bench", 0, NULL}, {"zipf_s", "1.1", "bench", 0, NULL}};
    moe_source *src = NULL;
    moe_batch b;
    if (moe_source_open("zipf_ids", kv, 2, n, d, E, 1, &src) || moe_source_batch(src, 0, &b)) {
        fprintf(stderr, "source: %s\n", moe_errmsg());
        return 1;
    }
    double *lg = malloc((size_t)n * E * sizeof *lg);
    if (!lg)
        return 1;
    for (int rep = 0; rep < 2; rep++) { /* the first call also faults the pages in */
        double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        moe_gate_logits(b.x, (size_t)n, (size_t)d, moe_source_gate(src), (size_t)E, lg, th);
        double w1 = clock_s(CLOCK_MONOTONIC), c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        printf("gate%s n=%d d=%d E=%d threads=%d: wall %.3f s cpu %.3f s hash %016llx\n",
               rep ? "" : "(first)", n, d, E, th, w1 - w0, c1 - c0,
               fnv(1469598103934665603ull, lg, (size_t)n * E * sizeof *lg));
    }
    moe_plan *p = moe_plan_alloc(n, E, (size_t)n * 2);
    for (int a = 4; a < argc; a++) {
        char name[64];
        snprintf(name, sizeof name, "%s", argv[a]);
        char *colon = strchr(name, ':');
        moe_route_opts o;
        moe_route_opts_default(&o);
        if (colon)
            *colon = 0, o.k = atoi(colon + 1);
        o.cf_set = 1, o.cf_num = 5, o.cf_den = 4;
        moe_router *r = NULL;
        gsl_rng *rng = moe_rng_alloc(1, 0);
        moe_route_in in = {n, E, lg, b.ids, NULL, rng, NULL, NULL, 0, NULL, NULL};
        if (moe_router_alloc(moe_router_find(name), &o, n, E, &r)) {
            fprintf(stderr, "%s: %s\n", name, moe_errmsg());
            return 1;
        }
        double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        int rc = moe_router_route(r, &in, p);
        double w1 = clock_s(CLOCK_MONOTONIC), c1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        if (rc) {
            fprintf(stderr, "%s: %s\n", name, moe_errmsg());
            return 1;
        }
        printf("%-14s k=%d: wall %7.3f s cpu %7.3f s entries %zu hash %016llx\n", argv[a], o.k,
               w1 - w0, c1 - c0, p->n_entries, plan_hash(p, E));
        fflush(stdout);
        moe_router_free(r);
        gsl_rng_free(rng);
    }
    moe_plan_free(p);
    free(lg);
    moe_source_close(src);
    return 0;
}
