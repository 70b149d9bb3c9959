#!/bin/sh
# t_layering.sh: the layout rules of sim/ and routers/, checked with C parsers, not with
# regular expressions over the text:
#   - one batch runs in one place: no file of sim/ or routers/ but sim/pipeline.c refers to
#     moe_router_route or moe_layer_forward (a call, or the function taken as a pointer). The
#     references come from cscope's symbol cross-reference, which skips comments and string
#     literals; the definitions (sim/router.c, sim/layer.c) and the prototypes in headers,
#     located by universal-ctags, are not references;
#   - no function over 150 lines (universal-ctags gives each C function's first and last line;
#     a function it cannot find the end of is reported too) and no file over 1000 lines.
# Each checker first runs on fixtures written here, with the answers worked out by hand from
# their text, so a checker that silently finds nothing fails.
# run.sh: plain only (it reads the sources, not a binary: the sanitizer pass adds nothing)
NAME=t_layering
. tests/lib.sh

CTAGS=
for c in ctags-universal universal-ctags ctags; do
    if command -v "$c" >/dev/null 2>&1 && "$c" --version 2>/dev/null | grep -q 'Universal Ctags'
    then CTAGS=$c; break; fi
done
if [ -z "$CTAGS" ] || ! command -v cscope >/dev/null 2>&1; then
    skip 8 "needs universal-ctags and cscope (make deps-test)"
    finish
fi
make_tmp

# c_tags ARGS...: universal-ctags on C files, headers read as C
c_tags() { "$CTAGS" --languages=C --langmap=C:.c.h -o - "$@"; }

# refs ROOT: "file:line: function: text" for each reference to moe_router_route or
# moe_layer_forward in ROOT/sim and ROOT/routers that is not in sim/pipeline.c, not the
# definition in sim/router.c or sim/layer.c and not a prototype in a header.
refs() {
    (
        cd "$1" || exit 1
        find sim routers -name '*.[ch]' | sort >"$tmp/files"
        cscope -b -k -f "$tmp/xref" -i "$tmp/files" || exit 1
        c_tags --kinds-C=fp --fields=+n -L "$tmp/files" | awk -F'\t' '
            $1 != "moe_router_route" && $1 != "moe_layer_forward" { next }
            ($4 == "f" && ($2 == "sim/router.c" || $2 == "sim/layer.c")) || ($4 == "p" && $2 ~ /\.h$/) {
                for (i = 5; i <= NF; i++) if ($i ~ /^line:/) print $2 ":" substr($i, 6) }' \
            >"$tmp/decl"
        for f in moe_router_route moe_layer_forward; do
            cscope -d -k -f "$tmp/xref" -L -0 "$f" || exit 1
        done | awk 'NR == FNR { d[$0] = 1; next }
            $1 != "sim/pipeline.c" && !(($1 ":" $3) in d) {
                t = $0; sub(/^[^ ]+ [^ ]+ [^ ]+ /, "", t); print $1 ":" $3 ": " $2 ": " t }' \
            "$tmp/decl" -
    )
}

# long_functions ROOT: "file:first-last: name (N lines)" for each C function in ROOT/sim and
# ROOT/routers over 150 lines, and "file:first: name: no end line" where ctags found no end.
long_functions() {
    (
        cd "$1" || exit 1
        find sim routers -name '*.[ch]' | sort | c_tags --kinds-C=f --fields=+ne -L - |
            awk -F'\t' '{
                s = ""; e = ""
                for (i = 4; i <= NF; i++) {
                    if ($i ~ /^line:/) s = substr($i, 6)
                    if ($i ~ /^end:/) e = substr($i, 5)
                }
                if (e == "") print $2 ":" s ": " $1 ": no end line"
                else if (e - s + 1 > 150) print $2 ":" s "-" e ": " $1 " (" e - s + 1 " lines)"
            }'
    )
}

# long_files ROOT: "file: N lines" for each source file (C, headers, Python) in ROOT/sim and
# ROOT/routers over 1000 lines.
long_files() {
    (
        cd "$1" || exit 1
        find sim routers -type f \( -name '*.[ch]' -o -name '*.py' \) | sort | while read -r f; do
            n=$(wc -l <"$f")
            [ "$n" -le 1000 ] || echo "$f: $n lines"
        done
    )
}

