#!/bin/sh
# t_output_safety.sh: every file moesim writes is safe against what it finds at the output path
# and in the names it is given (sim/outfile.c, sim/plot.c):
#   - a symlink planted at the old predictable temporary name "<path>.tmp.<pid>" is not written
#     through (temporaries are mkstemp names); the output keeps the usual mode (0666 & ~umask);
#   - an output path that is a symlink, FIFO, device node or folder is refused with one error
#     line and left as it was; so is an output that is an input of the same command (--plan =
#     --logits, a hard link of it, compare --record DB DB);
#   - `moesim plot --out` names starting with '|' or '<' are folders, not shell commands for
#     gnuplot; a newline in a spec file name (and so in the database and chart folder names)
#     gives the usual charts with one-line data file headers; a spec whose file name gives the
#     experiment name ".." is refused (it used to draw into plots/);
#   - a plot interrupted by SIGTERM leaves no temporary file.
# Prints "t_output_safety: N passed, N failed[, N skipped]" last.
NAME=t_output_safety
. tests/lib.sh
make_tmp
G=$REPO/tests/fixtures/errors/good.npy
export MOESIM_PLOTS=$REPO/plots
cd "$tmp" || exit 1
umask 022

# expect_error DESC MESSAGE CMD...: exit 1 and exactly the one line "moesim: error: MESSAGE"
expect_error() {
    desc=$1; msg=$2; shift 2
    "$@" >"$tmp/stdout" 2>"$tmp/stderr"
    rc=$?
    same "$desc: exit" "$rc" 1
    same "$desc: message" "$(grep '^moesim: error:' "$tmp/stderr")" "moesim: error: $msg"
}
route() { "$MOESIM" route --router topk --logits "$G" "$@"; }

# ---- the temporary file: a planted symlink at the old predictable name is not followed ----
echo keep >victim
sh -c 'ln -s victim p.csv.tmp.$$; exec "$0" route --router topk --logits "$1" --plan p.csv' \
    "$MOESIM" "$G" 2>"$tmp/stderr"
same "planted temp symlink: victim untouched" "$(cat victim)" keep
check "planted temp symlink: the plan is a regular file" test -f p.csv -a ! -h p.csv
same "planted temp symlink: plan header" "$(head -1 p.csv)" "token,expert,slot,dispatch_weight,combine_weight"
same "output mode 0666 & ~umask" "$(stat -c %a p.csv)" 644
same "no temporary left" "$(find . -name '*.tmp.*' ! -type l)" ""

# ---- output paths that are not regular files ----
ln -s victim link.csv
expect_error "symlink output" "cannot write plan: the path is a symbolic link (link.csv)" \
    route --plan link.csv
check "symlink output: still a symlink to the victim" test -h link.csv
same "symlink output: victim untouched" "$(cat victim)" keep
mkfifo fifo.csv
expect_error "FIFO output" "cannot write plan: the path is a FIFO (fifo.csv)" route --plan fifo.csv
check "FIFO output: still a FIFO" test -p fifo.csv
expect_error "metrics into a FIFO" "cannot write metrics: the path is a FIFO (fifo.csv)" \
    route --plan m.csv --metrics fifo.csv
check "metrics into a FIFO: the plan written first is taken back" test ! -e m.csv
if mknod null.csv c 1 3 2>/dev/null; then
    expect_error "device output" "cannot write plan: the path is a character device (null.csv)" \
        route --plan null.csv
    check "device output: still a device" test -c null.csv
else
    skip 3 "cannot create a device node here (mknod needs root)"
fi
mkdir adir
expect_error "folder output" "cannot write plan: the path is a folder (adir)" route --plan adir
check "folder output: still a folder" test -d adir

# ---- an output that is an input ----
cp "$G" in.npy
sum=$(cksum <in.npy)
expect_error "--plan = --logits" "cannot write plan over an input of this command (in.npy)" \
    "$MOESIM" route --router topk --logits in.npy --plan in.npy
