#!/usr/bin/env sh
# Prints the path of a working Python interpreter of the version the template's runtime uses
# (python3.13), so that .venv and `sam build` match what Lambda runs.
# Looks on PATH first, then under pyenv; a pyenv shim only works with PYENV_VERSION set.
want="${1:-3.13}"
for candidate in "python$want" $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want"*/bin/python"$want" 2>/dev/null | sort -r); do
  path=$(command -v "$candidate" 2>/dev/null) || continue
  if "$path" -c "import sys, venv; assert sys.version.startswith('$want')" >/dev/null 2>&1; then
    echo "$path"; exit 0
  fi
done
for version in $(ls "${PYENV_ROOT:-$HOME/.pyenv}/versions" 2>/dev/null | grep "^$want" | sort -r); do
  path=$(PYENV_VERSION="$version" pyenv which "python$want" 2>/dev/null) || continue
  echo "$path"; exit 0
done
echo "error: Python $want not found. kitehooks runs on Lambda's python$want runtime; install it" >&2
echo "       (e.g. 'pyenv install $want' or your OS package) so that 'python$want' is on PATH." >&2
exit 1