# ---- the checkers on fixtures ----
fx=$tmp/fx
mkdir -p "$fx/sim" "$fx/routers"
cat >"$fx/sim/moe.h" <<'EOF'
typedef struct moe_router moe_router;
int moe_router_route(moe_router *r, const void *in, void *plan);
int moe_layer_forward(void *L, const void *w, const void *plan, const float *x, float *y,
                      void *tm);
EOF
cat >"$fx/sim/router.c" <<'EOF'
#include "moe.h"
int moe_router_route(moe_router *r, const void *in, void *plan)
{
    return r && in && plan ? 0 : 1;
}
EOF
cat >"$fx/sim/pipeline.c" <<'EOF'
#include "moe.h"
int run(moe_router *r, void *L)
{
    return moe_router_route(r, 0, 0) || moe_layer_forward(L, 0, 0, 0, 0, 0);
}
EOF
# sim/bad.c: references on lines 7 (a call) and 9 (a pointer); lines 2-4 mention the names
# in comments and line 8 in a string, which are not references
cat >"$fx/sim/bad.c" <<'EOF'
#include "moe.h"
/* moe_router_route(r, in, plan) in a comment
 * moe_layer_forward(L, w, plan, x, y, tm) */
// moe_router_route(r, in, plan);
int bad(moe_router *r)
{
    int rc = moe_router_route(r, 0, 0);
    const char *s = "moe_layer_forward(L)";
    int (*f)(void *, const void *, const void *, const float *, float *, void *) = moe_layer_forward;
    return rc + (s != 0) + (f != 0);
}
EOF
# routers/evil.c: a call split over lines 4-5, reported on line 4 where the name is
cat >"$fx/routers/evil.c" <<'EOF'
#include "../sim/moe.h"
int evil(void *L)
{
    return moe_layer_forward
        (L, 0, 0, 0, 0, 0);
}
EOF
refs "$fx" >"$tmp/fx_refs" 2>"$tmp/fx_refs_err"
same "references found in the fixtures" "$(cut -d: -f1,2 "$tmp/fx_refs" | sort | tr '\n' ' ')" \
    "routers/evil.c:4 sim/bad.c:7 sim/bad.c:9 "

# functions of 150 lines (lines 1-150: ok) and 151 lines (lines 152-302: reported), each with
# an unbalanced brace in a string and in a comment, which a parser does not count
{
    printf 'int ok150(void)\n{\n    const char *s = "}";\n    /* } */\n    int a = 0;\n'
    i=0; while [ $i -lt 143 ]; do echo '    a++;'; i=$((i + 1)); done
    printf '    return a + (s != 0);\n}\n\n'
    printf 'int long151(void)\n{\n    const char *s = "}";\n    /* } */\n    int a = 0;\n'
    i=0; while [ $i -lt 144 ]; do echo '    a++;'; i=$((i + 1)); done
    printf '    return a + (s != 0);\n}\n'
} >"$fx/routers/long.c"
long_functions "$fx" >"$tmp/fx_long" 2>&1
same "long functions found in the fixtures" "$(cat "$tmp/fx_long")" \
    "routers/long.c:152-302: long151 (151 lines)"
# a file of 1001 lines beside one of 1000
i=0; while [ $i -lt 1000 ]; do echo "int v$i;"; i=$((i + 1)); done >"$fx/sim/k1000.c"
{ cat "$fx/sim/k1000.c"; echo 'int v1000;'; } >"$fx/sim/k1001.c"
same "long files found in the fixtures" "$(long_files "$fx")" "sim/k1001.c: 1001 lines"

# ---- the repository ----
refs "$REPO" >"$tmp/refs" 2>"$tmp/refs_err"
check "cscope and ctags ran on the repository: $(head -c 2000 "$tmp/refs_err")" \
    test ! -s "$tmp/refs_err"
same "calls of the router or the layer forward outside sim/pipeline.c" "$(cat "$tmp/refs")" ""
long_functions "$REPO" >"$tmp/long" 2>&1
same "functions over 150 lines in sim/ and routers/" "$(cat "$tmp/long")" ""
same "files over 1000 lines in sim/ and routers/" "$(long_files "$REPO")" ""
# the repository's own functions were seen: pipeline.c defines moe_pipeline_run_batch
n=$(cd "$REPO" && c_tags --kinds-C=f --fields=+ne sim/pipeline.c | grep -c '^moe_pipeline_run_batch	')
same "ctags finds moe_pipeline_run_batch in sim/pipeline.c" "$n" 1
finish