ln in.npy hard.npy
expect_error "--metrics = a hard link of --logits" \
    "cannot write metrics over an input of this command (hard.npy)" \
    "$MOESIM" route --router topk --logits in.npy --plan q.csv --metrics hard.npy
same "input unchanged" "$(cksum <in.npy)" "$sum"
check "no plan left" test ! -e q.csv
tiny_spec s.ini s "topk" g c
"$MOESIM" run s.ini --db s.db --no-plots >/dev/null 2>&1
dsum=$(cksum <s.db)
expect_error "compare --record DB DB" "cannot write recorded metrics over an input of this command (s.db)" \
    "$MOESIM" compare --record s.db s.db
same "database unchanged" "$(cksum <s.db)" "$dsum"

# ---- names given to gnuplot ----
for out in '|touch PWNED;x' '<touch PWNED;x'; do
    "$MOESIM" plot s.db --out "$out" >"$tmp/stdout" 2>"$tmp/stderr"
    same "plot --out '$out': exit" $? 0
    check "plot --out '$out': no command ran" test ! -e PWNED
    check "plot --out '$out': charts in a folder of that name" test -s "$out/drop_rate.svg" -a -s "$out/drop_rate.png"
done
nl='
'
mkdir plots
tiny_spec "a${nl}b.ini" x "topk" g c
sed -i '/^name = /d' "a${nl}b.ini" # the name comes from the file name
"$MOESIM" run "a${nl}b.ini" >"$tmp/stdout" 2>"$tmp/stderr"
same "newline in the spec file name: exit" $? 0
n=$(ls "plots/out/a${nl}b/" 2>/dev/null | grep -c '\.svg$')
same "newline in the spec file name: charts drawn" "$n" 6
same "newline in the spec file name: one-line data header" \
    "$(sed -n 1p "plots/out/a${nl}b/drop_rate.dat" | cut -c1-26)" '# plots/out/a\nb/drop_rate'
# header: path, blocks, columns, query, configuration, swept capacity factors (sim/plot.c)
same "newline in the spec file name: the header is 6 comment lines" \
    "$(grep -c '^#' "plots/out/a${nl}b/drop_rate.dat")" 6
tiny_spec ...ini x "topk" g c
sed -i '/^name = /d' ...ini
before=$(find plots | sort)
expect_error "spec file name gives '..'" "no experiment name: the file name gives '..' (...ini)" \
    "$MOESIM" run ...ini
same "spec file name gives '..': nothing drawn" "$(find plots | sort)" "$before"
check "spec file name gives '..': no database" test ! -e "results/...db"

# ---- an interrupted plot leaves no temporary ----
mkdir fakebin
cat >fakebin/gnuplot <<'GP'
#!/bin/sh
echo $$ >>"$FAKE_PID"
exec sleep 30
GP
chmod +x fakebin/gnuplot
FAKE_PID=$tmp/gp.pid PATH="$tmp/fakebin:$PATH" "$MOESIM" plot s.db --out intr >/dev/null 2>&1 &
mp=$!
i=0
while [ ! -s gp.pid ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check "interrupted plot: gnuplot started" test -s gp.pid
# A chart's PNG, SVG and PDF are drawn by three gnuplots at once (sim/plot.c, plot_page), each
# into its own temporary: wait for the third (the fakes never finish), then count them.
i=0
while [ "$(find intr -name '*.tmp.*' | wc -l)" -lt 3 ] && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
same "interrupted plot: a temporary per image while its gnuplot runs" \
    "$(find intr -name '*.tmp.*' | wc -l)" 3
kill -TERM $mp
{ wait $mp; } 2>/dev/null
same "interrupted plot: died of SIGTERM" $? 143
kill $(cat gp.pid) 2>/dev/null
same "interrupted plot: no temporary left" "$(find intr -name '*.tmp.*')" ""
finish
