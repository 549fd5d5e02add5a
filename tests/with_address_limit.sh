#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# tests/with_address_limit.sh KIB COMMAND...: runs COMMAND with its address space limited to KIB KiB (ulimit -v), as
# a user or a batch system may limit a program's: the library's tables must fit or take their smaller forms.
set -euo pipefail
limit=$1
shift
ulimit -v "$limit"
exec "$@"
