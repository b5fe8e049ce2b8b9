#!/bin/bash
# Regenerate datasets/proxy.db on this machine (about 40 minutes on a busy 2-core host; see datasets/README.md).
# Run from the repository root. Every step is resumable: if one is killed, run the script again.
set -euo pipefail
export OMP_WAIT_POLICY=PASSIVE   # OpenMP workers sleep at barriers instead of spinning (the machine is shared)
WORK=${WORK:-/tmp/perfpredict-proxy}
mkdir -p "$WORK"
S="$WORK/proxy.db"
PP=.venv/bin/perfpredict

$PP profile layers --store "$S" --threads 1,2 --n-configs 1000 --n-variants-per-family 5 \
    --resolutions 96,128 --seed 0 --time-cap-s 0.025 --stop-after 20400 --max-minutes 34 --json > "$WORK/layers.json"
$PP profile models --store "$S" --threads 1,2 --n-variants-per-family 5 --plans-per-model 12 \
    --resolutions 96,128 --seed 0 --stop-after 1560 --max-minutes 24 --json > "$WORK/models.json"
$PP profile noise --store "$S" --sample 300 --seed 0 --json > "$WORK/noise.json"

# compact copy (WAL checkpointed, VACUUMed) plus the skip log
.venv/bin/python - "$S" datasets/proxy.db <<'EOF'
import os, sqlite3, sys
src, dst = sys.argv[1], sys.argv[2]
if os.path.exists(dst):
    os.remove(dst)
c = sqlite3.connect(src)
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.execute("VACUUM INTO ?", (dst,))
c.close()
EOF
cp "$S.skips.jsonl" datasets/proxy.db.skips.jsonl
$PP dataset info datasets/proxy.db
