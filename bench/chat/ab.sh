#!/usr/bin/env bash
# The chat send bench A/B (kept for older notes): bench/ab.sh with WORKLOAD=chat.
# Usage: bench/chat/ab.sh A_BINARY B_BINARY   (env: ROUNDS=5 DURATION=5 CONNECTIONS=100 SIZE=64)
WORKLOAD=chat exec "$(dirname "$0")/../ab.sh" "$@"
