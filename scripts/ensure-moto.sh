#!/usr/bin/env bash
# Makes sure `moto_server` (an S3-compatible server from PyPI, run by the tests of the files
# store's S3 backend) is installed in .local/venv-moto. Prints nothing when it already is.
set -euo pipefail
SB_SCRIPT=ensure-moto
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$SB_ROOT/.local/venv-moto"
if [[ -x "$VENV/bin/moto_server" ]]; then
    exit 0
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed to install moto (the S3 test server)"
log "installing moto[server] into ${VENV#"$SB_ROOT"/}"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==5.*"
