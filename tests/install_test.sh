#!/usr/bin/env bash
# `cmake --install` puts the binary, the man pages and the bash completion
# where a package would, and what it installs works: the man pages render
# without warnings (where man is installed), the completion completes.
# Usage: tests/install_test.sh BUILD_DIR
set -euo pipefail
build=$1
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" > /dev/null
for file in bin/chronomerge share/man/man1/chronomerge.1 share/man/man5/chronomerge.json.5 \
            share/bash-completion/completions/chronomerge; do
  [[ -e $prefix/$file ]] || { echo "not installed: $file" >&2; exit 1; }
done
if command -v man > /dev/null; then
  for page in share/man/man1/chronomerge.1 share/man/man5/chronomerge.json.5; do
    warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$prefix/$page" 2>&1 > /dev/null)
    [[ -z $warnings ]] || { echo "$page: $warnings" >&2; exit 1; }
    LC_ALL=C.UTF-8 MANWIDTH=80 man -l "$prefix/$page" 2> /dev/null | grep -q "chronomerge" ||
      { echo "$page renders empty" >&2; exit 1; }
  done
fi
# shellcheck source=/dev/null
source "$prefix/share/bash-completion/completions/chronomerge"
COMP_WORDS=(chronomerge --key-t); COMP_CWORD=1; _chronomerge
[[ ${COMPREPLY[*]} == "--key-type" ]] || { echo "completion of --key-t: ${COMPREPLY[*]}" >&2; exit 1; }
COMP_WORDS=(chronomerge --key-type r); COMP_CWORD=2; _chronomerge
[[ ${COMPREPLY[*]} == "rfc3339" ]] || { echo "completion of --key-type r: ${COMPREPLY[*]}" >&2; exit 1; }
echo "installed and working under $prefix"
